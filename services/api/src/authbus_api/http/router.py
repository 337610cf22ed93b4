"""The api's HTTP entry after the ops endpoints: every request is read once (`request.py`),
routed once on its normalised path (`core/access.py`), and handed to the one adapter its
route belongs to. No adapter decides access on its own.

- `/v0/forward-auth` (in Envoy's dialect also `/v0/forward-auth/<original path>`): forward
  auth (`forward_auth.py`), answered here without the framework.
- a declared route (the routes file): the gateway. The access decision, then the upstream.
- one of the api's own routes (`/v0/...`, the JWKS, the API docs): the FastAPI app, with the
  path rewritten to its normalised form (no `%2F` survives normalisation, so decoding it is
  unambiguous), so the framework routes what was judged. `HEAD` reaches it as `GET`; the
  server, whose scope still says `HEAD`, sends no body.
- the settings pages (`/settings`, ADR 0018) are own routes too, with one difference: their
  credential is the session cookie, never `Authorization` (`core/sessions.py`), and a page
  without a valid session is sent to the sign-in form instead of a 401.
- anything else: the catalog's 400, 404 or 405 (with `Allow`) in the negotiated shape.

A failure of an adapter (a bug) is a 500 from the catalog with a request id, when no answer
has started yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import structlog
from starlette.requests import Request

from authbus_api.access import ANONYMOUS, Access, Admitted
from authbus_api.core.access import Denied, Principal, Routed, route_path
from authbus_api.core.client_address import Proxies
from authbus_api.core.errors import Error
from authbus_api.core.paths import normalise
from authbus_api.core.routing import RouteTable
from authbus_api.core.sessions import SIGN_IN, Sessions, owns
from authbus_api.http.errors import ErrorStyle, lower_headers
from authbus_api.http.forward_auth import FORWARD_AUTH, ForwardAuth
from authbus_api.http.request import Facts, read
from authbus_api.proxy import UpstreamFailed, Upstreams
from authbus_shared.ops import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)
ROUTE = "authbus.route"  # scope key: the route template, for metrics (never the raw path)
ROUTED = "authbus.routed"  # scope key: the `Routed` value
FACTS = "authbus.facts"  # scope key: the request's `Facts`
ADMITTED = "authbus.admitted"  # scope key: the `Admitted` value (the api's own routes)
STATUS = "authbus.status"  # scope key: the answer's status once it started, for metrics


@dataclass
class Router:
    framework: ASGIApp  # the api's own routes
    gateway: ASGIApp  # declared routes, after `Router` has routed them (see `Gateway`)
    access: Access
    own: RouteTable
    declared: RouteTable
    forward_auth: ForwardAuth
    style: ErrorStyle
    proxies: Proxies
    sessions: Sessions = field(default_factory=Sessions)

    def __post_init__(self) -> None:
        self._table = self.own + self.declared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.framework(scope, receive, send)
            return

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                scope[STATUS] = message["status"]
            await send(message)

        try:
            await self._dispatch(scope, receive, tracked)
        except Exception:
            log.exception("request failed", path=scope.get("path"))
            if STATUS not in scope:
                scope[STATUS] = 500
                await self.style.send(send, Error.INTERNAL, lower_headers(scope["headers"]))

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        facts = read(scope, self.proxies)
        if isinstance(facts, Denied):  # still answered in the shape the client asked for
            await self._deny(send, facts, lower_headers(scope["headers"]))
            return
        path = normalise(facts.raw_path)
        if path is not None and self.forward_auth.serves(path):
            scope[ROUTE] = FORWARD_AUTH
            await self._forward_auth(facts, send)
            return
        routed = route_path(self._table, facts.method, path)
        if isinstance(routed, Denied):
            await self._deny(send, routed, facts.headers)
            return
        scope[ROUTE] = routed.route.template
        scope[ROUTED] = routed
        scope[FACTS] = facts
        if routed.route.upstream is not None:
            await self.gateway(scope, receive, send)
            return
        await self._own(scope, receive, send, routed, facts)

    async def _own(
        self, scope: Scope, receive: Receive, send: Send, routed: Routed, facts: Facts
    ) -> None:
        """One of the api's own routes: the access decision, then the framework, which finds
        who was let through in the scope (`admitted`) and answers with the rate headers."""
        credential = self.sessions.authorization(routed.path, facts.headers)
        admitted = await self.access.admit(routed, credential, facts.client)
        if isinstance(admitted, Denied):
            if owns(routed.path) and admitted.error in ANONYMOUS:  # no valid session
                await self._sign_in_again(send)
                return
            await self._deny(send, admitted, facts.headers)
            return
        who = admitted.allowed.principal
        own = {
            **scope,
            "path": unquote(routed.path),
            "raw_path": routed.path.encode("latin-1"),
            ADMITTED: admitted,
            "state": {**scope.get("state", {}), "account_locale": who and who.account.locale},
        }
        if facts.method == "HEAD":  # the framework's GET answers; the server sends no body
            own["method"] = "GET"
        await self.framework(own, receive, _with_headers(send, admitted.headers))

    async def _sign_in_again(self, send: Send) -> None:
        """A settings page without a valid session: to the sign-in form (303), dropping the
        cookie (expired, revoked, or never there)."""
        headers = [
            (b"location", SIGN_IN.encode()),
            (b"set-cookie", self.sessions.clear_session().encode()),
            (b"cache-control", b"no-store"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _forward_auth(self, facts: Facts, send: Send) -> None:
        headers, denied = await self.forward_auth.decide(facts)
        if denied is not None:
            await self._deny(send, denied, facts.headers)
            return
        raw = [(b"content-length", b"0")]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": b""})

    async def _deny(self, send: Send, denied: Denied, headers: dict[str, str]) -> None:
        await self.style.send(
            send,
            denied.error,
            headers,
            denied.headers,
            account_locale=denied.locale,
            shape=denied.shape,
        )


@dataclass
class Gateway:
    """A declared route (E4, G2), routed by `Router`: the credential, scopes and rate
    policies (`Access`), then the upstream, streaming both ways."""

    access: Access
    upstreams: Upstreams | None
    style: ErrorStyle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        routed: Routed = scope[ROUTED]
        facts: Facts = scope[FACTS]
        admitted = await self.access.admit(routed, facts.headers.get("authorization"), facts.client)
        if isinstance(admitted, Denied):
            await self._deny(send, admitted, facts)
            return
        upstream = routed.route.upstream
        shape = routed.route.error_shape
        if self.upstreams is None or upstream is None:
            await self._deny(send, Denied(Error.UNAVAILABLE, {"Retry-After": "1"}, shape), facts)
            return
        who = admitted.allowed.principal
        try:
            response = await self.upstreams.forward(
                Request(scope, receive), upstream, routed.path, who, admitted.headers
            )
        except UpstreamFailed as exc:
            log.warning("upstream failed", route=routed.route.template, error=str(exc))
            refusal = Denied(Error.UNAVAILABLE, {"Retry-After": "1", **admitted.headers}, shape)
            await self._deny(send, refusal, facts, who.account.locale if who else None)
            return
        await response(scope, receive, send)

    async def _deny(
        self, send: Send, denied: Denied, facts: Facts, locale: str | None = None
    ) -> None:
        await self.style.send(
            send,
            denied.error,
            facts.headers,
            denied.headers,
            account_locale=denied.locale or locale,
            shape=denied.shape,
        )


def _with_headers(send: Send, headers: Mapping[str, str]) -> Send:
    """`send`, adding `headers` (rate limits, deprecation) to the answer's start."""
    if not headers:
        return send
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending


def admitted_of(scope: Scope) -> Admitted:
    """Who `Router` let through to one of the api's own routes."""
    found = scope.get(ADMITTED)
    if not isinstance(found, Admitted):
        raise RuntimeError("an own route reached without the access decision")
    return found


def principal_of(scope: Scope) -> Principal:
    """The caller of an own route that needs a credential."""
    who = admitted_of(scope).allowed.principal
    if who is None:
        raise RuntimeError("a route without a credential asked for its caller")
    return who


def facts_of(scope: Scope) -> Facts:
    """The request as `Router` read it (`http/request.py`)."""
    facts = scope.get(FACTS)
    if not isinstance(facts, Facts):
        raise RuntimeError("a request reached without its facts")
    return facts


def client_of(scope: Scope) -> str:
    """The real client's address, as `Router` read it (`http/request.py`)."""
    return facts_of(scope).client
