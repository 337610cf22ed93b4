"""Tokens and legacy keys: issue, list, revoke (SPEC A1, A3, A5, A7, A8).

- An operator issues a token for any account (`amr: admin`). A user creates one with their
  password, and their current TOTP code when login 2FA is on; the token then records that
  2FA was used (`amr: pwd, otp, mfa`). Failures count towards the login throttle.
- Legacy keys (`apikeys`): 190 random bits with prefix and checksum, stored as SHA-256 only,
  marked deprecated; a setting turns off creating new ones.
- Secrets are shown once: sealed to the asker's one-time key in the reply, never stored raw,
  never in an event. Listings show a hint (tokens) or prefix (keys), never enough to use.
- Revocation is broadcast on the changes topic (every api drops its cached verdicts) and
  audited; a user can revoke only their own (the api passes their account id).
- Scopes (A8, `scopes.py`): a new token or key gets only scopes inside the account's grant
  (operators' tokens too), and a key asked for by a token or key (`Request.within`) only
  scopes inside that credential's; anything else is `scope_not_granted`, naming the scopes.
  Checked after the caller's proof (password, TOTP code), so the refusal tells a stranger
  nothing about the grant.
- A token's record keeps the SHA-256 of its text, so only that text verifies (`verifier.py`).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from authbus_authz.core.accounts import AccountCommands, recipient, resolve
from authbus_authz.core.keyring import KeyService
from authbus_authz.core.ports import (
    Account,
    AccountStore,
    ApiKeyRecord,
    ApiKeyStore,
    Clock,
    TokenRecord,
    TokenStore,
)
from authbus_authz.core.results import Done, rejected
from authbus_authz.core.scopes import normalized, ungranted, valid_scopes
from authbus_authz.core.tokens import issued_digest, new_token_id, sign
from authbus_authz.core.verifier import Verifier
from authbus_shared import apikeys
from authbus_shared.contracts.authz import CredentialKind, Outcome
from authbus_shared.contracts.commands import (
    AccountRef,
    KeyInfo,
    KeyList,
    NewKey,
    NewToken,
    SealedLogin,
    TokenInfo,
    TokenList,
)
from authbus_shared.contracts.events import KeyIssued, KeyRevoked, TokenIssued, TokenRevoked
from authbus_shared.sealing import seal_to


class IssuingStore(AccountStore, TokenStore, ApiKeyStore, Protocol):
    """The stores issuing reads and writes."""


@dataclass(frozen=True)
class Request:
    """What every new credential needs: a name, scopes, a lifetime, where the secret goes;
    `within`: the scopes of the token or key that asks (None: an operator, or a password)."""

    name: str
    scopes: tuple[str, ...]
    expires_in: timedelta | None
    reply_key: str
    within: tuple[str, ...] | None = None


@dataclass
class CredentialCommands:
    store: IssuingStore
    keys: KeyService
    verifier: Verifier
    accounts: AccountCommands
    clock: Clock
    issuer: str
    audience: str
    keys_creation_enabled: bool

    # tokens ------------------------------------------------------------------------------
    async def issue_token(self, email: str, request: Request) -> Done:
        """An operator's order: no password asked."""
        account = await resolve(self.store, AccountRef(email=email))
        if account is None:
            return rejected("unknown_account")
        return await self._token(account, request, amr=("admin",))

    async def create_token(self, login: SealedLogin, request: Request, client: str | None) -> Done:
        """Self-service: the password, and a TOTP code when login 2FA is on."""
        check = await self.verifier.check_password(
            login.email, login.password, client, kind=CredentialKind.PASSWORD
        )
        if check.outcome is Outcome.THROTTLED:
            done = rejected("throttled", retry_after_s=check.retry_after_s)
            return Done(done.reply, audit=check.audit)
        if check.account is None:
            return Done(rejected("invalid_credentials").reply, audit=check.audit)
        account = check.account
        amr: tuple[str, ...] = ("pwd",)
        if account.totp_enabled:
            refusal = await self.accounts.second_factor(account, login.totp_code, client)
            if refusal is not None:
                return refusal
            amr = ("pwd", "otp", "mfa")
        return await self._token(account, request, amr=amr)

    async def _token(self, account: Account, request: Request, *, amr: tuple[str, ...]) -> Done:
        to = recipient(request.reply_key)
        if to is None or not valid_scopes(request.scopes):
            return rejected("invalid_input", "reply_key" if to is None else "scopes")
        refusal = _beyond_grant(account, request)
        if refusal is not None:
            return refusal
        now = self.clock()
        record = TokenRecord(
            id=new_token_id(),
            account_id=account.id,
            name=request.name,
            scopes=normalized(request.scopes),
            created_at=now,
            expires_at=now + request.expires_in if request.expires_in is not None else None,
            amr=amr,
        )
        token = sign(
            self.keys.ring,
            issuer=self.issuer,
            audience=self.audience,
            token_id=record.id,
            account_id=account.id,
            scopes=record.scopes,
            issued_at=now,
            expires_at=record.expires_at,
            amr=amr,
        )
        record = dataclasses.replace(record, hint=token[-6:], token_sha256=issued_digest(token))
        await self.store.insert_token(record)
        issued = TokenIssued(
            token_id=record.id,
            account_id=account.id,
            name=record.name,
            scopes=record.scopes,
            expires_at=record.expires_at,
            amr=amr,
        )
        reply = NewToken(token=issued, sealed_token=seal_to(to, token.encode()))
        return Done(reply, audit=(issued,))

    async def list_tokens(self, ref: AccountRef) -> Done:
        account = await resolve(self.store, ref)
        if account is None:
            return rejected("unknown_account")
        tokens = await self.store.tokens_of(account.id)
        return Done(TokenList(tokens=tuple(_token_info(t) for t in tokens)))

    async def revoke_token(self, token_id: str, account_id: str | None = None) -> Done:
        found = await self.store.token_by_id(token_id)
        if found is None or (account_id is not None and found.account_id != account_id):
            return rejected("unknown_token")
        record = await self.store.revoke_token(token_id, self.clock())
        if record is None or record.revoked_at is None:
            return rejected("unknown_token")
        event = TokenRevoked(
            token_id=record.id, account_id=record.account_id, revoked_at=record.revoked_at
        )
        return Done(event, audit=(event,), changes=(event,))

    # legacy keys -------------------------------------------------------------------------
    async def create_key(self, ref: AccountRef, request: Request) -> Done:
        if not self.keys_creation_enabled:
            return rejected("keys_disabled")
        to = recipient(request.reply_key)
        if to is None or not valid_scopes(request.scopes):
            return rejected("invalid_input", "reply_key" if to is None else "scopes")
        account = await resolve(self.store, ref)
        if account is None:
            return rejected("unknown_account")
        refusal = _beyond_grant(account, request)
        if refusal is not None:
            return refusal
        key = apikeys.generate()
        now = self.clock()
        record = ApiKeyRecord(
            id=uuid.uuid4().hex,
            account_id=account.id,
            name=request.name,
            prefix=apikeys.display_prefix(key),
            digest=apikeys.digest(key),
            scopes=normalized(request.scopes),
            created_at=now,
            expires_at=now + request.expires_in if request.expires_in is not None else None,
        )
        await self.store.insert_api_key(record)
        issued = KeyIssued(
            key_id=record.id,
            account_id=account.id,
            name=record.name,
            prefix=record.prefix,
            scopes=record.scopes,
            expires_at=record.expires_at,
        )
        return Done(NewKey(key=issued, sealed_key=seal_to(to, key.encode())), audit=(issued,))

    async def list_keys(self, ref: AccountRef) -> Done:
        account = await resolve(self.store, ref)
        if account is None:
            return rejected("unknown_account")
        keys = await self.store.api_keys_of(account.id)
        return Done(KeyList(keys=tuple(_key_info(k) for k in keys)))

    async def revoke_key(self, key_id: str, account_id: str | None = None) -> Done:
        found = await self.store.api_key_by_id(key_id)
        if found is None or (account_id is not None and found.account_id != account_id):
            return rejected("unknown_key")
        record = await self.store.revoke_api_key(key_id, self.clock())
        if record is None or record.revoked_at is None:
            return rejected("unknown_key")
        event = KeyRevoked(
            key_id=record.id, account_id=record.account_id, revoked_at=record.revoked_at
        )
        return Done(event, audit=(event,), changes=(event,))


def _beyond_grant(account: Account, request: Request) -> Done | None:
    """`scope_not_granted` naming the asked scopes outside the grant (or the asking
    credential's scopes), else None (A8)."""
    missing = ungranted(request.scopes, account.scopes, request.within)
    return rejected("scope_not_granted", " ".join(missing)) if missing else None


def _token_info(t: TokenRecord) -> TokenInfo:
    return TokenInfo(
        token_id=t.id,
        name=t.name,
        scopes=t.scopes,
        created_at=t.created_at,
        expires_at=t.expires_at,
        last_used_at=t.last_used_at,
        revoked_at=t.revoked_at,
        amr=t.amr,
        hint=t.hint,
    )


def _key_info(k: ApiKeyRecord) -> KeyInfo:
    return KeyInfo(
        key_id=k.id,
        name=k.name,
        prefix=k.prefix,
        scopes=k.scopes,
        created_at=k.created_at,
        expires_at=k.expires_at,
        last_used_at=k.last_used_at,
        revoked_at=k.revoked_at,
    )
