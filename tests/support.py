"""Helpers the test tiers share (not fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from authbus_shared.contracts.envelope import Contract, Envelope, payload_of
from authbus_shared.contracts.topics import TopicSpec
from authbus_shared.kafka.admin import resolve
from authbus_shared.kafka.consumers import BroadcastReader
from authbus_shared.kafka.metrics import KafkaMetrics
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
