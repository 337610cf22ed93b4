"""The api's HTTP surface: the management API under `/v0` (SPEC G1; who-am-I for now), the
JWKS, probes and metrics, and the one place where errors become HTTP answers (E1, E2)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from authbus_api.core.client_address import Network, client_address
from authbus_api.core.errors import Error
from authbus_api.gate import ApiError, Gate, Principal
from authbus_api.http.errors import ErrorStyle
from authbus_api.manage import Commands, Signup, management_routes
from authbus_api.metrics import ApiMetrics
from authbus_api.proxy import UpstreamFailed, Upstreams, identity_headers
from authbus_api.routes import RouteTable, WrongMethod
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.ops import OPS_PATHS, ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

STATUS_ERRORS = {
    400: Error.BAD_REQUEST,
    401: Error.MISSING_TOKEN,
    403: Error.FORBIDDEN,
    404: Error.NOT_FOUND,
    405: Error.METHOD_NOT_ALLOWED,
    418: Error.NOT_RELEASED,
    429: Error.TOO_MANY_REQUESTS,
    503: Error.UNAVAILABLE,
}


ME = "GET /v0/me"
FORWARD_AUTH = "/v0/forward-auth"
PRINCIPAL = "authbus.principal"  # scope key: the caller, when the hot path already knows it
GATEWAY_PATH = "/{path:path}"  # the declared routes: registered last, after the api's own
# Answers to requests without valid credentials: these count per client address (R6).
ANONYMOUS = frozenset({Error.MISSING_TOKEN, Error.INVALID_TOKEN, Error.TOKEN_REQUIRED})

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Me(BaseModel):
    """The authenticated account, as the credential sees it."""

    id: str
    email: str
    locale: str | None
    scopes: list[str]
    auth_method: str
    two_factor: bool = False  # the token was created with a second factor (SPEC A5)


KEYS_DEPRECATED = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    "<title>API keys are deprecated</title></head><body><h1>API keys are deprecated</h1>"
    "<p>Legacy API keys (<code>Authorization: Basic EMAIL/key:KEY</code>) still work, but "
    "answers to them carry a <code>Deprecation</code> header. Switch to API tokens: "
    "<code>Authorization: Bearer TOKEN</code>, or <code>EMAIL/token:TOKEN</code> in Basic "
    "auth. Tokens can be created with two-factor authentication and revoked one by one.</p>"
    "</body></html>"
)


def create_app(  # noqa: PLR0915 - the app's routes, one closure each
    gate: Gate,
    keys: AuthzKeys,
    *,
    trusted: Sequence[Network] = (),
    errors: ErrorStyle | None = None,
    routes: RouteTable | None = None,
    upstreams: Upstreams | None = None,
    commands: Commands | None = None,
    signup: Signup = "open",
) -> FastAPI:
    style = errors or ErrorStyle()
    table = routes or RouteTable([])

    app = FastAPI(
        title="authbus",
        version="0.1.0",
        summary="Authentication and rate limiting at the front door of an HTTP API.",
        openapi_url="/v0/openapi.json",
        docs_url="/v0/docs",
        redoc_url=None,
    )

    async def authenticated(request: Request, route: str) -> Principal:
        """Who is asking; a request without valid credentials is counted per client address
        (R6) before its 401, and gets a 429 instead once that address is over its limit."""
        known = request.scope.get(PRINCIPAL)  # the hot path found it, then handed over
        if isinstance(known, Principal):
            return known
        try:
            return await gate.authenticate(request.headers.get("authorization"))
        except ApiError as exc:
            if exc.error in ANONYMOUS:
                peer = request.client.host if request.client else None
                address = client_address(peer, request.headers.get("x-forwarded-for"), trusted)
                exc.headers.update(await gate.limit_anonymous(address, route))
            raise

    @app.get("/v0/me", tags=["account"], responses={401: {}, 429: {}, 503: {}})
    async def who_am_i(request: Request, response: Response) -> Me:
        """Who the credential in `Authorization` belongs to (Bearer or Basic)."""
        who = await authenticated(request, ME)
        request.state.account_locale = who.account.locale  # errors from here on (E3)
        response.headers.update(await gate.limit(who, ME))
        return Me(
            id=who.account.id,
            email=who.account.email,
            locale=who.account.locale,
            scopes=list(who.scopes),
            auth_method=who.method.value,
            two_factor=who.mfa,
        )

    @app.get("/v0/deprecations/api-keys", tags=["keys"], response_class=HTMLResponse)
    async def api_keys_deprecated() -> str:
        """Why legacy API keys are deprecated, and what to use instead (Link rel=deprecation)."""
        return KEYS_DEPRECATED

    @app.get("/.well-known/jwks.json", tags=["keys"])
    async def jwks() -> dict[str, Any]:
        """The public keys that verify authbus tokens (RFC 7517)."""
        return keys.jwks()

    async def anonymous(request: Request, route: str) -> dict[str, str]:
        """Count a request without a credential per client address (R6): its rate headers,
        or raises the 429."""
        peer = request.client.host if request.client else None
        address = client_address(peer, request.headers.get("x-forwarded-for"), trusted)
        return await gate.limit_anonymous(address, route)

    if commands is not None:  # before the gateway's catch-all: routes match in order
        app.include_router(management_routes(gate, commands, authenticated, anonymous, signup))

    async def forward_auth(request: Request) -> Response:
        """Forward auth (G3): may this request through? 200 with the caller's identity in
        `X-Authbus-*` headers and the rate headers, or the catalog's answer (401, 403, 429...).
        The original request is read as each proxy sends it: nginx `auth_request`
        (`X-Original-Method`, `X-Original-URI`), Traefik ForwardAuth (`X-Forwarded-Method`,
        `X-Forwarded-Uri`), Envoy ext_authz HTTP service (its method, and its path after this
        prefix). A declared route's checks apply (405, 418, 403, its policies); any other path
        is checked for the credential and the policies that apply everywhere."""
        method, path = _original(request)
        found = table.match(path, method)
        if isinstance(found, WrongMethod):
            raise ApiError(Error.METHOD_NOT_ALLOWED, {"Allow": ", ".join(found.allow)})
        route_id = f"{method} {path}"
        scopes: tuple[str, ...] = ()
        if found is not None:
            config = found.route.config
            if config.error_shape is not None:
                request.state.error_shape = config.error_shape
            if not config.released:
                raise ApiError(Error.NOT_RELEASED)
            route_id, scopes = found.route.route_id(method), config.scopes
        who = await authenticated(request, route_id)
        request.state.account_locale = who.account.locale
        if not set(scopes) <= set(who.scopes):
            raise ApiError(Error.FORBIDDEN)
        headers = await gate.limit(who, route_id)
        return Response(status_code=200, headers=identity_headers(who) | headers)

    others = sorted(METHODS - {"HEAD", "GET"})
    app.add_api_route(FORWARD_AUTH, forward_auth, methods=["GET"], tags=["forward auth"])
    app.add_api_route(FORWARD_AUTH, forward_auth, methods=others, include_in_schema=False)
    app.add_api_route(
        FORWARD_AUTH + "/{path:path}",
        forward_auth,
        methods=sorted(METHODS - {"HEAD"}),
        include_in_schema=False,
    )

    @app.api_route(GATEWAY_PATH, methods=sorted(METHODS - {"HEAD"}), include_in_schema=False)
    async def gateway(request: Request) -> Response:
        """A declared route (E4): 404 / 405 / 418, then the credential, the scopes (403) and
        the rate policies, then the upstream (G2)."""
        found = table.match(request.url.path, request.method)
        if found is None:
            allow = _own_methods(app, request)
            if allow:  # one of the api's own paths, with another method
                raise ApiError(Error.METHOD_NOT_ALLOWED, {"Allow": ", ".join(allow)})
            raise ApiError(Error.NOT_FOUND)
        if isinstance(found, WrongMethod):
            raise ApiError(Error.METHOD_NOT_ALLOWED, {"Allow": ", ".join(found.allow)})
        route = found.route
        request.scope["authbus.route"] = route.template  # metrics by template
        if route.config.error_shape is not None:
            request.state.error_shape = route.config.error_shape
        if not route.config.released:
            raise ApiError(Error.NOT_RELEASED)
        route_id = route.route_id(request.method)
        who = await authenticated(request, route_id)
        request.state.account_locale = who.account.locale
        if not set(route.config.scopes) <= set(who.scopes):
            raise ApiError(Error.FORBIDDEN)
        headers = await gate.limit(who, route_id)
        if upstreams is None:
            raise ApiError(Error.UNAVAILABLE, {"Retry-After": "1"})
        try:
            return await upstreams.forward(request, str(route.config.upstream), who, headers)
        except UpstreamFailed as exc:
            log.warning("upstream failed", route=route.template, error=str(exc))
            raise ApiError(Error.UNAVAILABLE, {"Retry-After": "1"} | headers) from exc

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return style.response(exc.error, request, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        error = STATUS_ERRORS.get(exc.status_code)
        if error is None:
            error = Error.BAD_REQUEST if exc.status_code < 500 else Error.INTERNAL
        return style.response(error, request, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        return style.response(Error.BAD_REQUEST, request)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> Response:
        response = style.response(Error.INTERNAL, request)
        log.error("unhandled error", path=request.url.path, exc_info=exc)
        return response

    return app


def _original(request: Request) -> tuple[str, str]:
    return original_request(request.headers, request.url.path, request.method)


def original_request(headers: Mapping[str, str], path: str, method: str) -> tuple[str, str]:
    """The method and path of the request a proxy asks about: nginx's X-Original-*, Traefik's
    X-Forwarded-*, or (Envoy) the path after the forward-auth prefix and this method.
    `headers` looks up lower-case names."""
    asked = headers.get("x-original-method") or headers.get("x-forwarded-method") or method
    uri = headers.get("x-original-uri") or headers.get("x-forwarded-uri")
    if uri is None:
        uri = path.removeprefix(FORWARD_AUTH)
    asked = asked.upper()
    return (asked if asked in METHODS else "OTHER"), (uri.split("?", 1)[0] or "/")


def _own_methods(app: FastAPI, request: Request) -> list[str]:
    """The methods the api's own routes (not the gateway's catch-all) allow on this path."""
    allow: list[str] = []
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path != GATEWAY_PATH:
            match, _ = route.matches(request.scope)
            if match is Match.PARTIAL:
                allow += sorted((route.methods or set()) - set(allow))
    return allow


def fast_forward_auth(app: ASGIApp, gate: Gate, routes: RouteTable | None = None) -> ASGIApp:
    """Forward auth's hot path at the ASGI level, in front of the framework (SPEC G3, issue #5
    item 9): a `GET /v0/forward-auth` whose credential is in the verdict cache, for a path no
    declared route restricts, is answered here: the cache lookup, the rate check on local
    leases, 200 with the identity and rate headers. Everything else (a miss, a denial, a
    declared route, a 429) goes on to `app`, which gives the same answer the slow way."""
    table = routes or RouteTable([])

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != FORWARD_AUTH or scope["method"] != "GET":
            await app(scope, receive, send)
            return
        headers = _raw_headers(scope)
        method, path = original_request(headers, scope["path"], scope["method"])
        who = gate.cached(headers.get("authorization")) if method != "OTHER" else None
        if who is None:
            await app(scope, receive, send)
            return
        route_id = _fast_route(table, path, method, who)
        limited = await gate.try_limit(who, route_id) if route_id is not None else None
        if limited is None:  # 403, 418, 405, 429...: the framework renders the answer
            scope[PRINCIPAL] = who  # already authenticated (and its use counted)
            await app(scope, receive, send)
            return
        scope["authbus.route"] = FORWARD_AUTH
        answer = identity_headers(who) | limited
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"0")]
                + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.items()],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    return asgi


def _fast_route(table: RouteTable, path: str, method: str, who: Principal) -> str | None:
    """The route id for the hot path, or None when the slow path must answer (405, 418, 403)."""
    found = table.match(path, method)
    if found is None:
        return f"{method} {path}"
    if isinstance(found, WrongMethod):
        return None
    config = found.route.config
    if not config.released:
        return None
    return found.route.route_id(method) if set(config.scopes) <= set(who.scopes) else None


def _raw_headers(scope: Scope) -> dict[str, str]:
    """The request's headers, lower-case names (the last of repeated ones)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def edge(app: ASGIApp, ops: ASGIApp, metrics: ApiMetrics) -> ASGIApp:
    """The process's ASGI entry: probes and metrics bypass the framework; every other request
    is timed and counted by route template (never by raw path)."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if scope["path"] in OPS_PATHS:
            await ops(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_status)
        finally:
            route = scope.get("authbus.route") or getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            metrics.requests.labels(route=route, method=method, status=str(status)).inc()
            metrics.duration.labels(route=route).observe(time.perf_counter() - started)

    return asgi
