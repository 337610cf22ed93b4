"""The api's HTTP/1.1 server protocol: uvicorn's httptools protocol with the edge's limits on a
request's head (SPEC E5; ADR 0013).

Why here: httptools (llhttp) gathers a whole request head before anything in the ASGI app can
look at it, and sets no limit on its size or on how long it takes; uvicorn arms no timer before
a connection's first request, nor while a head arrives. `edge_protocol(limits, style)` gives the
protocol class to pass as `uvicorn.Config(http=...)`.

Algorithm, per connection:
- Head size. The head's counted size is the exact sum of its URL and every header name and
  value; over `max_header_bytes`: 431. It is added up when the head is complete, unless the
  whole head came in one read no larger than the cap (then it cannot be over). A head still
  incomplete at the end of a read is held to its raw bytes, counted from the read after the
  one in which it began: over `2 * max_header_bytes`, 431 at once (a header that never ends).
  A head therefore holds at most the raw cap plus one read of the transport (at most 256 KiB).
- Head time. A timer runs from the connection's opening, and from the read in which a head
  began if the head is not complete at the end of that read, until the head is complete. On
  expiry: 408 if part of a head arrived, else the connection is closed. Bytes that begin no
  request (the CRLFs llhttp skips) on an idle connection arm it too: they cancel uvicorn's
  keep-alive timer, which could otherwise be kept off forever. While an earlier request of the
  connection is still being answered (pipelining) the client may be waiting for that answer:
  the timer is re-armed, not acted on.
- A last look. A timer that expires (this one, or uvicorn's keep-alive timer) first lets the
  event loop poll the sockets once more (`LAST_LOOK_S`) and only then acts: after a pause of
  the process (a GC, a VM or SIGSTOP), timers run before the reads that waited meanwhile, and
  a request that arrived in time would otherwise find its connection closed.
- Garbage. A parser error, or any failure while uvicorn turns a head into an ASGI scope (a raw
  URL without a path...): 400. (llhttp itself refuses a raw path that is not ASCII.)
- Answers. Each refusal is the catalog's (`ErrorStyle.raw`), negotiated from the headers seen
  so far, with `Connection: close`, and nothing more is parsed. Answers still due to earlier
  pipelined requests go first; an error in the body of a request whose answer has begun can
  only close the connection. Then our side is shut for writing and what the client still sends
  is read and dropped (at most LINGER_BYTES, for at most LINGER_S) so that it reads the answer
  rather than a reset.
- Cost. A request whose head arrives in one read no larger than the cap pays a few attribute
  writes and comparisons: no count, no timer.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from authbus_api.core.errors import Error
from authbus_api.http.errors import ErrorStyle, lower_headers
from authbus_api.http.limits import EdgeLimits

LINGER_S = 2.0
LAST_LOOK_S = 0.01  # an expired timer waits this (one poll of the sockets) before it acts
LINGER_BYTES = 1024 * 1024


class _HeadRefused(Exception):
    """Raised in a parser callback to stop the parser; the refusal is on the protocol."""


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing heads that are too large, too slow or malformed
    with the error catalog. Use a class from `edge_protocol`, which binds the limits."""

    _style: ClassVar[ErrorStyle]
    _max_head: ClassVar[int]
    _raw_cap: ClassVar[int]
    _head_timeout: ClassVar[float]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = False  # a request's head began and is not complete
        self._read_size = 0  # bytes of the read being parsed
        self._head_raw = 0  # its raw bytes after the read it began in (-1: in that read)
        self._head_timer: asyncio.TimerHandle | None = None
        self._looked = False  # the head timer expired once: this is its last look
        self._keep_alive_looked = False  # the same, for uvicorn's keep-alive timer
        self._refusal: Error | None = None  # why a parser callback stopped the parser
        self._refused = False  # answered (or about to be): nothing more is parsed
        self._pending: bytes | None = None  # a refusal waiting for earlier answers
        self._linger: asyncio.TimerHandle | None = None
        self._dropped = 0

    # the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._drop(len(data))
            return
        self._read_size = len(data)
        try:
            super().data_received(data)
        except Exception:  # outside the parser's own error path (send_400_response)
            self.logger.exception("HTTP request could not be read")
            self._refuse(Error.BAD_REQUEST)
            return
        if self._in_head:  # (a refusal ends the head)
            self._head_read(len(data))
        elif self._head_timer is None and not self._refused and self._idle():
            self._arm()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error (and to a callback that raised): the catalog's."""
        self._refuse(self._refusal or Error.BAD_REQUEST)

    def _complete(self) -> None:
        if self._pending is None or self.pipeline:
            super().on_response_complete()
            return
        self.server_state.total_requests += 1
        answer, self._pending = self._pending, None
        if not self.transport.is_closing():
            self._answer(answer)

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_raw = -1

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._disarm()
        if self._head_raw >= 0 or self._read_size > self._max_head:
            counted = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
            if counted > self._max_head:
                self._refusal = Error.HEADERS_TOO_LARGE
                raise _HeadRefused
        try:
            super().on_headers_complete()
        except Exception:
            self._refusal = Error.BAD_REQUEST
            raise

    # the head's limits

    def _head_read(self, size: int) -> None:
        """A read ended with a head still incomplete."""
        if self._head_raw < 0:
            self._head_raw = 0  # it began in this read: counted from the next one
        else:
            self._head_raw += size
            if self._head_raw > self._raw_cap:
                self._refuse(Error.HEADERS_TOO_LARGE)
                return
        if self._head_timer is None:
            self._arm()

    def _idle(self) -> bool:
        """No request of this connection is being read or answered."""
        cycle: RequestResponseCycle | None = self.cycle
        return cycle is None or cycle.response_complete

    def _arm(self) -> None:
        self._looked = False
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def timeout_keep_alive_handler(self) -> None:
        """uvicorn's keep-alive timer, after a last look at the socket."""
        if not self._keep_alive_looked:
            self._keep_alive_looked = True
            self.timeout_keep_alive_task = self.loop.call_later(
                LAST_LOOK_S, self.timeout_keep_alive_handler
            )
            return
        self._keep_alive_looked = False
        super().timeout_keep_alive_handler()

    def on_response_complete(self) -> None:
        self._keep_alive_looked = False  # uvicorn arms its keep-alive timer here
        self._complete()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if not self._looked:  # reads that waited behind this timer go first
            self._looked = True
            self._head_timer = self.loop.call_later(LAST_LOOK_S, self._head_timed_out)
            return
        if not self._idle():  # the client may be waiting for an earlier answer
            self._arm()
        elif self._in_head:
            self._refuse(Error.REQUEST_TIMEOUT)
        else:
            self.transport.close()

    # refusing

    def _refuse(self, error: Error) -> None:
        """Answer `error` from the catalog, after any answer still due, and close."""
        self._refused = True
        self._in_head = False
        self._disarm()
        if self.transport.is_closing():
            return
        headers: list[tuple[bytes, bytes]] | None = self.headers
        try:
            answer = self._style.raw(error, lower_headers(headers or ()))
        except Exception:  # a bug in rendering must not leave the connection open
            self.logger.exception("refusal could not be rendered")
            self.transport.close()
            return
        waiting = bool(self.pipeline)  # earlier requests whose answers are still due
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:  # it was read whole: the error is in a later request
                waiting = True
            elif waiting and self.pipeline[0][0] is cycle:  # queued, its body broken
                self.pipeline.popleft()  # never run it
            elif cycle.response_started:
                self.transport.close()
                return
            else:  # its body will never be whole: its app sees a disconnect
                cycle.disconnected = True
                cycle.message_event.set()
        if waiting:
            self._pending = answer
        else:
            self._answer(answer)

    def _answer(self, answer: bytes) -> None:
        self.transport.write(answer)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._linger = self.loop.call_later(LINGER_S, self.transport.close)

    def _drop(self, size: int) -> None:
        """Bytes after a refusal: read and dropped, up to a bound."""
        self._dropped += size
        if self._dropped > LINGER_BYTES and not self.transport.is_closing():
            self.transport.close()


def edge_protocol(limits: EdgeLimits, style: ErrorStyle) -> type[asyncio.Protocol]:
    """The protocol class to serve with, bound to `limits` and `style`:
    `uvicorn.Config(app, http=edge_protocol(limits, style), ...)`."""

    class BoundEdgeProtocol(EdgeProtocol):
        _style = style
        _max_head = limits.max_header_bytes
        _raw_cap = limits.raw_head_bytes
        _head_timeout = limits.header_timeout_s

    return BoundEdgeProtocol
