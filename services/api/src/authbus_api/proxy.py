"""The gateway's forwarding (SPEC G2): a checked request goes on to its route's upstream.

- Bodies stream both ways (aiohttp's client): nothing is buffered whole. aiohttp, not httpx:
  through httpx the gateway topped out at a few hundred requests a second per process, its
  pool's bookkeeping growing with the requests in flight (`bench.api_hot_path`, issue #13).
- Nothing is added on the way: no `User-Agent`, `Accept`, `Accept-Encoding` or
  `Content-Type` of the client library's own, and bodies are passed as they are (no
  decompression).
- Hop-by-hop headers (RFC 9110 7.6.1: Connection and what it names, Keep-Alive, TE, Trailer,
  Transfer-Encoding, Upgrade, Proxy-*) are not forwarded, either way.
- The caller's credential (`Authorization`) does not reach the upstream; identity headers do
  (`X-Authbus-Account-Id`, `-Email`, `-Scopes`, `-Auth-Method`, `-Locale`), and any
  `X-Authbus-*` header a client sent is dropped first, so an upstream can trust them.
- `X-Forwarded-For` / `-Proto` / `-Host` say where the request came from.
- An upstream that does not answer in time, or cannot be reached, is a 503 from the catalog.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping

import aiohttp
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from yarl import URL

from authbus_api.core.access import Principal
from authbus_api.core.identity import identity_headers

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
IDENTITY_PREFIX = "x-authbus-"


class UpstreamFailed(Exception):
    """The upstream timed out or could not be reached."""


def _end_to_end(
    headers: Iterable[tuple[str, str]], connection: str | None
) -> list[tuple[str, str]]:
    named = {t.strip().lower() for t in (connection or "").split(",") if t.strip()}
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() not in named]


def upstream_headers(request: Request, who: Principal | None) -> list[tuple[str, str]]:
    """What the upstream gets: the client's end-to-end headers without its credential, its
    host or any identity header it made up; then who it is and where it came from."""
    dropped = {"authorization", "host", "content-length"}
    kept = [
        (k, v)
        for k, v in _end_to_end(request.headers.items(), request.headers.get("connection"))
        if k.lower() not in dropped
        and not k.lower().startswith(IDENTITY_PREFIX)
        and not k.lower().startswith("x-forwarded-")
    ]
    peer = request.client.host if request.client else ""
    prior = request.headers.get("x-forwarded-for")
    return [
        *kept,
        *(identity_headers(who).items() if who is not None else ()),
        ("X-Forwarded-For", f"{prior}, {peer}" if prior else peer),
        ("X-Forwarded-Proto", request.url.scheme),
        ("X-Forwarded-Host", request.headers.get("host", "")),
    ]


AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")  # never added
POOL_SIZE = 512  # connections to all upstreams together, kept alive while idle
KEEP_ALIVE_S = 30.0


class Upstreams:
    """One connection pool for every upstream (made on first use, in the running loop)."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=KEEP_ALIVE_S)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # the clients' cookies are theirs
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(
        self,
        request: Request,
        upstream: str,
        path: str,
        who: Principal | None,
        extra: Mapping[str, str],
    ) -> StreamingResponse:
        """Send the request on to `upstream` (base URL) at `path` (the normalised path the
        access decision matched: the one form judged is the one sent) with the query as the
        client sent it, and stream the answer back with `extra` headers (rate limits,
        deprecation) added."""
        url = upstream.rstrip("/") + path
        query = request.scope.get("query_string", b"").decode("latin-1")
        if query:
            url += "?" + query
        has_body = request.method not in ("GET", "HEAD", "OPTIONS", "DELETE") or (
            "content-length" in request.headers or "transfer-encoding" in request.headers
        )
        refused: list[Exception] = []  # why reading the client's body failed, if it did
        try:
            answer = await self._client().request(
                request.method,
                URL(url, encoded=True),  # sent as judged: no re-quoting
                headers=upstream_headers(request, who),
                data=_body(request, refused) if has_body else None,
                allow_redirects=False,
                skip_auto_headers=AUTO_HEADERS,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            if refused:  # the body's own refusal (a 413...), which aiohttp wraps: raised as is
                raise refused[0] from exc
            raise UpstreamFailed(f"{type(exc).__name__}: {upstream}") from exc
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.raw_headers]
        headers = _end_to_end(raw, answer.headers.get("connection"))
        response = StreamingResponse(
            _stream(answer), status_code=answer.status, background=BackgroundTask(_release, answer)
        )
        response.raw_headers = [
            *[
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in headers
                if k.lower() != "content-length"
            ],
            *[(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()],
        ]
        return response


async def _body(request: Request, refused: list[Exception]) -> AsyncIterator[bytes]:
    """The client's body as it arrives; an error reading it (the edge's body limits raise
    `BodyRefused`) is noted in `refused` before it goes on into aiohttp."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except Exception as exc:
        refused.append(exc)
        raise


async def _release(answer: aiohttp.ClientResponse) -> None:
    """After the answer (also when the client left mid-way and the stream was cancelled).
    A coroutine: Starlette runs a plain function in a worker thread, a thread hop per request."""
    answer.release()


async def _stream(answer: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, TimeoutError):
        return  # the upstream broke off mid-answer: end the body (the status is already out)
    finally:
        answer.release()  # back to the pool when read whole, else the connection is closed
