"""Management commands for authz (`authz.commands.v1`) and their replies.

Two kinds of askers: operators (the admin CLI: name accounts by email, no password asked) and
the api acting for an authenticated user (names the account by id; self-service commands that
need proof carry the user's password, sealed). Every secret is sealed both ways (SPEC A9): a
password or TOTP code to authz's sealing key; a new token, key or TOTP secret to the asker's
one-time `reply_key`.

Scopes (SPEC A8) are granted to an account by operators (`GrantScopes`); a new token or key
gets only scopes inside the account's grant, and, made by an authenticated credential
(`CreateKey.within`), inside that credential's scopes. Beyond either: `scope_not_granted`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import Field, model_validator

from authbus_shared.contracts.authz import AccountView
from authbus_shared.contracts.envelope import Contract, Frozen, register
from authbus_shared.contracts.events import KeyIssued, TokenIssued

MAX_LIFETIME_S = 10 * 365 * 86_400  # ten years
MAX_GRANT = 100  # scopes an account may be granted (and so a list of them may hold)
Scopes = tuple[str, ...]


class AccountRef(Frozen):
    """An account, by email (operators) or by id (the api, for an authenticated user)."""

    email: str | None = Field(default=None, min_length=3, max_length=254)
    account_id: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.email is None) == (self.account_id is None):
            raise ValueError("name the account by email or by account_id, not both")
        return self


class SealedLogin(Frozen):
    """Sealed inside CreateToken: the user's proof."""

    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)
    totp_code: str | None = Field(default=None, max_length=10)


class SealedPasswordChange(Frozen):
    email: str = Field(max_length=254)
    current: str = Field(max_length=1024)
    new: str = Field(max_length=1024)
    totp_code: str | None = Field(default=None, max_length=10)


# --- accounts -------------------------------------------------------------------------------


@register
class CreateAccount(Contract):
    TYPE = "authz.CreateAccount"

    email: str = Field(min_length=3, max_length=254)
    seal_kid: str
    sealed_password: str
    locale: str | None = Field(default=None, max_length=35)


@register
class ChangePassword(Contract):
    """`sealed` holds a SealedPasswordChange. Tokens issued before the change stop working."""

    TYPE = "authz.ChangePassword"

    seal_kid: str
    sealed: str
    client: str | None = Field(default=None, max_length=64)


@register
class SetAccountDisabled(Contract):
    """An operator's order: a disabled account's credentials all stop working."""

    TYPE = "authz.SetAccountDisabled"

    account: AccountRef
    disabled: bool


@register
class GrantScopes(Contract):
    """An operator's order (SPEC A8): change the scopes an account may give its tokens and keys.

    `add` and `remove` change the grant (each atomically; a scope in both is refused);
    `exactly`, when set, replaces it (then `add` and `remove` must be empty). Replies
    `AccountScopes`; publishes `AccountChanged(scopes_changed)`, so every api drops the
    account's cached verdicts: a scope taken away stops applying to its tokens and keys."""

    TYPE = "authz.GrantScopes"

    account: AccountRef
    add: Scopes = Field(default=(), max_length=MAX_GRANT)
    remove: Scopes = Field(default=(), max_length=MAX_GRANT)
    exactly: Scopes | None = Field(default=None, max_length=MAX_GRANT)


@register
class AccountScopes(Contract):
    """Reply to GrantScopes: the account's grant after the change (sorted)."""

    TYPE = "authz.AccountScopes"

    account_id: str
    scopes: Scopes


@register
class GetAccount(Contract):
    """An operator's read: the account as authz holds it (never a secret)."""

    TYPE = "authz.GetAccount"

    account: AccountRef


@register
class AccountInfo(Contract):
    """Reply to GetAccount."""

    TYPE = "authz.AccountInfo"

    account: AccountView
    scopes: Scopes  # the grant (sorted)
    totp_enabled: bool
    disabled: bool
    created_at: datetime


# --- tokens ---------------------------------------------------------------------------------


class NewCredentialRequest(Contract):
    name: str = Field(min_length=1, max_length=100)
    scopes: Scopes = Field(default=(), max_length=50)
    expires_in_s: int | None = Field(default=None, gt=0, le=MAX_LIFETIME_S)
    reply_key: str = Field(
        max_length=64
    )  # one-time X25519 public key: the secret comes back sealed


@register
class IssueToken(NewCredentialRequest):
    """An operator's order: a token for an account, no password asked (amr: admin)."""

    TYPE = "authz.IssueToken"

    email: str = Field(min_length=3, max_length=254)


