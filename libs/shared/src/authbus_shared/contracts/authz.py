"""Contracts between authz and its askers (api instances, the admin CLI). Internal: they are
not the public HTTP schemas. Commands are orders, events are in the past tense.

No raw secret ever travels in these messages (SPEC A9): credentials and passwords go sealed to
authz's published sealing key, and a new token comes back sealed to a one-time key of the
asker (`authbus_shared.sealing`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from authbus_shared.contracts.envelope import Contract, Frozen, register


class CredentialKind(StrEnum):
    BEARER = "bearer"  # Authorization: Bearer <token>                     (A1)
    PASSWORD = "password"  # Basic email:password                          (A2)
    KEY = "key"  # Basic email/key:KEY                                     (A3)
    BASIC_TOKEN = "basic_token"  # Basic email/token:TOKEN                 (A4)


class Outcome(StrEnum):
    """A verdict: `valid`, or why not. Denials are values, not errors (STYLE 4)."""

    VALID = "valid"
    INVALID = "invalid"  # unknown, malformed, wrong secret: the api says 401 "invalid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DISABLED = "disabled"
    NEEDS_TOKEN = "needs_token"  # password auth while login 2FA is on (A5)


class AuthMethod(StrEnum):
    TOKEN = "token"
    KEY = "key"
    PASSWORD = "password"


class AccountView(Frozen):
    id: str
    email: str
    locale: str | None = None


# --- requests and their replies ------------------------------------------------------------


class SealedCredential(Frozen):
    """What `VerifyCredential.sealed` holds once opened (orjson of this model)."""

    kind: CredentialKind
    secret: str = Field(max_length=8192)
    email: str | None = Field(default=None, max_length=254)


@register
class VerifyCredential(Contract):
    """Check a credential. `sealed` holds the credential, sealed to the key `seal_kid`."""

    TYPE = "authz.VerifyCredential"

    seal_kid: str
    sealed: str
    client: str | None = None  # client address, for per-client throttling (A10)


@register
class CredentialVerified(Contract):
    """The verdict. `valid_until` bounds how long an asker may cache it."""

    TYPE = "authz.CredentialVerified"

    outcome: Outcome
    account: AccountView | None = None
    scopes: tuple[str, ...] = ()
    method: AuthMethod | None = None
    credential_id: str | None = None  # token jti or key id: what a revocation names
    valid_until: datetime | None = None


@register
class CreateAccount(Contract):
    TYPE = "authz.CreateAccount"

    email: str = Field(min_length=3, max_length=254)
    seal_kid: str
    sealed_password: str
    locale: str | None = Field(default=None, max_length=35)


@register
class AccountCreated(Contract):
    """Reply to CreateAccount, and the audit event of the same name."""

    TYPE = "authz.AccountCreated"

    account: AccountView


@register
class IssueToken(Contract):
    """Issue an API token for an account (an operator's order: no password asked).

    `reply_key` is a one-time public key of the asker; the token comes back sealed to it.
    """

    TYPE = "authz.IssueToken"

    email: str = Field(min_length=3, max_length=254)
    name: str = Field(min_length=1, max_length=100)
    scopes: tuple[str, ...] = ()
    expires_in_s: int | None = Field(default=None, gt=0, le=10 * 365 * 86_400)  # <= 10 years
    reply_key: str


@register
class TokenIssued(Contract):
    """Audit event: a token was issued (never the token itself)."""

    TYPE = "authz.TokenIssued"

    token_id: str
    account_id: str
    name: str
    scopes: tuple[str, ...] = ()
    expires_at: datetime | None = None


@register
class NewToken(Contract):
    """Reply to IssueToken: the token, sealed to the asker's `reply_key`; shown once."""

    TYPE = "authz.NewToken"

    token: TokenIssued
    sealed_token: str


@register
class RevokeToken(Contract):
    TYPE = "authz.RevokeToken"

    token_id: str


@register
class CommandRejected(Contract):
    """A command that cannot be done as asked: a value, like a denial."""

    TYPE = "authz.CommandRejected"

    reason: Literal["email_taken", "unknown_account", "unknown_token", "invalid_input"]
    detail: str = ""


@register
class RequestFailed(Contract):
    """authz could not answer (its store is down, an unexpected error): the asker says 503."""

    TYPE = "authz.RequestFailed"

    reason: Literal["unavailable", "internal"]


# --- broadcast: keys and changes ------------------------------------------------------------


@register
class KeyPublished(Contract):
    """A public key of authz (compacted by `kid`). `use` is `sig` (JWT) or `seal` (sealing)."""

    TYPE = "authz.KeyPublished"

    kid: str
    use: Literal["sig", "seal"]
    jwk: dict[str, str]
    created_at: datetime


@register
class TokenRevoked(Contract):
    """Broadcast on auth.changes.v1 and audited: the token must be refused from now on."""

    TYPE = "authz.TokenRevoked"

    token_id: str
    account_id: str
    revoked_at: datetime
