"""Request bodies at the edge: a size limit per request and a minimum pace (SPEC E5; ADR 0013).

`limit_body(app, limits, style, max_body)` wraps an ASGI app; `max_body(scope)` is the limit of
this request (None: no limit on size; the pace still holds).

Algorithm, per HTTP request:
- The head is looked at once (one pass over the headers). No `Content-Length` (or 0) and no
  `Transfer-Encoding`: there is no body, and the app gets the request untouched.
- A `Content-Length` that is not plain decimal digits, or repeated, or beside a
  `Transfer-Encoding`: 400. One over the limit: 413, before a byte of the body is read (no
  `100 Continue` goes out). Both answers close the connection.
- Otherwise `receive` is wrapped. The bytes received are counted: over the limit (a body sent
  without length), 413. Each wait for the next piece is bounded by `body_idle_timeout_s` and by
  what is left of the body's budget: the time spent waiting for the body may not exceed
  `body_grace_s + received / body_min_rate_bytes_s`, so a body of N bytes keeps the edge waiting
  at most `grace + N / min_rate` seconds and a trickle is cut soon after the grace. Over either:
  408. Only waits in `receive` count: the time the app takes between two reads (an upstream
  slow to take a streamed body) is not the client's.
- Once the body is complete, `receive` is the server's own, with no timer: Starlette calls it
  concurrently to watch for a disconnect while it streams an answer.

Errors: a refusal while the app reads is raised from `receive` as `BodyRefused`. It is an
`HTTPException`, which FastAPI lets through when it reads a body (any other error becomes its
own 400); `install_body_handlers` makes a FastAPI app answer it with its catalog entry and
`Connection: close`. One that escapes the app before an answer began is answered here; after,
the connection can only be closed (the server does so when the exception reaches it). The
gateway's client (aiohttp) wraps an exception raised by a streamed request body; the gateway
raises the body's own exception again (`proxy._body`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from typing import cast

from fastapi import FastAPI
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import HTTPExceptionHandler

from authbus_api.core.errors import CATALOG, Error
from authbus_api.http.errors import ErrorStyle, lower_headers
from authbus_api.http.limits import EdgeLimits
from authbus_shared.ops import ASGIApp, Message, Receive, Scope, Send

MaxBody = Callable[[Scope], int | None]
CLOSE = {"Connection": "close"}
UNKNOWN_LENGTH = -1
_MAX_DIGITS = 18


class BodyRefused(HTTPException):
    """The request's body was refused; `error` is the catalog's entry (413, 408 or 400)."""

    def __init__(self, error: Error) -> None:
        entry = CATALOG[error]
        super().__init__(entry.status, entry.title, headers=CLOSE)
        self.error = error


def refusal_of(exc: BaseException) -> BodyRefused | None:
    """The body refusal an exception stands for: itself, its direct cause (a layer that wraps
    what it reads, as FastAPI does into a 400), or the only kind of error in a group."""
    if isinstance(exc, BodyRefused):
        return exc
    if isinstance(exc.__cause__, BodyRefused):
        return exc.__cause__
    if isinstance(exc, BaseExceptionGroup):
        refused, rest = exc.split(BodyRefused)
        if refused is not None and rest is None:
            leaf: BaseException = refused
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf if isinstance(leaf, BodyRefused) else None
    return None


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | Error | None:
    """The body a head announces: its length, UNKNOWN_LENGTH (a `Transfer-Encoding`), None (no
    body), or `Error.BAD_REQUEST` for a framing that cannot be trusted."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            if length is not None or not value.isdigit() or len(value) > _MAX_DIGITS:
                return Error.BAD_REQUEST
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    if chunked:
        return Error.BAD_REQUEST if length is not None else UNKNOWN_LENGTH
    return length or None


class _Body:
    """One request's body as the app reads it: counted, and each wait bounded."""

    __slots__ = ("_limit", "_limits", "_receive", "_send", "done", "received", "started", "waited")

    def __init__(self, receive: Receive, send: Send, limit: int | None, limits: EdgeLimits):
        self._receive = receive
        self._send = send
        self._limit = limit
        self._limits = limits
        self.received = 0
        self.waited = 0.0
        self.done = False
        self.started = False  # an answer began

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()
        limits = self._limits
        budget = limits.body_grace_s + self.received / limits.body_min_rate_bytes_s - self.waited
        wait = min(limits.body_idle_timeout_s, budget)
        if wait <= 0:
            raise BodyRefused(Error.REQUEST_TIMEOUT)
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with asyncio.timeout(wait) as timer:
                message = await self._receive()
        except TimeoutError:
            if timer.expired():
                raise BodyRefused(Error.REQUEST_TIMEOUT) from None
            raise
        finally:
            self.waited += loop.time() - began
        if message["type"] != "http.request":  # a disconnect
            self.done = True
            return message
        self.received += len(message.get("body", b""))
        if self._limit is not None and self.received > self._limit:
            raise BodyRefused(Error.BODY_TOO_LARGE)
        self.done = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def limit_body(app: ASGIApp, limits: EdgeLimits, style: ErrorStyle, max_body: MaxBody) -> ASGIApp:
    """`app` with request bodies held to a size (`max_body(scope)`) and a pace (`limits`)."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        declared = declared_length(scope["headers"])
        if declared is None:
            await app(scope, receive, send)
            return
        limit = max_body(scope)
        if isinstance(declared, Error) or (limit is not None and declared > limit):
            error = declared if isinstance(declared, Error) else Error.BODY_TOO_LARGE
            await style.send(send, error, lower_headers(scope["headers"]), close=True)
            return
        body = _Body(receive, send, limit, limits)
        try:
            await app(scope, body.receive, body.send)
        except Exception as exc:
            refused = refusal_of(exc)
            if refused is None or body.started:
                raise
            await style.send(send, refused.error, lower_headers(scope["headers"]), close=True)

    return asgi


def install_body_handlers(app: FastAPI, style: ErrorStyle) -> None:
    """Make `app` answer a `BodyRefused` with its catalog entry and `Connection: close`, also
    when it arrives as the cause of an `HTTPException`. Call it after the app's own handlers
    are registered (it wraps the `HTTPException` handler it finds) and before it serves."""
    previous = cast(
        HTTPExceptionHandler, app.exception_handlers.get(HTTPException, http_exception_handler)
    )

    async def on_refused(request: Request, exc: Exception) -> Response:
        refused = refusal_of(exc)
        if refused is None:  # an HTTPException with another cause: as before
            answer = previous(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        return style.response(refused.error, request, CLOSE)

    app.add_exception_handler(BodyRefused, on_refused)
    app.add_exception_handler(HTTPException, on_refused)