@register
class CreateToken(NewCredentialRequest):
    """Self-service: `sealed` holds a SealedLogin (password, and the TOTP code when the
    account has login 2FA on; the token then records that 2FA was used)."""

    TYPE = "authz.CreateToken"

    seal_kid: str
    sealed: str
    client: str | None = Field(default=None, max_length=64)


@register
class NewToken(Contract):
    """Reply to IssueToken / CreateToken: the token sealed to the asker's `reply_key`."""

    TYPE = "authz.NewToken"

    token: TokenIssued
    sealed_token: str


class TokenInfo(Frozen):
    token_id: str
    name: str
    scopes: Scopes
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    amr: tuple[str, ...]
    hint: str  # the token's last characters: enough to recognise it, never to use it


@register
class ListTokens(Contract):
    TYPE = "authz.ListTokens"

    account: AccountRef


@register
class TokenList(Contract):
    TYPE = "authz.TokenList"

    tokens: tuple[TokenInfo, ...]


@register
class RevokeToken(Contract):
    """`account_id` set: only if the token is that account's (self-service)."""

    TYPE = "authz.RevokeToken"

    token_id: str = Field(max_length=64)
    account_id: str | None = Field(default=None, max_length=64)


# --- legacy API keys (deprecated, SPEC A3) --------------------------------------------------


@register
class CreateKey(NewCredentialRequest):
    """`within`: None when an operator asks or the user proved the account's password; the
    scopes of the caller's token or key when a credential asks (the api fills it from the
    verified caller): the new key's scopes must be inside them too (SPEC A8)."""

    TYPE = "authz.CreateKey"

    account: AccountRef
    within: Scopes | None = Field(default=None, max_length=MAX_GRANT)


@register
class NewKey(Contract):
    TYPE = "authz.NewKey"

    key: KeyIssued
    sealed_key: str


class KeyInfo(Frozen):
    key_id: str
    name: str
    prefix: str
    scopes: Scopes
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    deprecated: bool = True


@register
class ListKeys(Contract):
    TYPE = "authz.ListKeys"

    account: AccountRef


@register
class KeyList(Contract):
    TYPE = "authz.KeyList"

    keys: tuple[KeyInfo, ...]


@register
class RevokeKey(Contract):
    TYPE = "authz.RevokeKey"

    key_id: str = Field(max_length=64)
    account_id: str | None = Field(default=None, max_length=64)


# --- login 2FA (TOTP, RFC 6238) -------------------------------------------------------------


@register
class EnrollTotp(Contract):
    """Start enrolment: a new secret, pending until confirmed with a code."""

    TYPE = "authz.EnrollTotp"

    account: AccountRef
    reply_key: str = Field(max_length=64)


@register
class TotpEnrollment(Contract):
    """The otpauth:// URI (holds the secret), sealed to the asker's `reply_key`."""

    TYPE = "authz.TotpEnrollment"

    account_id: str
    sealed_uri: str


@register
class ConfirmTotp(Contract):
    """`sealed_code` holds the current code: login 2FA goes on."""

    TYPE = "authz.ConfirmTotp"

    account: AccountRef
    seal_kid: str
    sealed_code: str


@register
class DisableTotp(Contract):
    TYPE = "authz.DisableTotp"

    account: AccountRef
    seal_kid: str
    sealed_code: str


# --- signing and sealing keys ---------------------------------------------------------------


@register
class RotateKey(Contract):
    """An operator's order: a new active key for `use`; the previous one stays for the overlap
    (tokens it signed stay valid until they expire or are revoked)."""

    TYPE = "authz.RotateKey"

    use: Literal["sig", "seal"]


# --- refusals -------------------------------------------------------------------------------

Rejection = Literal[
    "email_taken",
    "unknown_account",
    "unknown_token",
    "unknown_key",
    "invalid_input",
    "invalid_credentials",
    "totp_required",
    "invalid_code",
    "totp_not_pending",
    "keys_disabled",
    "throttled",
    "scope_not_granted",  # `detail`: the scopes asked for but not granted (space separated)
    "weak_password",  # `detail`: the policy (NIST SP 800-63B: 8 to 1,024 characters)
]


@register
class CommandRejected(Contract):
    """A command that cannot be done as asked: a value, like a denial."""

    TYPE = "authz.CommandRejected"

    reason: Rejection
    detail: str = ""
    retry_after_s: int | None = None
