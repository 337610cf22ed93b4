"""Credential verification: the api asks authz "whose is this credential, and is it good?".

Internal contract, not a public HTTP schema. No raw secret ever travels (SPEC A9): the
credential goes sealed to authz's published sealing key (`authbus_shared.sealing`).
Management commands are in `contracts.commands`, events in `contracts.events`.
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
    THROTTLED = "throttled"  # too many failed logins: wait `retry_after_s` (A10)


class AuthMethod(StrEnum):
    TOKEN = "token"
    KEY = "key"
    PASSWORD = "password"


class AccountView(Frozen):
    id: str
    email: str
    locale: str | None = None


class SealedCredential(Frozen):
    """What `VerifyCredential.sealed` holds once opened (JSON of this model)."""

    kind: CredentialKind
    secret: str = Field(max_length=8192)
    email: str | None = Field(default=None, max_length=254)


@register
class VerifyCredential(Contract):
    """Check a credential. `sealed` holds a SealedCredential, sealed to the key `seal_kid`."""

    TYPE = "authz.VerifyCredential"

    seal_kid: str
    sealed: str
    client: str | None = Field(default=None, max_length=64)  # client address (A10)


@register
class CredentialVerified(Contract):
    """The verdict. `valid_until` bounds how long an asker may cache it; `checked_at` (authz's
    clock) lets it tell a verdict read before an account change from one read after."""

    TYPE = "authz.CredentialVerified"

    outcome: Outcome
    account: AccountView | None = None
    scopes: tuple[str, ...] = ()
    method: AuthMethod | None = None
    credential_id: str | None = None  # token jti, key id, or "password:<account id>"
    valid_until: datetime | None = None
    mfa: bool = False  # the credential was obtained with a second factor (A5)
    deprecated: bool = False  # a legacy API key (A3): the api adds Deprecation headers
    retry_after_s: int | None = None  # with `throttled`
    checked_at: datetime | None = None


@register
class RequestFailed(Contract):
    """authz could not answer (its store is down, an unexpected error): the asker says 503."""

    TYPE = "authz.RequestFailed"

    reason: Literal["unavailable", "internal"]


def password_credential_id(account_id: str) -> str:
    """The credential id of an account's password, so verdicts can be dropped like a token's."""
    return f"password:{account_id}"
