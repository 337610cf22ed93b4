"""The api's HTTP surface: the management API under `/v0` (SPEC G1), the settings page under
`/settings` (ADR 0018), the JWKS, probes and metrics, and the one place where errors become
HTTP answers (E1, E2)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from authbus_api.access import Access
from authbus_api.core.access import Routed, Unmatched
from authbus_api.core.client_address import LOOPBACK, Network, Proxies
from authbus_api.core.errors import Error
from authbus_api.core.routing import RouteAccess, RouteSpec, RouteTable
from authbus_api.core.sessions import Sessions
from authbus_api.docs import ROUTES as DOC_ROUTES
from authbus_api.docs import add_docs
from authbus_api.gate import ApiError, Gate
from authbus_api.http.body import install_body_handlers, limit_body
from authbus_api.http.errors import ErrorStyle
from authbus_api.http.forward_auth import Dialect, ForwardAuth
from authbus_api.http.limits import EdgeLimits
from authbus_api.http.router import ROUTE, ROUTED, STATUS, Gateway, Router, principal_of
from authbus_api.manage import Commands, Signup, management_routes, route_access
from authbus_api.metrics import ApiMetrics
from authbus_api.proxy import Upstreams
from authbus_api.web.pages import page_access, settings_routes
from authbus_api.web.render import Pages
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.ops import OPS_PATHS, ASGIApp, Receive, Scope, Send

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
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>API keys are deprecated</title></head><body><main><h1>API keys are deprecated</h1>"
    "<p>Legacy API keys (<code>Authorization: Basic EMAIL/key:KEY</code>) still work, but "
    "answers to them carry a <code>Deprecation</code> header. Switch to API tokens: "
    "<code>Authorization: Bearer TOKEN</code>, or <code>EMAIL/token:TOKEN</code> in Basic "
    "auth. Tokens can be created with two-factor authentication and revoked one by one.</p>"
    "</main></body></html>"
)


def create_app(
    gate: Gate,
    keys: AuthzKeys,
    *,
    errors: ErrorStyle | None = None,
    commands: Commands | None = None,
    signup: Signup = "open",
    sessions: Sessions | None = None,
) -> FastAPI:
    """The api's own routes (the framework's part). Requests reach it through `Router`,
    which has already routed them (400, 404, 405) on their normalised path."""
    style = errors or ErrorStyle()
    app = FastAPI(
        title="authbus",
        version="0.1.0",
        summary="Authentication and rate limiting at the front door of an HTTP API.",
        openapi_url="/v0/openapi.json",
        docs_url=None,  # docs.py: Swagger UI with its assets served here, not from a CDN
        redoc_url=None,
    )
    add_docs(app, "/v0/openapi.json")

    @app.get("/v0/me", tags=["account"], responses={401: {}, 429: {}, 503: {}})
    async def who_am_i(request: Request) -> Me:
        """Who the credential in `Authorization` belongs to (Bearer or Basic)."""
        who = principal_of(request.scope)
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

    if commands is not None:  # the routes themselves (not an included router): `own_routes`
        app.router.routes.extend(management_routes(gate, commands).routes)
        pages = Pages(style, sessions or Sessions())
        app.router.routes.extend(settings_routes(commands, pages, signup).routes)

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

    install_body_handlers(app, style)  # after the handlers above: it wraps HTTPException's
    return app


# The api's own routes that need nothing and count nothing: the keys and the API's docs.
OPEN = RouteAccess("open")
OPEN_ROUTES = (
    "GET /.well-known/jwks.json",
    "GET /v0/deprecations/api-keys",
    "GET /v0/openapi.json",
    *DOC_ROUTES,
)


def own_routes(app: FastAPI, signup: Signup) -> RouteTable:
    """The api's own routes as the access decision sees them (404, 405 with a complete
    `Allow`, and who may call each: `manage.route_access`, `OPEN_ROUTES`, else a credential), read
    off the framework so the two cannot disagree."""
    rules = {name: OPEN for name in OPEN_ROUTES} | route_access(signup) | page_access(signup)
    specs = []
    for route in app.router.routes:
        methods = getattr(route, "methods", None)
        path = getattr(route, "path", None)
        if not methods or not isinstance(path, str):
            continue
        for method in sorted(set(methods) - {"HEAD"}):
            rule = rules.get(f"{method} {path}", RouteAccess())
            specs.append(
                RouteSpec(
                    template=path,
                    methods=frozenset({method}),
                    auth=rule.auth,
                    scopes=rule.scopes,
                    forbidden=rule.forbidden,
                )
            )
    return RouteTable(specs)


@dataclass(frozen=True)
class HttpOptions:
    """How the HTTP surface is put together (from the settings, in `runner`)."""

    trusted: Sequence[Network] = LOOPBACK
    errors: ErrorStyle = field(default_factory=ErrorStyle)
    routes: RouteTable = field(default_factory=RouteTable)
    upstreams: Upstreams | None = None
    commands: Commands | None = None
    signup: Signup = "open"
    dialect: Dialect = "nginx"
    unmatched: Unmatched = "deny"
    limits: EdgeLimits = field(default_factory=EdgeLimits)
    sessions: Sessions = field(default_factory=Sessions)


def build_http(
    gate: Gate, keys: AuthzKeys, metrics: ApiMetrics, ops: ASGIApp, options: HttpOptions
) -> ASGIApp:
    """The process's whole HTTP app: ops endpoints and metrics (`edge`), then `Router`, which
    reads and routes every request once and hands it to forward auth, the gateway or the
    framework."""
    framework = create_app(
        gate,
        keys,
        errors=options.errors,
        commands=options.commands,
        signup=options.signup,
        sessions=options.sessions,
    )
    access = Access(gate)
    limits, style = options.limits, options.errors

    def declared_limit(scope: Scope) -> int:
        routed: Routed = scope[ROUTED]
        own = routed.route.max_body_bytes
        return own if own is not None else limits.gateway_max_body_bytes

    router = Router(
        framework=limit_body(framework, limits, style, lambda _: limits.v0_max_body_bytes),
        gateway=limit_body(
            Gateway(access, options.upstreams, style), limits, style, declared_limit
        ),
        access=access,
        own=own_routes(framework, options.signup),
        declared=options.routes,
        forward_auth=ForwardAuth(access, options.routes, options.dialect, options.unmatched),
        style=options.errors,
        proxies=Proxies(options.trusted),
        sessions=options.sessions,
    )
    return edge(router, ops, metrics)


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
        try:
            await app(scope, receive, send)  # the router notes the status in the scope
        finally:
            route = str(scope.get(ROUTE) or "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            status = str(scope.get(STATUS, 500))
            metrics.request_count(route, method, status).inc()
            metrics.request_time.observe(route, time.perf_counter() - started)

    return asgi
