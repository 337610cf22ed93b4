"""Events authz publishes (past tense). Three topics carry them:

- `auth.changes.v1` (every api reads it): what can turn a valid credential invalid:
  `TokenRevoked`, `KeyRevoked`, `AccountChanged`; and `ChangesHeartbeat`, which says how
  fresh a reader's view is (A12).
- `auth.audit.v1` (SPEC V1, for any consumer): every event below but `KeyPublished`; keyed by
  account id, so one account's events are in order. Schema: docs/contracts.md.
- `authz.keys.v1` (compacted by kid): `KeyPublished`.

No event ever holds a secret (A9): tokens and keys are named by id, never shown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from authbus_shared.contracts.authz import AccountView, AuthMethod, CredentialKind
from authbus_shared.contracts.envelope import Contract, Frozen, register

AccountChange = Literal[
    "password_changed", "totp_enabled", "totp_disabled", "disabled", "enabled", "scopes_changed"
]


@register
class AccountCreated(Contract):
    TYPE = "authz.AccountCreated"

    account: AccountView


@register
class AccountChanged(Contract):
    """Broadcast: the api drops every cached verdict of the account."""

    TYPE = "authz.AccountChanged"

    account_id: str
    change: AccountChange
    at: datetime


@register
class TokenIssued(Contract):
    TYPE = "authz.TokenIssued"

    token_id: str
    account_id: str
    name: str
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None
    amr: tuple[str, ...] = ()  # how it was obtained: admin, pwd, pwd+otp+mfa (RFC 8176)


@register
class TokenRevoked(Contract):
    TYPE = "authz.TokenRevoked"

    token_id: str
    account_id: str
    revoked_at: datetime


@register
class KeyIssued(Contract):
    TYPE = "authz.KeyIssued"

    key_id: str
    account_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None


@register
class KeyRevoked(Contract):
    TYPE = "authz.KeyRevoked"

    key_id: str
    account_id: str
    revoked_at: datetime


@register
class KeyUsed(Contract):
    """A legacy key was used (one event per key per usage batch)."""

    TYPE = "authz.KeyUsed"

    key_id: str
    account_id: str
    last_used_at: datetime
    uses: int


@register
class LoginFailed(Contract):
    TYPE = "authz.LoginFailed"

    kind: CredentialKind
    reason: Literal["invalid", "needs_token", "disabled", "invalid_code"]
    account_id: str | None = None  # None when the email is unknown
    client: str | None = None


@register
class LoginThrottled(Contract):
    """Lockout started: failed logins are refused until `until` for this scope."""

    TYPE = "authz.LoginThrottled"

    scope: Literal["account", "client", "pair"]
    until: datetime
    failures: int
    account_id: str | None = None
    client: str | None = None


@register
class KeyPublished(Contract):
    """A public key of authz. `use` is `sig` (JWT) or `seal` (sealing); `active` is the one
    in use for its purpose (retired ones still verify or open, for the overlap)."""

    TYPE = "authz.KeyPublished"

    kid: str
    use: Literal["sig", "seal"]
    jwk: dict[str, str]
    created_at: datetime
    active: bool = True


@register
class KeyRotated(Contract):
    TYPE = "authz.KeyRotated"

    use: Literal["sig", "seal"]
    kid: str
    previous_kid: str
    at: datetime


class Use(Frozen):
    credential_id: str
    method: AuthMethod
    account_id: str
    last_used_at: datetime
    count: int = Field(ge=1)


@register
class CredentialsUsed(Contract):
    """api -> authz on `auth.usage.v1`: uses seen since the last report (last-used times are
    recorded in batches, not a write per request)."""

    TYPE = "authz.CredentialsUsed"

    uses: tuple[Use, ...] = Field(max_length=10_000)


@register
class ChangesHeartbeat(Contract):
    """authz -> every api, on each partition of `auth.changes.v1` every few hundred ms: "the
    time is `at` on my clock". A reader that has read it has read every change appended to
    `partition` before it (A12; the api's `core/freshness.py`)."""

    TYPE = "authz.ChangesHeartbeat"

    partition: int = Field(ge=0)
    at: datetime
    instance: str
