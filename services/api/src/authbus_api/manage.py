"""The management API under /v0 (SPEC G1): sign-up, tokens, legacy keys, login 2FA, and the
operators' scope grants.

Every operation is a command to authz over Kafka (`AuthzClient`); secrets come back sealed to a
one-time key of this call and are shown once, in the 201 answer, never again (lists show a
hint). authz's refusals are values, mapped here to the error catalog (`REFUSALS`); authz not
answering is a 503. The self-service routes act on the caller's own account (the credential's
account id): a token or key id of another account is "no such resource".

Creating a token is a login: the password (and the TOTP code when 2FA is on) travel sealed to
authz, which throttles failures (A10); sign-up and token creation count per client address
(R6) like every request without a credential.

Scopes (A8): authz gives a new token or key only scopes inside the account's grant; a key made
by a token or key also only scopes inside the caller's (`CreateKey.within`, filled here from
the verified caller; None for a password, the account's master credential). Beyond either:
403 `scope_not_granted`. The grant itself is changed by operators: the CLI, or
`PUT /v0/accounts/{account_id}/scopes` for a caller holding the `admin` scope, which replaces
it. The caller's scopes are authz's effective ones (inside the account's current grant), so
`admin` here is always an operator's grant, never a scope a user gave their own token.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

import segno
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from authbus_api.core.access import Principal
from authbus_api.core.errors import Error
from authbus_api.core.routing import RouteAccess
from authbus_api.gate import ApiError, Gate
from authbus_api.http.router import client_of, principal_of
from authbus_shared.authz_client import Refusal, Secret
from authbus_shared.contracts.authz import AuthMethod
from authbus_shared.contracts.commands import (
    MAX_GRANT,
    AccountRef,
    AccountScopes,
    CommandRejected,
    GrantScopes,
    KeyList,
    ListKeys,
    ListTokens,
    NewKey,
    NewToken,
    RevokeKey,
    RevokeToken,
    SealedLogin,
    SealedPasswordChange,
    TokenList,
    TotpEnrollment,
)
from authbus_shared.contracts.envelope import Contract
from authbus_shared.contracts.events import (
    AccountChanged,
    AccountCreated,
    KeyRevoked,
    TokenRevoked,
)
from authbus_shared.kafka.rpc import RpcTimeout

T = TypeVar("T")
R = TypeVar("R")
Signup = Literal["open", "admin"]
ADMIN_SCOPE = "admin"

REFUSALS: dict[str, Error] = {
    "email_taken": Error.BAD_REQUEST,
    "unknown_account": Error.NO_SUCH_RESOURCE,
    "unknown_token": Error.NO_SUCH_RESOURCE,
    "unknown_key": Error.NO_SUCH_RESOURCE,
    "invalid_input": Error.BAD_REQUEST,
    "invalid_credentials": Error.BAD_CREDENTIALS,
    "totp_required": Error.CODE_REQUIRED,
    "invalid_code": Error.BAD_CODE,
    "totp_not_pending": Error.BAD_REQUEST,
    "keys_disabled": Error.FORBIDDEN,
    "throttled": Error.LOGIN_THROTTLED,
    "scope_not_granted": Error.SCOPE_NOT_GRANTED,
    "weak_password": Error.WEAK_PASSWORD,
}


class Commands(Protocol):
    """authz's command side (AuthzClient; a twin in unit tests)."""

    async def ask(self, command: Contract, key: str) -> Contract: ...
    async def create_account(self, email: str, password: str, locale: str | None) -> Contract: ...
    async def create_token(
        self,
        login: SealedLogin,
        *,
        name: str,
        scopes: tuple[str, ...] = (),
        expires_in_s: int | None = None,
        client: str | None = None,
    ) -> Secret | Refusal: ...
    async def create_key(
        self,
        account: AccountRef,
        *,
        name: str,
        scopes: tuple[str, ...] = (),
        expires_in_s: int | None = None,
        within: tuple[str, ...] | None = None,
    ) -> Secret | Refusal: ...
    async def enroll_totp(self, account: AccountRef) -> Secret | Refusal: ...
    async def confirm_totp(self, account: AccountRef, code: str) -> Contract: ...
    async def disable_totp(self, account: AccountRef, code: str) -> Contract: ...
    async def change_password(
        self, change: SealedPasswordChange, client: str | None = None
    ) -> Contract: ...


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


Scopes = list[str]


class SignUp(_In):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    locale: str | None = Field(default=None, max_length=35)


class Account(BaseModel):
    id: str
    email: str
    locale: str | None


