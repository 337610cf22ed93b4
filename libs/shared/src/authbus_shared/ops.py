"""Probes and metrics (SPEC S5): `/metrics`, `/healthz` (alive), `/readyz` (ready).

`Probes` gathers named checks. Alive: the process's loops are running (else restart it).
Ready: connected, and caught up on the topics it must have read (else keep traffic away).
The api serves `ops_app` beside its routes; headless services (authz, ratelimit) serve it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], bool]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPS_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


class Probes:
    def __init__(self) -> None:
        self._live: dict[str, Check] = {}
        self._ready: dict[str, Check] = {}
        self.stopping = False

    def live(self, name: str, check: Check) -> None:
        self._live[name] = check

    def ready(self, name: str, check: Check) -> None:
        self._ready[name] = check

    def liveness(self) -> tuple[bool, dict[str, bool]]:
        return _run(self._live)

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        ok, results = _run(self._ready)
        results["not_stopping"] = not self.stopping
        return ok and not self.stopping, results


def _run(checks: dict[str, Check]) -> tuple[bool, dict[str, bool]]:
    results = {name: bool(check()) for name, check in checks.items()}
    return all(results.values()), results


async def respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def ops_app(registry: CollectorRegistry, probes: Probes) -> ASGIApp:
    """A raw ASGI app for the three ops paths (anything else: 404)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        if path == "/metrics":
            await respond(send, 200, generate_latest(registry), CONTENT_TYPE_LATEST)
            return
        if path == "/healthz":
            ok, checks = probes.liveness()
        elif path == "/readyz":
            ok, checks = probes.readiness()
        else:
            await respond(send, 404, b'{"error":"not found"}', "application/json")
            return
        body = orjson.dumps({"ok": ok, "checks": checks})
        await respond(send, 200 if ok else 503, body, "application/json")

    return app


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our own event loop: the service's lifecycle owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def start_http(config: uvicorn.Config) -> tuple[EmbeddedServer, asyncio.Task[None]]:
    """Start serving; returns once the socket is bound (raises if it cannot bind)."""
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(), name=f"http-{config.port}")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"HTTP server on port {config.port} stopped at start")
        await asyncio.sleep(0.01)
    return server, task


async def stop_http(server: EmbeddedServer, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await task


def ops_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )


class Watch:
    """Runs an async health check every `interval_s` (e.g. a database ping); `ok` holds the
    last result, so probes stay cheap and synchronous."""

    def __init__(self, check: Callable[[], Awaitable[object]], interval_s: float = 5.0) -> None:
        self._check = check
        self._interval = interval_s
        self.ok = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._probe()
        self._task = asyncio.create_task(self._loop(), name="watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._probe()

    async def _probe(self) -> None:
        try:
            async with asyncio.timeout(self._interval):
                await self._check()
        except Exception:  # any failure means "not ok"; the check's owner logs details
            self.ok = False
        else:
            self.ok = True
