"""A bounded, open-loop load on the api instances, recorded request by request.

Each `Stream` sends at its own steady rate whatever the answers do (open loop: a frozen edge
shows as requests piling up, not as a client that politely waits), until the load is stopped,
its stream runs out, or the caps (`max_s`, `max_requests`) are reached. Every request goes to
127.0.0.1 only, names a client address of its own from the TEST-NET ranges (RFC 5737;
loopback is a trusted proxy, so per-client throttles see many clients), and has a timeout:
nothing waits for ever. The load runs in a thread with its own event loop, so a test drives
the fault with plain blocking calls meanwhile.

A `Record` per request: when it was sent (seconds since the load started), its kind, the api
instance, the status (0: no answer, `note` says why) and the latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from authbus_dev.fleet import Instance

TEST_NETS = ("192.0.2", "198.51.100", "203.0.113")


def client_address() -> str:
    """A documentation address (RFC 5737), a different client each time (nearly)."""
    return f"{random.choice(TEST_NETS)}.{random.randint(1, 254)}"


@dataclass(frozen=True)
class Shot:
    """One request to send: `api` is the index of the instance."""

    kind: str
    api: int
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    note: str = ""  # what the request was about (a token id), kept in its record
    keep: bool = False  # keep the answer's JSON body in the record (a created token)
    done: Callable[[int], None] | None = None  # told the status once answered (0: none)


@dataclass(frozen=True)
class Record:
    kind: str
    api: int
    sent_s: float
    status: int  # 0: no answer (timeout, refused connection...)
    latency_s: float
    note: str = ""
    body: dict[str, Any] | None = None

    @property
    def answered_s(self) -> float:
        return self.sent_s + self.latency_s


@dataclass
class Stream:
    """`per_s` requests a second, each from `next_shot` (None: the stream has run out)."""

    kind: str
    per_s: float
    next_shot: Callable[[], Shot | None]


class Load:
    """`with Load(apis, streams) as load:` sends until the block ends; then `load.records`.
    `load.mark(name)` starts a phase (the first, "before", starts with the load)."""

    def __init__(
        self,
        apis: list[Instance],
        streams: list[Stream],
        *,
        max_s: float = 90.0,
        max_requests: int = 5000,
        timeout_s: float = 10.0,
    ) -> None:
        self._urls = [a.url for a in apis]
        self._streams = streams
        self._max_s, self._max_requests, self._timeout_s = max_s, max_requests, timeout_s
        self.records: list[Record] = []
        self.marks: list[tuple[str, float]] = [("before", 0.0)]
        self._sent = 0
        self._started = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="fault-load", daemon=True)

    def now(self) -> float:
        """Seconds since the load started (the records' clock)."""
        return time.monotonic() - self._started

    def mark(self, phase: str) -> float:
        at = self.now()
        self.marks.append((phase, at))
        return at

    def __enter__(self) -> Load:
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError("the load did not start")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> list[Record]:
        """Stop sending, wait for the answers still due (each has its timeout), return all."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self._timeout_s + 10.0)
        if self._error is not None:
            raise RuntimeError("the load generator failed") from self._error
        return self.records

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by stop(), in the test's thread
            self._error = exc
            self._ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=self._timeout_s, limits=limits) as client:
            self._started = time.monotonic()
            self._ready.set()
            flying: set[asyncio.Task[None]] = set()
            await asyncio.gather(*(self._pace(s, client, flying) for s in self._streams))
            if flying:
                await asyncio.wait(flying)

    async def _pace(
        self, stream: Stream, client: httpx.AsyncClient, flying: set[asyncio.Task[None]]
    ) -> None:
        assert self._stop is not None
        period = 1.0 / stream.per_s
        ticks = 0
        while not self._stop.is_set() and self.now() < self._max_s:
            if self._sent >= self._max_requests:
                return
            shot = stream.next_shot()
            if shot is None:
                return
            self._sent += 1
            task = asyncio.create_task(self._fire(client, shot))
            flying.add(task)
            task.add_done_callback(flying.discard)
            ticks += 1
            delay = ticks * period - self.now()  # a steady schedule from the load's start
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.0)):
                    await self._stop.wait()

    async def _fire(self, client: httpx.AsyncClient, shot: Shot) -> None:
        headers = {"Accept": "application/json", "X-Forwarded-For": client_address()}
        sent = self.now()
        status, note, body = 0, shot.note, None
        try:
            answer = await client.request(
                shot.method,
                self._urls[shot.api] + shot.path,
                headers=headers | shot.headers,
                json=shot.body,
            )
            status = answer.status_code
            if shot.keep and answer.headers.get("content-type", "").startswith("application/json"):
                body = answer.json()
        except httpx.HTTPError as exc:
            note = f"{note} {type(exc).__name__}".strip()
        self.records.append(
            Record(shot.kind, shot.api, sent, status, self.now() - sent, note, body)
        )
        if shot.done is not None:
            shot.done(status)