class NewTokenIn(_In):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    code: str | None = Field(default=None, max_length=10, description="TOTP, when 2FA is on")
    name: str = Field(min_length=1, max_length=100)
    scopes: Scopes = Field(default_factory=list, max_length=32)
    expires_in_s: int | None = Field(default=None, ge=60, le=10 * 365 * 86400)


class NewKeyIn(_In):
    name: str = Field(min_length=1, max_length=100)
    scopes: Scopes = Field(default_factory=list, max_length=32)
    expires_in_s: int | None = Field(default=None, ge=60, le=10 * 365 * 86400)


class Created(BaseModel):
    """A new token or key: `secret` is shown this once."""

    id: str
    name: str
    scopes: Scopes
    expires_at: datetime | None
    secret: str
    two_factor: bool = False


class GrantIn(_In):
    scopes: Scopes = Field(max_length=MAX_GRANT, description="the account's whole new grant")


class Grant(BaseModel):
    """An account's grant: the scopes its tokens and keys may carry."""

    account_id: str
    scopes: Scopes


class CodeIn(_In):
    code: str = Field(min_length=6, max_length=10)


class Enrolment(BaseModel):
    otpauth_uri: str
    qr_svg: str = Field(description="the otpauth URI as a QR code (SVG), for an authenticator app")


def refused(reply: object) -> ApiError:
    """The catalog's answer to a refusal (or to anything unexpected: 503)."""
    if isinstance(reply, CommandRejected):
        headers = {"Retry-After": str(reply.retry_after_s)} if reply.retry_after_s else {}
        return ApiError(REFUSALS.get(reply.reason, Error.BAD_REQUEST), headers)
    return ApiError(Error.UNAVAILABLE, {"Retry-After": "1"})


async def call(pending: Awaitable[T]) -> T:
    """authz's reply; not answering in time is the catalog's 503."""
    try:
        return await pending
    except RpcTimeout as exc:
        raise ApiError(Error.UNAVAILABLE, {"Retry-After": "1"}) from exc


async def expect(expected: type[R], pending: Awaitable[object]) -> R:
    """authz's reply when it is the `expected` result; else the catalog's answer (raised)."""
    reply = await call(pending)
    if not isinstance(reply, expected):
        raise refused(reply)
    return reply


async def opened(expected: type[R], pending: Awaitable[Secret | Refusal]) -> tuple[R, str]:
    """A reply carrying a new secret, and the secret (opened with this call's one-time key)."""
    secret = await expect(Secret, pending)
    if not isinstance(secret.reply, expected):
        raise refused(secret.reply)
    return secret.reply, secret.value


def caller_scopes(who: Principal) -> tuple[str, ...] | None:
    """What a new key made by this caller must stay within (A8): a token's or key's scopes;
    None for a password (the account's master credential: the grant alone bounds it)."""
    return who.scopes if who.method in (AuthMethod.TOKEN, AuthMethod.KEY) else None


def qr_svg(uri: str) -> str:
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", scale=4, xmldecl=False)
    return buffer.getvalue().decode()


def route_access(signup: Signup) -> dict[str, RouteAccess]:
    """Who may call each route below (the access decision applies it, `core/access.py`);
    a route not named here needs a valid credential."""
    return {
        "POST /v0/tokens": RouteAccess("anonymous"),  # a login: counted per client address
        "POST /v0/accounts": (
            RouteAccess("credential", frozenset({ADMIN_SCOPE}), Error.SIGNUP_CLOSED)
            if signup == "admin"
            else RouteAccess("anonymous")
        ),
        "PUT /v0/accounts/{account_id}/scopes": RouteAccess("credential", frozenset({ADMIN_SCOPE})),
    }


