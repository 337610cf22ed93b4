"""Credential checks (SPEC A1-A6, A10): a credential in, a verdict out. A denial is a value.

Algorithm, per credential kind:
- bearer / basic token: the signature and claims (`tokens.check_signature`, which also
  refuses any non-canonical encoding; an unknown kid first reloads the key ring once), then
  the token's record (exists, same account, the very text issued: its SHA-256, or its last 6
  characters for records from before the digest was kept, so the ECDSA (r, n-s) twin of a
  real token is refused; not revoked, not past its expiry), then the account (exists, not
  disabled, token issued after the last credentials change). Basic token also needs the email
  to be the token's account's.
- key (legacy, A3): format and checksum first (a mistyped key costs no lookup), then the
  record by SHA-256 digest (exists, the email's account, not revoked or expired), then the
  account. Valid key verdicts are marked deprecated.
- password: throttled first (`throttle.py`: a blocked attempt is refused before argon2 runs);
  then the account by normalized email and argon2id (or the same work against a dummy hash
  when the email is unknown); a failure counts towards the throttle and is audited; then
  disabled, then login 2FA (`needs_token`, only after a correct password, so the answer
  reveals nothing to someone without it).

Scopes (A8, `scopes.py`): a valid token or key carries its own scopes that are inside the
account's grant as read now; a password carries the whole grant.

Consistency: token, key and account records come through `reads.py`: from authz's record
cache while its view of the changes feed is fresh (`records.py`, whose docstring and ADR 0019
state the bound on a revocation), else from the store. Caching
verdicts is the api's job, bounded by `valid_until` and invalidated by change events. Every
verdict carries `checked_at`, taken before the store is read (for cached records: before they
were read), so it never postdates the state the verdict saw. Passwords always read the store.
Errors: store failures propagate as exceptions (the handler answers `RequestFailed`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from authbus_authz.core.keyring import KeyService
from authbus_authz.core.passwords import MAX_PASSWORD_CHARS, Passwords
from authbus_authz.core.ports import (
    Account,
    AccountStore,
    ApiKeyStore,
    Clock,
    RunBlocking,
    TokenRecord,
    TokenStore,
)
from authbus_authz.core.reads import Reads
from authbus_authz.core.scopes import effective, normalized
from authbus_authz.core.throttle import Block, Throttle, subject
from authbus_authz.core.tokens import Claims, check_signature, issued_digest, unverified_kid
from authbus_shared import apikeys
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialKind,
    CredentialVerified,
    Outcome,
    SealedCredential,
    password_credential_id,
)
from authbus_shared.contracts.envelope import Contract
from authbus_shared.contracts.events import LoginFailed, LoginThrottled


def email_key(email: str) -> str:
    return email.strip().lower()


def account_view(account: Account) -> AccountView:
    return AccountView(id=account.id, email=account.email, locale=account.locale)


@dataclass(frozen=True)
class Checked:
    verdict: CredentialVerified
    audit: tuple[Contract, ...] = ()


@dataclass(frozen=True)
class PasswordCheck:
    """The result of checking an email and password: the account when it is right."""

    outcome: Outcome
    account: Account | None = None
    audit: tuple[Contract, ...] = ()
    retry_after_s: int | None = None


class VerifierStore(AccountStore, TokenStore, ApiKeyStore, Protocol):
    """The stores the verifier reads."""


@dataclass
class Verifier:
    store: VerifierStore
    keys: KeyService
    passwords: Passwords
    throttle: Throttle
    run_blocking: RunBlocking
    clock: Clock
    issuer: str
    audience: str
    reads: Reads | None = field(default=None)  # None: the store, no cache

    def __post_init__(self) -> None:
        self._reads = self.reads or Reads(self.store, self.clock)

    def _denied(self, outcome: Outcome) -> CredentialVerified:
        return CredentialVerified(outcome=outcome, checked_at=self.clock())

    async def verify(self, credential: SealedCredential, client: str | None = None) -> Checked:
        match credential.kind:
            case CredentialKind.BEARER:
                return Checked(await self._token(credential.secret, email=None))
            case CredentialKind.BASIC_TOKEN:
                return Checked(await self._token(credential.secret, email=credential.email or ""))
            case CredentialKind.KEY:
                return Checked(await self._key(credential.email or "", credential.secret))
            case CredentialKind.PASSWORD:
                return await self._password(credential.email or "", credential.secret, client)

    # tokens ------------------------------------------------------------------------------
    async def _token(self, token: str, *, email: str | None) -> CredentialVerified:
        now = self.clock()
        kid = unverified_kid(token)
        if kid is None or not await self.keys.knows(kid):
            return self._denied(Outcome.INVALID)
        claims = check_signature(
            token, self.keys.ring, issuer=self.issuer, audience=self.audience, now=now
        )
        if isinstance(claims, Outcome):
            return self._denied(claims)
        # Both reads at once: the signed claims already name the account.
        (record, token_read), (account, account_read) = await self._reads.token_and_account(
            claims.token_id, claims.account_id
        )
        if (
            record is None
            or record.account_id != claims.account_id
            or not _as_issued(record, token)
        ):
            return self._denied(Outcome.INVALID)
        stale = _lapsed(record.revoked_at, record.expires_at, now)
        if stale is not None:
            return self._denied(stale)
        if account is None or (email is not None and email_key(email) != account.email_key):
            return self._denied(Outcome.INVALID)
        as_of = min(now, token_read, account_read)
        return self._token_verdict(account, record, claims, as_of=as_of)

    def _token_verdict(
        self, account: Account, record: TokenRecord, claims: Claims, *, as_of: datetime
    ) -> CredentialVerified:
        if account.disabled:
            return self._denied(Outcome.DISABLED)
        # The record's creation time, not the JWT's whole-second `iat`: a token made in the
        # same second as (before) a password change must not survive it.
        if record.created_at < account.credentials_changed_at:
            return self._denied(Outcome.REVOKED)
        return CredentialVerified(
            outcome=Outcome.VALID,
            account=account_view(account),
            scopes=effective(claims.scopes, account.scopes),
            method=AuthMethod.TOKEN,
            credential_id=claims.token_id,
            valid_until=claims.expires_at,
            mfa="mfa" in record.amr,
            checked_at=as_of,
        )

    # legacy keys -------------------------------------------------------------------------
    async def _key(self, email: str, key: str) -> CredentialVerified:
        now = self.clock()
        if not apikeys.well_formed(key):
            return self._denied(Outcome.INVALID)
        record, key_read = await self._reads.key(apikeys.digest(key))
        account, account_read = (
            await self._reads.account(record.account_id) if record else (None, now)
        )
        if record is None or account is None or account.email_key != email_key(email):
            return self._denied(Outcome.INVALID)
        stale = _lapsed(record.revoked_at, record.expires_at, now)
        if stale is not None:
            return self._denied(stale)
        if account.disabled:
            return self._denied(Outcome.DISABLED)
        return CredentialVerified(
            outcome=Outcome.VALID,
            account=account_view(account),
            scopes=effective(record.scopes, account.scopes),
            method=AuthMethod.KEY,
            credential_id=record.id,
            valid_until=record.expires_at,
            deprecated=True,
            checked_at=min(now, key_read, account_read),
        )

    # passwords ---------------------------------------------------------------------------
    async def _password(self, email: str, password: str, client: str | None) -> Checked:
        # Stamped before the account is read (argon2 takes a while after): a verdict that read
        # the account before a change must not look newer than the change (VerdictCache).
        read_at = self.clock()
        check = await self.check_password(email, password, client, kind=CredentialKind.PASSWORD)
        account = check.account
        if check.outcome is not Outcome.VALID or account is None:
            verdict = self._denied(check.outcome).model_copy(
                update={"retry_after_s": check.retry_after_s}
            )
            return Checked(verdict, check.audit)
        if account.totp_enabled:
            failed = LoginFailed(
                kind=CredentialKind.PASSWORD,
                reason="needs_token",
                account_id=account.id,
                client=client,
            )
            return Checked(self._denied(Outcome.NEEDS_TOKEN), (failed,))
        verdict = CredentialVerified(
            outcome=Outcome.VALID,
            account=account_view(account),
            scopes=normalized(account.scopes),  # the master credential: the whole grant
            method=AuthMethod.PASSWORD,
            credential_id=password_credential_id(account.id),
            checked_at=read_at,
        )
        return Checked(verdict)

    async def check_password(
        self, email: str, password: str, client: str | None, *, kind: CredentialKind
    ) -> PasswordCheck:
        """Throttle, then argon2id: `valid` with the account, `invalid`, `disabled` or
        `throttled`. Used by every command that takes a password."""
        if not email or len(password) > MAX_PASSWORD_CHARS:
            return PasswordCheck(Outcome.INVALID)
        now = self.clock()
        key = email_key(email)
        account = await self.store.account_by_email(key)
        who = subject(key, account.id if account else None)
        block = await self.throttle.blocked(who, client, now)
        if block is not None:
            return PasswordCheck(Outcome.THROTTLED, retry_after_s=block.retry_after_s(now))
        if account is None:
            await self.run_blocking(lambda: self.passwords.verify_unknown(password))
            right = False
        else:
            stored = account.password_hash
            right = await self.run_blocking(lambda: self.passwords.verify(stored, password))
        if not right:
            started = await self.throttle.failed(who, client, now)
            failed = LoginFailed(
                kind=kind,
                reason="invalid",
                account_id=account.id if account else None,
                client=client,
            )
            return PasswordCheck(
                Outcome.INVALID, audit=(failed, *throttled_events(started, account, client))
            )
        if account is None:  # unreachable: verify_unknown is always False
            return PasswordCheck(Outcome.INVALID)
        if not account.totp_enabled:  # with 2FA, success is the code's (AccountCommands._claim)
            await self.throttle.succeeded(who, client)
        if account.disabled:
            failed = LoginFailed(kind=kind, reason="disabled", account_id=account.id, client=client)
            return PasswordCheck(Outcome.DISABLED, audit=(failed,))
        return PasswordCheck(Outcome.VALID, account=account)


def _as_issued(record: TokenRecord, token: str) -> bool:
    """Byte-exact: `token` is the very text issued (by its recorded SHA-256; records from
    before the digest was kept have only `hint`, the last 6 characters, which are the end of
    the signature's `s`). A valid signature in another spelling is not the issued token."""
    if record.token_sha256:
        return hmac.compare_digest(issued_digest(token).encode(), record.token_sha256.encode())
    return bool(record.hint) and hmac.compare_digest(token[-6:].encode(), record.hint.encode())


def _lapsed(
    revoked_at: datetime | None, expires_at: datetime | None, now: datetime
) -> Outcome | None:
    """`revoked` or `expired` for a credential record that no longer counts, else None."""
    if revoked_at is not None:
        return Outcome.REVOKED
    if expires_at is not None and expires_at <= now:
        return Outcome.EXPIRED
    return None


def throttled_events(
    blocks: list[Block], account: Account | None, client: str | None
) -> list[Contract]:
    """The audit events of the lockouts a failure started (SPEC V1)."""
    return [
        LoginThrottled(
            scope=b.scope,  # type: ignore[arg-type]
            until=b.until,
            failures=b.failures,
            account_id=account.id if account else None,
            client=client if b.scope != "account" else None,
        )
        for b in blocks
    ]
