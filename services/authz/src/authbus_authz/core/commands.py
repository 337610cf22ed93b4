"""Management commands: create an account, issue a token, revoke a token (SPEC A7, G4).

Each returns the reply (a value: done, or rejected and why) and the events to publish: audit
events for the audit topic, change events for the broadcast topic every api reads. The runner
publishes them; this module does no I/O but through the store.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from authbus_authz.core.keys import KeyRing
from authbus_authz.core.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, Passwords
from authbus_authz.core.ports import (
    Account,
    Clock,
    CredentialStore,
    EmailTaken,
    RunBlocking,
    TokenRecord,
)
from authbus_authz.core.tokens import new_token_id, sign
from authbus_authz.core.verifier import account_view, email_key
from authbus_shared.contracts.authz import (
    AccountCreated,
    CommandRejected,
    NewToken,
    TokenIssued,
    TokenRevoked,
)
from authbus_shared.contracts.envelope import Contract
from authbus_shared.sealing import SealError, b64url_decode, seal_to

SCOPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789:._-")


@dataclass(frozen=True)
class Done:
    reply: Contract
    audit: tuple[Contract, ...] = ()
    changes: tuple[Contract, ...] = field(default=())


def valid_email(email: str) -> bool:
    """A plausible address (surrounding whitespace is ignored, as at login)."""
    email = email.strip()
    local, at, domain = email.rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in email))


@dataclass
class Commands:
    store: CredentialStore
    ring: KeyRing
    passwords: Passwords
    run_blocking: RunBlocking
    clock: Clock
    issuer: str
    audience: str
    default_locale: str

    async def create_account(self, email: str, password: str, locale: str | None) -> Done:
        if not valid_email(email):
            return Done(CommandRejected(reason="invalid_input", detail="email"))
        if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
            return Done(CommandRejected(reason="invalid_input", detail="password length"))
        password_hash = await self.run_blocking(lambda: self.passwords.hash(password))
        now = self.clock()
        account = Account(
            id=uuid.uuid4().hex,
            email=email.strip(),
            email_key=email_key(email),
            password_hash=password_hash,
            locale=locale or self.default_locale,
            created_at=now,
            credentials_changed_at=now,
        )
        try:
            await self.store.insert_account(account)
        except EmailTaken:
            return Done(CommandRejected(reason="email_taken"))
        created = AccountCreated(account=account_view(account))
        return Done(created, audit=(created,))

    async def issue_token(
        self,
        email: str,
        *,
        name: str,
        scopes: tuple[str, ...],
        expires_in: timedelta | None,
        reply_key: str,
    ) -> Done:
        if any(not s or not set(s) <= SCOPE_CHARS for s in scopes):
            return Done(CommandRejected(reason="invalid_input", detail="scopes"))
        try:
            recipient = b64url_decode(reply_key)
        except SealError:
            recipient = b""
        if len(recipient) != 32:
            return Done(CommandRejected(reason="invalid_input", detail="reply_key"))
        account = await self.store.account_by_email(email_key(email))
        if account is None:
            return Done(CommandRejected(reason="unknown_account"))
        now = self.clock()
        record = TokenRecord(
            id=new_token_id(),
            account_id=account.id,
            name=name,
            scopes=tuple(sorted(set(scopes))),
            created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
        )
        token = sign(
            self.ring,
            issuer=self.issuer,
            audience=self.audience,
            token_id=record.id,
            account_id=account.id,
            scopes=record.scopes,
            issued_at=now,
            expires_at=record.expires_at,
            amr=("admin",),
        )
        await self.store.insert_token(record)
        issued = TokenIssued(
            token_id=record.id,
            account_id=account.id,
            name=name,
            scopes=record.scopes,
            expires_at=record.expires_at,
        )
        reply = NewToken(token=issued, sealed_token=seal_to(recipient, token.encode()))
        return Done(reply, audit=(issued,))

    async def revoke_token(self, token_id: str) -> Done:
        record = await self.store.revoke_token(token_id, self.clock())
        if record is None or record.revoked_at is None:
            return Done(CommandRejected(reason="unknown_token"))
        event = TokenRevoked(
            token_id=record.id, account_id=record.account_id, revoked_at=record.revoked_at
        )
        return Done(event, audit=(event,), changes=(event,))
