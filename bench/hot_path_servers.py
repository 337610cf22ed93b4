"""The servers `bench.api_hot_path` loads, each run in a child process of its own:

    python -m bench.hot_path_servers NAME PORT [UPSTREAM]

- `raw ASGI hello`: an ASGI callable answering "hello": the ceiling of one worker here.
- `bare FastAPI hello`: a FastAPI app with one route returning {"hello": "world"}.
- `gated forward-auth` and `gateway (proxied)`: the real api app (`build_http`, as
  `authbus_api.runner` builds it, with the api's own server protocol). Its declared route
  `/v1/things/{id}` needs the scope `read` and goes to UPSTREAM. The credential is in the
  verdict cache after the first request; the rate check runs on local leases of a per-account
  policy of 100,000,000 per minute, so nothing is refused; every request records its
  credential's use in the real usage reporter (never started: nothing is published). authz
  and the lease owner are in-memory stand-ins (no Kafka): the hot path asks neither.
- `plain httpx proxy` and `plain aiohttp proxy`: an ASGI app that sends every request on to
  UPSTREAM (with httpx, the issue's baseline; with aiohttp, the client the gateway uses, with
  its pool), streams the answer back and checks nothing: what the gateway costs beyond
  forwarding.

Every server runs under uvicorn as the api's runner configures it (`runner.http_config`):
uvloop, no access log, no proxy-header handling, no server header.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

import aiohttp
import httpx
import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from authbus_api.app import HttpOptions, build_http
from authbus_api.core.access import Principal
from authbus_api.core.freshness import Freshness, Trust
from authbus_api.core.quota import Quota
from authbus_api.core.rates import RatePolicy
from authbus_api.core.routing import RouteSpec, RouteTable
from authbus_api.core.verdict_cache import CredentialDigest, VerdictCache
from authbus_api.gate import Gate
from authbus_api.http.errors import ErrorStyle
from authbus_api.http.limits import EdgeLimits
from authbus_api.http.server import edge_protocol
from authbus_api.metrics import ApiMetrics
from authbus_api.proxy import AUTO_HEADERS, HOP_BY_HOP, KEEP_ALIVE_S, POOL_SIZE, Upstreams
from authbus_api.rate import RateLimiter
from authbus_api.usage import UsageReporter
from authbus_ratelimit.core.leases import LeaseBook
from authbus_shared.authz_client import AuthzKeys, Verdict
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialVerified,
    Outcome,
    SealedCredential,
)
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    ReleaseLease,
)
from authbus_shared.kafka.producer import Publisher
from authbus_shared.ops import ASGIApp, Probes, Receive, Scope, Send, ops_app

RAW = "raw ASGI hello"
FASTAPI = "bare FastAPI hello"
GATED = "gated forward-auth"
GATEWAY = "gateway (proxied)"
PROXY = "plain httpx proxy"
AIOHTTP_PROXY = "plain aiohttp proxy"
API = (GATED, GATEWAY)  # the rows served by the api app


async def raw_hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain")],
    }
    await send(start)
    await send({"type": "http.response.body", "body": b"hello"})


def fastapi_hello(upstream: str) -> ASGIApp:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


VALID = CredentialVerified(
    outcome=Outcome.VALID,
    account=AccountView(id="acc-bench", email="bench@example.com"),
    scopes=("read",),
    method=AuthMethod.TOKEN,
    credential_id="t-bench",
)


class StandInAuthz:
    """authz for the first (and only) cache miss."""

    async def verify(
        self,
        credential: SealedCredential,
        *,
        partition_key: bytes,
        client: str | None = None,
        within: timedelta | None = None,
    ) -> Verdict:
        return VALID


@dataclass
class StandInOwner:
    """The lease owner in memory (the real lease book)."""

    book: LeaseBook

    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        return self.book.acquire(ask, utcnow()).reply

    async def release(self, release: ReleaseLease) -> None:
        self.book.release(release, utcnow())


class NoUsage:
    def used(self, who: Principal, at: datetime) -> None:
        return None


class DroppedReports:
    """Where the usage reporter would publish; it is never started here, so nothing is."""

    async def publish(self, *args: object, **kwargs: object) -> None:
        return None


def usage_reporter() -> UsageReporter:
    """The api's real usage reporter (each request records its credential's use), not
    started: the hot path pays `used`, never a publish."""
    publisher = cast(Publisher, DroppedReports())
    return UsageReporter(
        publisher, topic="auth.usage.v1", instance_id="bench", interval=timedelta(seconds=1)
    )


def fresh_trust() -> Trust:
    """A changes feed that stays fresh (heartbeats stamped far ahead): the bench measures the
    freshness check, never a re-verification."""
    view = Freshness(partitions=3)
    for partition in range(3):
        view.heard(partition, datetime(2999, 1, 1, tzinfo=UTC))
    return Trust(view)


def gated_app(upstream: str) -> ASGIApp:
    """The api as `authbus_api.runner` builds it, on in-memory stand-ins for authz and the
    lease owner (the hot path asks neither)."""
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    lease = LeasePolicy(name="global", limit=100_000_000, window_s=60, lockout_s=60)
    gate = Gate(
        cache=VerdictCache(
            max_entries=100_000, ttl=timedelta(seconds=600), negative_ttl=timedelta(seconds=5)
        ),
        digest=CredentialDigest(),
        authz=StandInAuthz(),
        limiter=RateLimiter(Quota("bench"), StandInOwner(LeaseBook())),
        policies=(RatePolicy(lease, scope="account"),),
        usage=usage_reporter(),
        metrics=metrics,
        trust=fresh_trust(),  # the freshness check runs on every request, as in the api
    )
    route = RouteSpec("/v1/things/{id}", frozenset({"GET"}), upstream, scopes=frozenset({"read"}))
    options = HttpOptions(routes=RouteTable([route]), upstreams=Upstreams(10.0))
    return build_http(gate, AuthzKeys(), metrics, ops_app(registry, Probes()), options)


def plain_proxy(upstream: str) -> ASGIApp:
    """Every request sent on to `upstream` with httpx, the answer streamed back."""
    limits = httpx.Limits(
        max_connections=POOL_SIZE,
        max_keepalive_connections=POOL_SIZE,
        keepalive_expiry=KEEP_ALIVE_S,
    )  # the gateway's pool
    client = httpx.AsyncClient(base_url=upstream, timeout=10.0, limits=limits)

    async def proxy(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        query = scope["query_string"].decode("latin-1")
        url = scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        sent = [(k, v) for k, v in scope["headers"] if k not in (b"host", b"content-length")]
        outgoing = client.build_request(scope["method"], url, headers=sent)
        answer = await client.send(outgoing, stream=True)
        headers = [(k, v) for k, v in answer.headers.raw if k.lower().decode() not in HOP_BY_HOP]
        await send(
            {"type": "http.response.start", "status": answer.status_code, "headers": headers}
        )
        async for chunk in answer.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        await answer.aclose()

    return proxy


def plain_aiohttp_proxy(upstream: str) -> ASGIApp:
    """The same with aiohttp's client, as the gateway forwards (its pool and options)."""
    session: list[aiohttp.ClientSession] = []  # made in the server's loop

    async def proxy(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if not session:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=KEEP_ALIVE_S)
            session.append(aiohttp.ClientSession(connector=connector, auto_decompress=False))
        query = scope["query_string"].decode("latin-1")
        url = upstream + scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        sent = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k not in (b"host", b"content-length")
        ]
        async with session[0].request(
            scope["method"], url, headers=sent, skip_auto_headers=AUTO_HEADERS
        ) as answer:
            headers = [
                (k, v) for k, v in answer.raw_headers if k.lower().decode() not in HOP_BY_HOP
            ]
            start = {"type": "http.response.start", "status": answer.status, "headers": headers}
            await send(start)
            async for chunk in answer.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return proxy


SERVERS: dict[str, Callable[[str], ASGIApp]] = {
    RAW: lambda upstream: raw_hello,
    FASTAPI: fastapi_hello,
    GATED: gated_app,
    GATEWAY: gated_app,
    PROXY: plain_proxy,
    AIOHTTP_PROXY: plain_aiohttp_proxy,
}


def serve(name: str, port: int, upstream: str = "http://127.0.0.1:9") -> None:
    """One server; the api's with its own server protocol (the edge's head limits,
    `authbus_api.http.server`), as `authbus_api.runner` serves it."""
    protocol = edge_protocol(EdgeLimits(), ErrorStyle()) if name in API else "httptools"
    uvicorn.run(
        SERVERS[name](upstream),
        host="127.0.0.1",
        port=port,
        http=protocol,
        loop="uvloop",
        ws="none",
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