def management_routes(gate: Gate, commands: Commands) -> APIRouter:  # noqa: PLR0915
    """One closure per route; each finds its caller where the access decision left it."""
    router = APIRouter(prefix="/v0")
    errors: dict[int | str, dict[str, Any]] = {s: {} for s in (400, 401, 403, 429, 503)}

    def own(who: Principal) -> AccountRef:
        return AccountRef(account_id=who.account.id)

    def own_key(who: Principal) -> str:  # the commands' partition key: one account in order
        return who.account.id

    @router.post("/accounts", status_code=201, tags=["account"], responses=errors)
    async def sign_up(body: SignUp) -> Account:
        """Create an account (open, or for a token with the `admin` scope, per deployment)."""
        created = await expect(
            AccountCreated, commands.create_account(body.email, body.password, body.locale)
        )
        account = created.account
        return Account(id=account.id, email=account.email, locale=account.locale)

    @router.put("/accounts/{account_id}/scopes", tags=["account"], responses=errors | {404: {}})
    async def grant(account_id: str, body: GrantIn) -> Grant:
        """Replace an account's grant (operators: a credential with the `admin` scope). Its
        tokens and keys keep only the scopes inside the new grant, on every instance."""
        command = GrantScopes(
            account=AccountRef(account_id=account_id[:64]), exactly=tuple(body.scopes)
        )
        granted = await expect(AccountScopes, commands.ask(command, account_id[:64]))
        return Grant(account_id=granted.account_id, scopes=list(granted.scopes))

    @router.post("/tokens", status_code=201, tags=["tokens"], responses=errors)
    async def create_token(body: NewTokenIn, request: Request) -> Created:
        """Log in for a new API token: email and password, and the TOTP code when 2FA is on
        (the token then says `two_factor`). The token is shown this once."""
        login = SealedLogin(email=body.email, password=body.password, totp_code=body.code)
        reply, token = await opened(
            NewToken,
            commands.create_token(
                login,
                name=body.name,
                scopes=tuple(body.scopes),
                expires_in_s=body.expires_in_s,
                client=client_of(request.scope),  # the real client, for the throttle (A10)
            ),
        )
        issued = reply.token
        return Created(
            id=issued.token_id,
            name=issued.name,
            scopes=list(issued.scopes),
            expires_at=issued.expires_at,
            secret=token,
            two_factor="mfa" in issued.amr,
        )

    @router.get("/tokens", tags=["tokens"], responses=errors)
    async def list_tokens(request: Request) -> dict[str, Any]:
        """Your tokens (never the secret: `hint` is its last characters)."""
        who = principal_of(request.scope)
        listed = await expect(TokenList, commands.ask(ListTokens(account=own(who)), own_key(who)))
        return {"tokens": [t.model_dump(mode="json") for t in listed.tokens]}

    @router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"], responses=errors)
    async def revoke_token(token_id: str, request: Request) -> None:
        """Revoke one of your tokens: refused everywhere from now on."""
        who = principal_of(request.scope)
        command = RevokeToken(token_id=token_id[:64], account_id=who.account.id)
        await expect(TokenRevoked, commands.ask(command, own_key(who)))

    @router.post("/keys", status_code=201, tags=["keys"], responses=errors)
    async def create_key(body: NewKeyIn, request: Request, response: Response) -> Created:
        """A legacy API key (deprecated: prefer tokens). Shown this once."""
        who = principal_of(request.scope)
        reply, key = await opened(
            NewKey,
            commands.create_key(
                own(who),
                name=body.name,
                scopes=tuple(body.scopes),
                expires_in_s=body.expires_in_s,
                within=caller_scopes(who),
            ),
        )
        issued = reply.key
        response.headers.update(gate.deprecation)
        return Created(
            id=issued.key_id,
            name=issued.name,
            scopes=list(issued.scopes),
            expires_at=issued.expires_at,
            secret=key,
        )

    @router.get("/keys", tags=["keys"], responses=errors)
    async def list_keys(request: Request) -> dict[str, Any]:
        who = principal_of(request.scope)
        listed = await expect(KeyList, commands.ask(ListKeys(account=own(who)), own_key(who)))
        return {"keys": [k.model_dump(mode="json") for k in listed.keys]}

    @router.delete("/keys/{key_id}", status_code=204, tags=["keys"], responses=errors)
    async def revoke_key(key_id: str, request: Request) -> None:
        who = principal_of(request.scope)
        command = RevokeKey(key_id=key_id[:64], account_id=who.account.id)
        await expect(KeyRevoked, commands.ask(command, own_key(who)))

    @router.post("/2fa", status_code=201, tags=["2fa"], responses=errors)
    async def enrol(request: Request) -> Enrolment:
        """Start login 2FA: scan the QR code (or enter the URI) in an authenticator app, then
        confirm with a code. Until confirmed, nothing changes."""
        who = principal_of(request.scope)
        _, uri = await opened(TotpEnrollment, commands.enroll_totp(own(who)))
        return Enrolment(otpauth_uri=uri, qr_svg=qr_svg(uri))

    @router.post("/2fa/confirm", status_code=204, tags=["2fa"], responses=errors)
    async def confirm(body: CodeIn, request: Request) -> None:
        """Turn login 2FA on with a current code: passwords alone stop working."""
        who = principal_of(request.scope)
        await expect(AccountChanged, commands.confirm_totp(own(who), body.code))

    @router.post("/2fa/disable", status_code=204, tags=["2fa"], responses=errors)
    async def disable(body: CodeIn, request: Request) -> None:
        """Turn login 2FA off, with a current code."""
        who = principal_of(request.scope)
        await expect(AccountChanged, commands.disable_totp(own(who), body.code))

    return router
