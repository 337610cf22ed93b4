"""Helpers the test tiers share (not fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import h11
import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from authbus_dev.ports import free_port
from authbus_shared.contracts.envelope import Contract, Envelope, payload_of
from authbus_shared.contracts.topics import TopicSpec
from authbus_shared.kafka.admin import resolve
from authbus_shared.kafka.consumers import BroadcastReader
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.ops import ASGIApp
from authbus_shared.settings import KafkaSettings


async def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Wait until `check()` holds (a TimeoutError fails the test)."""
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.02)


async def wait_ready(port: int, task: asyncio.Task[Any], timeout_s: float = 30.0) -> None:
    async with httpx.AsyncClient() as client, asyncio.timeout(timeout_s):
        while True:
            if task.done():
                task.result()
                raise AssertionError("service ended during start")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def in_process(
    service: Coroutine[Any, Any, int], ops_port: int
) -> AsyncIterator[asyncio.Task[int]]:
    """Run a service's `run(settings)` in this event loop until the block ends."""
    task = asyncio.create_task(service)
    try:
        await wait_ready(ops_port, task)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def collected(kafka: KafkaSettings, spec: TopicSpec) -> AsyncIterator[list[Contract]]:
    """Every payload on a topic (from its beginning), as it arrives."""
    seen: list[Contract] = []

    async def handle(envelope: Envelope) -> None:
        seen.append(payload_of(envelope))

    reader = BroadcastReader(
        kafka,
        topics=[resolve(spec, kafka).name],
        handler=handle,
        metrics=KafkaMetrics("test", CollectorRegistry()),
        client_id="test-collector",
        start_at="beginning",
    )
    await reader.start()
    try:
        yield seen
    finally:
        await reader.stop()


def _server(app: ASGIApp) -> tuple[uvicorn.Server, str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    return uvicorn.Server(config), f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """`app` as a real HTTP server on a free loopback port, in this event loop: its base URL."""
    server, url = _server(app)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        await task


@contextlib.contextmanager
def serving_in_thread(app: ASGIApp) -> Iterator[str]:
    """The same from synchronous code: the server runs in a thread of its own."""
    server, url = _server(app)
    thread = threading.Thread(target=server.run, name=f"serving {url}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    try:
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), f"{url} did not start"
            time.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_http(
    base_url: str,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    timeout_s: float = 10.0,
) -> RawAnswer:
    """One HTTP/1.1 request with the request target exactly as given (HTTP clients would
    normalise `..`, `//` or escapes before sending), read with h11."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    conn = h11.Connection(h11.CLIENT)
    sent = [("Host", f"{host}:{port}"), ("Connection", "close"), *headers]
    if body:
        sent.append(("Content-Length", str(len(body))))
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(conn.send(h11.Request(method=method, target=target, headers=sent)))
            if body:
                writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            return await read_answer(conn, reader)
        finally:
            writer.close()


async def read_answer(conn: h11.Connection, reader: asyncio.StreamReader) -> RawAnswer:
    """The answer to a request sent through `conn`, read from `reader`."""
    status, found, parts = 0, dict[str, str](), list[bytes]()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            for name, value in event.headers:
                key = name.decode().lower()
                found[key] = f"{found[key]}, {value.decode()}" if key in found else value.decode()
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return RawAnswer(status, found, b"".join(parts))
