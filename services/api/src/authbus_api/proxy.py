"""The gateway's forwarding (SPEC G2): a checked request goes on to its route's upstream.

- Bodies stream both ways (httpx): nothing is buffered whole.
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

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse

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


class Upstreams:
    """One connection pool for every upstream."""

    def __init__(self, timeout_s: float) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False
        )

    async def close(self) -> None:
        await self._client.aclose()

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
        outgoing = self._client.build_request(
            request.method,
            url,
            headers=upstream_headers(request, who),
            content=_body(request) if has_body else None,
        )
        try:
            answer = await self._client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamFailed(f"{type(exc).__name__}: {upstream}") from exc
        headers = _end_to_end(answer.headers.multi_items(), answer.headers.get("connection"))
        response = StreamingResponse(
            _stream(answer),
            status_code=answer.status_code,
            background=BackgroundTask(answer.aclose),
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


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def _stream(answer: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    except httpx.HTTPError:
        return  # the upstream broke off mid-answer: end the body (the status is already out)
