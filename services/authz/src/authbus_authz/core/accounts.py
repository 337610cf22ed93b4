"""Account commands: create, change password, disable, login 2FA, scope grants, show
(SPEC A2, A5, A8, A9).

Everything that can turn a valid credential invalid publishes `AccountChanged` on the changes
topic (every api drops the account's cached verdicts) and on the audit topic:
- password changed: `credentials_changed_at` moves, so tokens issued before stop working
  (API keys are separate credentials and stay: revoke them explicitly);
- 2FA switched on: password authentication is refused from now on (`needs_token`);
- disabled: every credential of the account is refused;
- scopes changed (an operator's grant, A8; `scopes.py`): its credentials' effective scopes
  change. The event is published on every grant command, even one that changed nothing (a
  concurrent change may have), and its time is read after the write, so a verdict the api got
  from a read before the write is never cached past it (`VerdictCache` compares `checked_at`).
TOTP codes are good once (the accepted time step is claimed atomically); a wrong code counts
as a failed login for throttling.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from authbus_authz.core import totp
from authbus_authz.core.passwords import (
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    PASSWORD_POLICY,
    Passwords,
)
from authbus_authz.core.ports import Account, AccountStore, Clock, EmailTaken, RunBlocking
from authbus_authz.core.results import Done, rejected
from authbus_authz.core.scopes import normalized, valid_scopes
from authbus_authz.core.throttle import Throttle, subject
from authbus_authz.core.verifier import Verifier, account_view, email_key, throttled_events
from authbus_shared.contracts.authz import CredentialKind, Outcome
from authbus_shared.contracts.commands import (
    MAX_GRANT,
    AccountInfo,
    AccountRef,
    AccountScopes,
    CommandRejected,
    GrantScopes,
    Rejection,
    SealedPasswordChange,
    TotpEnrollment,
)
from authbus_shared.contracts.events import (
    AccountChange,
    AccountChanged,
    AccountCreated,
    LoginFailed,
)
from authbus_shared.sealing import SealError, b64url_decode, seal_to


def valid_email(email: str) -> bool:
    """A plausible address (surrounding whitespace is ignored, as at login)."""
    email = email.strip()
    local, at, domain = email.rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in email))


def valid_password(password: str) -> bool:
    return MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS


def recipient(reply_key: str) -> bytes | None:
    """The asker's one-time public key, or None if it is not one."""
    try:
        raw = b64url_decode(reply_key)
    except SealError:
        return None
    return raw if len(raw) == 32 else None


async def resolve(store: AccountStore, ref: AccountRef) -> Account | None:
    if ref.account_id is not None:
        return await store.account_by_id(ref.account_id)
    return await store.account_by_email(email_key(ref.email or ""))


