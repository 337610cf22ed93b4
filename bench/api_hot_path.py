"""The api's hot path against the framework it runs on (issue #5 item 9), in one run.

    .venv/bin/python -m bench.api_hot_path [--seconds 10] [--concurrency 32]

Three servers, each one uvicorn worker (uvloop, httptools, no access log) in its own process,
loaded one after the other by `hey` (Go, fetched into `.cache/go` by this script) from another
process for `--seconds` at `--concurrency` connections:
- `raw ASGI hello`: an ASGI callable answering "hello": the ceiling of one worker here.
- `bare FastAPI hello`: a FastAPI app with one route returning {"hello": "world"}.
- `gated forward-auth`: the real api app (`build_http`, as `authbus_api.runner` builds it)
  answering `GET /v0/forward-auth` in nginx's dialect for `GET /v1/things/42`, a declared
  route that needs the scope `read`, with a Bearer credential that is in its verdict cache
  (one warm-up request put it there), and the rate check on local leases of a per-account
  policy of 100,000,000 per minute so nothing is refused. authz and the lease owner are
  in-memory stand-ins (no Kafka): the hot path asks neither.
Every answer must be 200 (checked: hey's status histogram), else the row says so.

Printed per server: requests per second, p50 and p99 latency (hey's), and the ratios to the
bare FastAPI hello. Target (issue #5): the gated check at >= 1.0x the bare FastAPI hello's
requests per second, with p99 within 2x of it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

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
from authbus_api.rate import RateLimiter
from authbus_api.usage import UsageReporter
from authbus_dev.ports import free_port
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

REPO = Path(__file__).resolve().parents[1]
GO_CACHE = REPO / ".cache" / "go"
HEY = GO_CACHE / "bin" / "hey"
HEY_MODULE = "github.com/rakyll/hey@v0.1.4"
TOKEN = "bench-token"
FASTAPI = "bare FastAPI hello"
GATED = "gated forward-auth"
PATHS = {"raw ASGI hello": "/", FASTAPI: "/hello", GATED: "/v0/forward-auth"}
AUTH = {
    "Authorization": f"Bearer {TOKEN}",
    "X-Original-Method": "GET",  # nginx's auth_request dialect (the default)
    "X-Original-URI": "/v1/things/42?full=1",
}


# --- the servers (each in a child process: `python -m bench.api_hot_path serve NAME PORT`) ----


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


def fastapi_hello() -> ASGIApp:
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


def gated_app() -> ASGIApp:
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
    routes = RouteTable(
        [
            RouteSpec(
                "/v1/things/{id}", frozenset({"GET"}), "http://unused", scopes=frozenset({"read"})
            )
        ]
    )
    options = HttpOptions(routes=routes)
    return build_http(gate, AuthzKeys(), metrics, ops_app(registry, Probes()), options)


SERVERS: dict[str, Callable[[], ASGIApp]] = {
    "raw ASGI hello": lambda: raw_hello,
    FASTAPI: fastapi_hello,
    GATED: gated_app,
}


def serve(name: str, port: int) -> None:
    """One server; the gated one with the api's own server protocol (the edge's head limits,
    `authbus_api.http.server`), as `authbus_api.runner` serves it."""
    protocol = edge_protocol(EdgeLimits(), ErrorStyle()) if name == GATED else "httptools"
    uvicorn.run(
        SERVERS[name](),
        host="127.0.0.1",
        port=port,
        http=protocol,
        loop="uvloop",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


# --- the bench ------------------------------------------------------------------------------


def ensure_hey() -> Path:
    """hey from the Go module proxy, into the cache (skipped when present)."""
    if HEY.exists():
        return HEY
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is needed to fetch hey (the load generator)")
    env = os.environ | {
        "GOPATH": str(GO_CACHE / "path"),
        "GOMODCACHE": str(GO_CACHE / "mod"),
        "GOBIN": str(HEY.parent),
        "GOFLAGS": "-modcacherw",
    }
    subprocess.run([go, "install", HEY_MODULE], env=env, check=True, timeout=600)
    return HEY


def wait_up(port: int, path: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=2)
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} not up")


@dataclass(frozen=True)
class Load:
    seconds: float
    concurrency: int


def load(port: int, name: str, how: Load) -> dict[str, float]:
    """hey against one server: requests per second, p50/p99 ms, non-200 answers."""
    args = [str(ensure_hey()), "-z", f"{how.seconds}s", "-c", str(how.concurrency)]
    for key, value in (AUTH if name == GATED else {}).items():
        args += ["-H", f"{key}: {value}"]
    out = subprocess.run(
        [*args, f"http://127.0.0.1:{port}{PATHS[name]}"], capture_output=True, text=True, check=True
    ).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        if found is None:
            raise RuntimeError(f"hey printed no {pattern!r}:\n{out}")
        return float(found.group(1))

    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    return {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50": number(r"50% in ([\d.]+) secs") * 1000,
        "p99": number(r"99% in ([\d.]+) secs") * 1000,
        "non200": sum(int(n) for code, n in codes if code != "200"),
    }


def measure(name: str, how: Load) -> dict[str, float]:
    port = free_port()
    command = [sys.executable, "-m", "bench.api_hot_path", "serve", name, str(port)]
    server = subprocess.Popen(command, cwd=REPO)
    try:
        wait_up(port, PATHS[name], AUTH if name == GATED else {})  # gated: now in the cache
        load(port, name, Load(2, how.concurrency))  # warm-up, thrown away
        return load(port, name, how)
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        serve(args[1], int(args[2]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.api_hot_path")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    opts = parser.parse_args(args)
    how = Load(opts.seconds, opts.concurrency)
    ensure_hey()
    print(
        f"api hot path vs its framework: {os.cpu_count()} cores, Python {sys.version.split()[0]},"
        f" one uvicorn worker per server, hey {how.seconds:g} s at {how.concurrency} connections"
    )
    print(f"command: python -m bench.api_hot_path {' '.join(args)}\n")
    results = {name: measure(name, how) for name in SERVERS}
    base = results[FASTAPI]
    columns = ("req/s", "p50 ms", "p99 ms", "x FastAPI req/s", "x FastAPI p99", "non-200")
    print(f"{'server':<22}" + "".join(f"{c:>16}" for c in columns))
    for name, r in results.items():
        row = (
            f"{r['rps']:.0f}",
            f"{r['p50']:.2f}",
            f"{r['p99']:.2f}",
            f"{r['rps'] / base['rps']:.2f}",
            f"{r['p99'] / base['p99']:.2f}",
            f"{int(r['non200'])}",
        )
        print(f"{name:<22}" + "".join(f"{v:>16}" for v in row))
    gated = results[GATED]
    met = gated["rps"] >= base["rps"] and gated["p99"] <= 2 * base["p99"] and not gated["non200"]
    verdict = "met" if met else "MISSED"
    print(f"\ntarget (gated >= 1.0x the bare FastAPI hello's req/s, p99 <= 2x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
