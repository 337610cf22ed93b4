"""What a signed-in account does on its settings page: see its tokens and keys, create a token,
revoke a token or key (after a confirmation page), turn 2FA on and off, change its password,
sign out. Each is the same authz command as the `/v0` route that does it; each POST passes
the CSRF check first (`forms.guarded`), keyed with the session.

Creating a token asks for the password again (and a code when 2FA is on): a token is a login
(`manage.py`), so a stolen session alone cannot mint a lasting credential. Changing the
password revokes every older token, the session's too, so the page signs the user out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from markupsafe import Markup
from starlette.responses import Response

from authbus_api.core.access import Principal
from authbus_api.core.errors import Error
from authbus_api.core.sessions import PRESET_DAYS, SIGN_IN, csrf_token, lifetime_s
from authbus_api.gate import ApiError
from authbus_api.http.router import client_of, facts_of, principal_of
from authbus_api.manage import Commands, call, expect, opened, qr_svg, refused
from authbus_api.web.forms import Form, guarded
from authbus_api.web.render import PASSWORDS_DIFFER, TOKEN_FORM, Pages, redirect
from authbus_shared.authz_client import Secret
from authbus_shared.contracts.commands import (
    AccountInfo,
    AccountRef,
    GetAccount,
    KeyList,
    ListKeys,
    ListTokens,
    NewToken,
    RevokeKey,
    RevokeToken,
    SealedLogin,
    SealedPasswordChange,
    TokenList,
    TotpEnrollment,
)
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.contracts.events import AccountChanged, KeyRevoked, TokenRevoked

_CODE_ERRORS = frozenset({Error.BAD_CODE, Error.CODE_REQUIRED, Error.BAD_REQUEST})
_PASSWORD_ERRORS = _CODE_ERRORS | {
    Error.BAD_CREDENTIALS,
    Error.LOGIN_THROTTLED,
    Error.WEAK_PASSWORD,
    Error.SCOPE_NOT_GRANTED,
}


@dataclass(frozen=True)
class Row:
    """A token or key as the list shows it."""

    id: str
    kind: str  # "tokens" or "keys": the path segment of its revoke page
    name: str
    hint: str
    scopes: tuple[str, ...]
    created: str
    last_used: str | None
    expires: str | None
    status: str  # active, expired, revoked, current


def when(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else None


def status_of(revoked: datetime | None, expires: datetime | None, now: datetime) -> str:
    if revoked is not None:
        return "revoked"
    return "expired" if expires is not None and expires <= now else "active"


def account_routes(commands: Commands, pages: Pages) -> APIRouter:  # noqa: PLR0915
    router = APIRouter(prefix="/settings", include_in_schema=False)
    sessions = pages.sessions

    def own(who: Principal) -> AccountRef:
        return AccountRef(account_id=who.account.id)

    async def form_of(request: Request) -> tuple[Principal, Form]:
        form = await guarded(request, sessions.token(facts_of(request.scope).headers))
        return principal_of(request.scope), form

    def signed(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        """A page of a signed-in account: its email and the session's CSRF token go with it."""
        who = principal_of(request.scope)
        session = sessions.token(facts_of(request.scope).headers) or ""
        return pages.render(
            request,
            template,
            status=status,
            email=who.account.email,
            csrf=csrf_token(session),
            **context,
        )

    async def token_rows(who: Principal) -> list[Row]:
        command = ListTokens(account=own(who))
        tokens = await expect(TokenList, commands.ask(command, who.account.id))
        now = utcnow()
        return [
            Row(t.token_id, "tokens", t.name, t.hint, t.scopes, when(t.created_at) or "",
                when(t.last_used_at), when(t.expires_at),
                "current" if t.token_id == who.credential_id
                else status_of(t.revoked_at, t.expires_at, now))
            for t in tokens.tokens
        ]  # fmt: skip

    async def key_rows(who: Principal) -> list[Row]:
        keys = await expect(KeyList, commands.ask(ListKeys(account=own(who)), who.account.id))
        now = utcnow()
        return [
            Row(k.key_id, "keys", k.name, k.prefix, k.scopes, when(k.created_at) or "",
                when(k.last_used_at), when(k.expires_at),
                status_of(k.revoked_at, k.expires_at, now))
            for k in keys.keys
        ]  # fmt: skip

    async def overview(
        request: Request, status: int = 200, section: str = "", error: str | None = None
    ) -> Response:
        """The settings page; after a refused form, with `error` (English: the template
        translates it) beside that form's `section`."""
        who = principal_of(request.scope)
        tokens, keys, info = await asyncio.gather(
            token_rows(who),
            key_rows(who),
            expect(AccountInfo, commands.ask(GetAccount(account=own(who)), who.account.id)),
        )
        return signed(
            request,
            "settings.html",
            status,
            tokens=tokens,
            keys=keys,
            grant=info.scopes,
            totp=info.totp_enabled,
            presets=PRESET_DAYS,
            section=section,
            error=error,
        )

    @router.get("")
    async def settings(request: Request) -> Response:
        return await overview(request)

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        who, _ = await form_of(request)
        if who.credential_id:
            command = RevokeToken(token_id=who.credential_id, account_id=who.account.id)
            await expect(TokenRevoked, commands.ask(command, who.account.id))
        return redirect(f"{SIGN_IN}?done=signed-out", cookies=(sessions.clear_session(),))

    @router.post("/tokens")
    async def create_token(request: Request) -> Response:
        who, form = await form_of(request)
        name = form.one("name", 100).strip()
        expiry = lifetime_s(form.one("expiry", 10), form.one("expires_on", 10), utcnow())
        if not name or isinstance(expiry, ValueError):
            return await overview(request, 400, "create", TOKEN_FORM)
        login = SealedLogin(
            email=who.account.email,
            password=form.one("password"),
            totp_code=form.one("code", 10) or None,
        )
        reply = await call(
            commands.create_token(
                login,
                name=name,
                scopes=tuple(form.many("scopes")),
                expires_in_s=expiry,
                client=client_of(request.scope),
            )
        )
        if not isinstance(reply, Secret) or not isinstance(reply.reply, NewToken):
            return await _form_refusal(request, reply, "create")
        issued = reply.reply.token
        return signed(
            request,
            "token_created.html",
            name=issued.name,
            secret=reply.value,
            expires=when(issued.expires_at),
            scopes=issued.scopes,
        )

    async def _form_refusal(request: Request, reply: object, section: str) -> Response:
        error = refused(reply)
        if error.error not in _PASSWORD_ERRORS:
            raise error
        status = 429 if error.error is Error.LOGIN_THROTTLED else 400
        return await overview(request, status, section, pages.refusal(error.error))

    @router.get("/{kind}/{item_id}/revoke")
    async def confirm_revoke(kind: str, item_id: str, request: Request) -> Response:
        if kind not in ("tokens", "keys"):
            raise ApiError(Error.NOT_FOUND)
        who = principal_of(request.scope)
        listed = await (token_rows(who) if kind == "tokens" else key_rows(who))
        found = [r for r in listed if r.id == item_id]
        if not found or found[0].status == "revoked":
            raise ApiError(Error.NO_SUCH_RESOURCE)
        return signed(request, "revoke.html", item=found[0])

    @router.post("/{kind}/{item_id}/revoke")
    async def revoke(kind: str, item_id: str, request: Request) -> Response:
        who, _ = await form_of(request)
        if kind == "tokens":
            command: Any = RevokeToken(token_id=item_id[:64], account_id=who.account.id)
            await expect(TokenRevoked, commands.ask(command, who.account.id))
        elif kind == "keys":
            command = RevokeKey(key_id=item_id[:64], account_id=who.account.id)
            await expect(KeyRevoked, commands.ask(command, who.account.id))
        else:
            raise ApiError(Error.NOT_FOUND)
        if kind == "tokens" and item_id == who.credential_id:  # the session itself
            return redirect(f"{SIGN_IN}?done=signed-out", cookies=(sessions.clear_session(),))
        return redirect(f"/settings?done={kind[:-1]}-revoked")

    @router.post("/2fa")
    async def enrol(request: Request) -> Response:
        who, _ = await form_of(request)
        _, uri = await opened(TotpEnrollment, commands.enroll_totp(own(who)))
        secret = parse_qs(urlsplit(uri).query).get("secret", [""])[0]
        return signed(
            request,
            "totp.html",
            qr=Markup(qr_svg(uri)),  # noqa: S704 - segno's SVG of our own URI, no user input
            secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            error=None,
        )

    @router.post("/2fa/{action}")
    async def two_factor(action: str, request: Request) -> Response:
        who, form = await form_of(request)
        code = form.one("code", 10).strip().replace(" ", "")
        if action not in ("confirm", "disable"):
            raise ApiError(Error.NOT_FOUND)
        turn = commands.confirm_totp if action == "confirm" else commands.disable_totp
        reply = await call(turn(own(who), code))
        if isinstance(reply, AccountChanged):
            return redirect(f"/settings?done=2fa-{'on' if action == 'confirm' else 'off'}")
        error = refused(reply)
        if error.error not in _CODE_ERRORS:
            raise error
        if action == "confirm":  # the pending secret stays: another code may still confirm it
            message = pages.refusal(error.error)
            return signed(request, "totp.html", 400, qr=None, secret="", error=message)
        return await overview(request, 400, "2fa", pages.refusal(error.error))

    @router.post("/password")
    async def change_password(request: Request) -> Response:
        who, form = await form_of(request)
        new = form.one("new")
        if new != form.one("confirm"):
            return await overview(request, 400, "password", PASSWORDS_DIFFER)
        change = SealedPasswordChange(
            email=who.account.email,
            current=form.one("current"),
            new=new,
            totp_code=form.one("code", 10) or None,
        )
        reply = await call(commands.change_password(change, client_of(request.scope)))
        if not isinstance(reply, AccountChanged):
            return await _form_refusal(request, reply, "password")
        return redirect(f"{SIGN_IN}?done=password-changed", cookies=(sessions.clear_session(),))

    return router