@dataclass
class AccountCommands:
    store: AccountStore
    verifier: Verifier
    throttle: Throttle
    passwords: Passwords
    run_blocking: RunBlocking
    clock: Clock
    kek: bytes
    default_locale: str
    totp_issuer: str

    async def create_account(self, email: str, password: str, locale: str | None) -> Done:
        if not valid_email(email):
            return rejected("invalid_input", "email")
        if not valid_password(password):
            return rejected("weak_password", PASSWORD_POLICY)
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
            return rejected("email_taken")
        created = AccountCreated(account=account_view(account))
        return Done(created, audit=(created,))

    async def change_password(self, change: SealedPasswordChange, client: str | None) -> Done:
        if not valid_password(change.new):
            return rejected("weak_password", PASSWORD_POLICY)
        check = await self.verifier.check_password(
            change.email, change.current, client, kind=CredentialKind.PASSWORD
        )
        if check.outcome is Outcome.THROTTLED:
            return Done(_refusal("throttled", check.retry_after_s), audit=check.audit)
        if check.account is None:
            return Done(_refusal("invalid_credentials"), audit=check.audit)
        account = check.account
        if account.totp_enabled:
            refusal = await self.second_factor(account, change.totp_code, client)
            if refusal is not None:
                return refusal
        new_hash = await self.run_blocking(lambda: self.passwords.hash(change.new))
        now = self.clock()
        await self.store.update_account(
            account.id, {"password_hash": new_hash, "credentials_changed_at": now}
        )
        return _changed(account.id, "password_changed", now)

    async def set_disabled(self, ref: AccountRef, disabled: bool) -> Done:
        account = await resolve(self.store, ref)
        if account is None:
            return rejected("unknown_account")
        now = self.clock()
        await self.store.update_account(account.id, {"disabled": disabled})
        return _changed(account.id, "disabled" if disabled else "enabled", now)

    async def grant_scopes(self, order: GrantScopes) -> Done:
        """An operator's order (A8): add, remove or replace the scopes the account may give its
        tokens and keys. Replies the grant after the change."""
        refusal = _bad_grant(order)
        if refusal is not None:
            return refusal
        account = await resolve(self.store, order.account)
        if account is None:
            return rejected("unknown_account")
        if len(_granted(account.scopes, order)) > MAX_GRANT:
            return rejected("invalid_input", f"at most {MAX_GRANT} scopes")
        if order.exactly is not None:
            after = await self.store.update_account(
                account.id, {"scopes": normalized(order.exactly)}
            )
        else:
            after = await self.store.change_scopes(
                account.id, normalized(order.add), normalized(order.remove)
            )
        if after is None:  # deleted meanwhile
            return rejected("unknown_account")
        changed = AccountChanged(account_id=account.id, change="scopes_changed", at=self.clock())
        reply = AccountScopes(account_id=account.id, scopes=normalized(after.scopes))
        return Done(reply, audit=(changed,), changes=(changed,))

    async def describe(self, ref: AccountRef) -> Done:
        """An operator's read: the account, its grant and its state (never a secret)."""
        account = await resolve(self.store, ref)
        if account is None:
            return rejected("unknown_account")
        info = AccountInfo(
            account=account_view(account),
            scopes=normalized(account.scopes),
            totp_enabled=account.totp_enabled,
            disabled=account.disabled,
            created_at=account.created_at,
        )
        return Done(info)

    async def enroll_totp(self, ref: AccountRef, reply_key: str) -> Done:
        account = await resolve(self.store, ref)
        to = recipient(reply_key)
        if to is None:
            return rejected("invalid_input", "reply_key")
        if account is None:
            return rejected("unknown_account")
        if account.totp_enabled:
            return rejected("invalid_input", "login 2FA is already on")
        secret = totp.new_secret()
        sealed = totp.seal_secret(self.kek, account.id, secret)
        await self.store.update_account(account.id, {"totp_pending": sealed})
        uri = totp.provisioning_uri(secret, account.email, self.totp_issuer)
        return Done(TotpEnrollment(account_id=account.id, sealed_uri=seal_to(to, uri.encode())))

    async def confirm_totp(self, ref: AccountRef, code: str, client: str | None = None) -> Done:
        account = await resolve(self.store, ref)
        if account is None:
            return rejected("unknown_account")
        if account.totp_pending is None:
            return rejected("totp_not_pending")
        secret = totp.open_secret(self.kek, account.id, account.totp_pending)
        refusal = await self._claim(account, secret, code, client)
        if refusal is not None:
            return refusal
        await self.store.update_account(
            account.id,
            {"totp_enabled": True, "totp_secret": account.totp_pending, "totp_pending": None},
        )
        return _changed(account.id, "totp_enabled", self.clock())

    async def disable_totp(self, ref: AccountRef, code: str, client: str | None = None) -> Done:
        account = await resolve(self.store, ref)
        if account is None:
            return rejected("unknown_account")
        if not account.totp_enabled:
            return rejected("invalid_input", "login 2FA is off")
        refusal = await self.second_factor(account, code, client)
        if refusal is not None:
            return refusal
        await self.store.update_account(
            account.id, {"totp_enabled": False, "totp_secret": None, "totp_pending": None}
        )
        return _changed(account.id, "totp_disabled", self.clock())

    async def second_factor(
        self, account: Account, code: str | None, client: str | None
    ) -> Done | None:
        """None when `code` is a fresh valid code for the account's TOTP secret, else the
        refusal (a wrong code counts as a failed login)."""
        if not code:
            return rejected("totp_required")
        if account.totp_secret is None:
            return rejected("invalid_input", "login 2FA is off")
        secret = totp.open_secret(self.kek, account.id, account.totp_secret)
        return await self._claim(account, secret, code, client)

    async def _claim(
        self, account: Account, secret: str, code: str, client: str | None
    ) -> Done | None:
        now = self.clock()
        who = subject(account.email_key, account.id)
        block = await self.throttle.blocked(who, client, now)
        if block is not None:
            return rejected("throttled", retry_after_s=block.retry_after_s(now))
        step = totp.matching_step(secret, code, now)
        if step is None or not await self.store.claim_totp_step(account.id, step):
            started = await self.throttle.failed(who, client, now)
            failed = LoginFailed(
                kind=CredentialKind.PASSWORD,
                reason="invalid_code",
                account_id=account.id,
                client=client,
            )
            audit = (failed, *throttled_events(started, account, client))
            return Done(_refusal("invalid_code"), audit=audit)
        await self.throttle.succeeded(who, client)  # the second factor is what succeeds
        return None


def _refusal(reason: Rejection, retry_after_s: int | None = None) -> CommandRejected:
    return CommandRejected(reason=reason, retry_after_s=retry_after_s)


def _bad_grant(order: GrantScopes) -> Done | None:
    """The refusal of a grant order that cannot be done as asked, else None."""
    named = (*order.add, *order.remove, *(order.exactly or ()))
    if not valid_scopes(named):
        return rejected("invalid_input", "scopes")
    if order.exactly is not None and (order.add or order.remove):
        return rejected("invalid_input", "exactly replaces the grant: no add or remove with it")
    if set(order.add) & set(order.remove):
        return rejected("invalid_input", "a scope both added and removed")
    return None


def _granted(grant: tuple[str, ...], order: GrantScopes) -> set[str]:
    """The grant an order would leave (to bound its size; the store makes the change)."""
    if order.exactly is not None:
        return set(order.exactly)
    return (set(grant) - set(order.remove)) | set(order.add)


def _changed(account_id: str, change: AccountChange, at: datetime) -> Done:
    event = AccountChanged(account_id=account_id, change=change, at=at)
    return Done(event, audit=(event,), changes=(event,))
