"""The settings page's routes (ADR 0018): signing up, in and out, and the page's own files.
What a signed-in account can do is in `account.py`.

Signing in is `POST /v0/tokens`'s login (a token named "settings session", valid for the
session's lifetime), so the failed-login throttle (A10), 2FA and revocation come with it;
the token goes into the session cookie and nowhere else. Signing out revokes it. The sign-in
and sign-up forms are counted per client address (R6) like every request without a
credential; their CSRF basis is a pre-session nonce in its own cookie."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from authbus_api.core.errors import Error
from authbus_api.core.routing import RouteAccess
from authbus_api.core.sessions import SIGN_IN, csrf_token, new_nonce
from authbus_api.gate import ApiError
from authbus_api.http.router import client_of, facts_of
from authbus_api.manage import Commands, Signup, call, refused
from authbus_api.web.account import account_routes
from authbus_api.web.forms import guarded
from authbus_api.web.render import ASSETS, Pages, redirect
from authbus_shared.authz_client import Secret
from authbus_shared.contracts.commands import CommandRejected, SealedLogin
from authbus_shared.contracts.events import AccountCreated

SESSION_NAME = "settings session"
ASSET_TYPES = {"settings.css": "text/css", "settings.js": "text/javascript"}


def page_access(signup: Signup) -> dict[str, RouteAccess]:
    """Who may call each page route (the access decision applies it); the rest need a
    session."""
    anonymous = RouteAccess("anonymous")
    rules = {"GET /settings/sign-in": anonymous, "POST /settings/sign-in": anonymous}
    if signup == "open":
        rules |= {"GET /settings/sign-up": anonymous, "POST /settings/sign-up": anonymous}
    return rules | {"GET /settings/assets/{name}": RouteAccess("open")}


def settings_routes(commands: Commands, pages: Pages, signup: Signup) -> APIRouter:
    router = APIRouter(prefix="/settings", include_in_schema=False)
    sessions = pages.sessions

    def nonce_form(
        request: Request,
        template: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Response:
        """A form of a visitor without a session: its CSRF token comes from the pre-session
        nonce, set now when the browser has none."""
        nonce = sessions.nonce(facts_of(request.scope).headers)
        if nonce is None:
            nonce = new_nonce()
            headers = {**(headers or {}), "Set-Cookie": sessions.set_nonce(nonce)}
        return pages.render(
            request,
            template,
            status=status,
            headers=headers,
            csrf=csrf_token(nonce),
            signup=signup == "open",
            **context,
        )

    @router.get("/sign-in")
    async def sign_in_form(request: Request) -> Response:
        return nonce_form(request, "sign_in.html", email="", error=None)

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        form = await guarded(request, sessions.nonce(facts_of(request.scope).headers))
        email, code = form.one("email", 254), form.one("code", 10)
        login = SealedLogin(email=email, password=form.one("password"), totp_code=code or None)
        reply = await call(
            commands.create_token(
                login,
                name=SESSION_NAME,
                expires_in_s=sessions.lifetime_s,
                client=client_of(request.scope),
            )
        )
        if isinstance(reply, Secret):
            return redirect("/settings", cookies=(sessions.set_session(reply.value),))
        error = refused(reply).error
        if error not in _FORM_ERRORS:
            raise refused(reply)
        retry = reply.retry_after_s if isinstance(reply, CommandRejected) else None
        return nonce_form(
            request,
            "sign_in.html",
            status=401 if error is not Error.LOGIN_THROTTLED else 429,
            headers={"Retry-After": str(retry)} if retry else None,
            email=email,
            error=pages.refusal(error),
        )

    if signup == "open":

        @router.get("/sign-up")
        async def sign_up_form(request: Request) -> Response:
            return nonce_form(request, "sign_up.html", email="", error=None)

        @router.post("/sign-up")
        async def sign_up(request: Request) -> Response:
            form = await guarded(request, sessions.nonce(facts_of(request.scope).headers))
            email, password = form.one("email", 254), form.one("password")
            if len(email) < 3:
                message = pages.refusal(Error.BAD_REQUEST)
                return nonce_form(request, "sign_up.html", 400, email=email, error=message)
            language = pages.language(request)
            reply = await call(commands.create_account(email, password, language))
            if isinstance(reply, AccountCreated):
                return redirect(f"{SIGN_IN}?done=account-created")
            refusal = refused(reply)
            if refusal.error not in (Error.BAD_REQUEST, Error.WEAK_PASSWORD):
                raise refusal
            message = pages.refusal(refusal.error)
            return nonce_form(request, "sign_up.html", 400, email=email, error=message)

    @router.get("/assets/{name}")
    async def asset(name: str) -> Response:
        media = ASSET_TYPES.get(name)
        if media is None:
            raise ApiError(Error.NOT_FOUND)
        headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
        return FileResponse(ASSETS / name, media_type=media, headers=headers)

    router.routes.extend(account_routes(commands, pages).routes)
    return router


# Refusals a sign-in form shows beside its fields (the rest: the catalog's page).
_FORM_ERRORS = frozenset(
    {Error.BAD_CREDENTIALS, Error.CODE_REQUIRED, Error.BAD_CODE, Error.LOGIN_THROTTLED}
)
