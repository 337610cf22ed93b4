"""Credential checks (SPEC A1-A6): a credential in, a verdict out. A denial is a value.

Algorithm, per credential kind:
- bearer / basic token: the signature and claims (`tokens.check_signature`), then the token's
  record (exists, same account, not revoked, not past its expiry), then the account (exists,
  not disabled, token issued after the last credentials change). Basic token also needs the
  email to be the token's account's.
- password: the account by normalized email; argon2id verify (or the same work against a
  dummy hash when the email is unknown); then disabled, then login 2FA (`needs_token`, only
  after a correct password, so the answer reveals nothing to someone without it).
- key: legacy API keys arrive with issue #3; until then no key exists and the answer is
  `invalid`.

Consistency: reads the store on every call; caching verdicts is the api's job, bounded by
`valid_until` and invalidated by change events.
Errors: store failures propagate as exceptions (the handler answers `RequestFailed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from authbus_authz.core.keys import KeyRing
from authbus_authz.core.passwords import MAX_PASSWORD_CHARS, Passwords
from authbus_authz.core.ports import Account, Clock, CredentialStore, RunBlocking
from authbus_authz.core.tokens import Claims, check_signature
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialKind,
    CredentialVerified,
    Outcome,
    SealedCredential,
)


def email_key(email: str) -> str:
    return email.strip().lower()


def account_view(account: Account) -> AccountView:
    return AccountView(id=account.id, email=account.email, locale=account.locale)


def denied(outcome: Outcome) -> CredentialVerified:
    return CredentialVerified(outcome=outcome)


@dataclass
class Verifier:
    store: CredentialStore
    ring: Callable[[], KeyRing]
    passwords: Passwords
    run_blocking: RunBlocking
    clock: Clock
    issuer: str
    audience: str

    async def verify(self, credential: SealedCredential) -> CredentialVerified:
        match credential.kind:
            case CredentialKind.BEARER:
                return await self._token(credential.secret, email=None)
            case CredentialKind.BASIC_TOKEN:
                return await self._token(credential.secret, email=credential.email or "")
            case CredentialKind.PASSWORD:
                return await self._password(credential.email or "", credential.secret)
            case CredentialKind.KEY:
                return denied(Outcome.INVALID)

    async def _token(self, token: str, *, email: str | None) -> CredentialVerified:
        now = self.clock()
        claims = check_signature(
            token, self.ring(), issuer=self.issuer, audience=self.audience, now=now
        )
        if isinstance(claims, Outcome):
            return denied(claims)
        record = await self.store.token_by_id(claims.token_id)
        if record is None or record.account_id != claims.account_id:
            return denied(Outcome.INVALID)
        if record.revoked_at is not None:
            return denied(Outcome.REVOKED)
        if record.expires_at is not None and record.expires_at <= now:
            return denied(Outcome.EXPIRED)
        account = await self.store.account_by_id(claims.account_id)
        if account is None or (email is not None and email_key(email) != account.email_key):
            return denied(Outcome.INVALID)
        return self._token_verdict(account, claims)

    def _token_verdict(self, account: Account, claims: Claims) -> CredentialVerified:
        if account.disabled:
            return denied(Outcome.DISABLED)
        if claims.issued_at < account.credentials_changed_at.replace(microsecond=0):
            return denied(Outcome.REVOKED)
        return CredentialVerified(
            outcome=Outcome.VALID,
            account=account_view(account),
            scopes=claims.scopes,
            method=AuthMethod.TOKEN,
            credential_id=claims.token_id,
            valid_until=claims.expires_at,
        )

    async def _password(self, email: str, password: str) -> CredentialVerified:
        if not email or len(password) > MAX_PASSWORD_CHARS:
            return denied(Outcome.INVALID)
        account = await self.store.account_by_email(email_key(email))
        if account is None:
            await self.run_blocking(lambda: self.passwords.verify_unknown(password))
            return denied(Outcome.INVALID)
        stored = account.password_hash
        if not await self.run_blocking(lambda: self.passwords.verify(stored, password)):
            return denied(Outcome.INVALID)
        if account.disabled:
            return denied(Outcome.DISABLED)
        if account.totp_enabled:
            return denied(Outcome.NEEDS_TOKEN)
        return CredentialVerified(
            outcome=Outcome.VALID,
            account=account_view(account),
            method=AuthMethod.PASSWORD,
            credential_id=None,
        )
