"""Run a service until SIGTERM or SIGINT, then stop its parts in reverse order."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def wait_for_stop_signal() -> signal.Signals:
    """Wait for SIGTERM or SIGINT; returns which."""
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []
    arrived = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        arrived.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await arrived.wait()
        return received[0]
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def until_stopped(*parts: asyncio.Task[Any]) -> str:
    """Wait for a stop signal, or for one of `parts` (long-running tasks of the service) to
    end, whichever comes first. Returns why: the signal's name, or `failed`. The parts are left
    running: the caller stops them in order."""
    signalled = asyncio.ensure_future(wait_for_stop_signal())
    done, _ = await asyncio.wait([signalled, *parts], return_when=asyncio.FIRST_COMPLETED)
    if signalled in done:
        return signalled.result().name
    signalled.cancel()
    ended = done.pop()
    error = None if ended.cancelled() else ended.exception()
    log.error("a part of the service ended", part=ended.get_name(), error=repr(error))
    return "failed"
