"""Run a service until SIGTERM or SIGINT, then stop its parts in reverse order."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import structlog

log = structlog.get_logger(__name__)


SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """SIGTERM and SIGINT as a request to stop, from the moment `install` is called: the first
    thing a service's `run` does. A signal that arrives while the service is still starting
    (its probes may already answer) or is already stopping then never means the default,
    instant kill: the service drains and exits 0."""

    def __init__(self) -> None:
        self._first: asyncio.Future[signal.Signals] = asyncio.get_running_loop().create_future()

    @classmethod
    def install(cls) -> StopSignals:
        stop = cls()
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, stop._on_signal, sig)
        return stop

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self._first.done():
            self._first.set_result(sig)

    async def wait(self) -> signal.Signals:
        """The first signal received (waits for one)."""
        return await asyncio.shield(self._first)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


async def until_stopped(stop: StopSignals, *parts: asyncio.Task[Any]) -> str:
    """Wait for a stop signal, or for one of `parts` (long-running tasks of the service) to
    end, whichever comes first. Returns why: the signal's name, or `failed`. The parts are left
    running: the caller stops them in order."""
    signalled = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([signalled, *parts], return_when=asyncio.FIRST_COMPLETED)
    if signalled in done:
        return signalled.result().name
    signalled.cancel()
    ended = done.pop()
    error = None if ended.cancelled() else ended.exception()
    log.error("a part of the service ended", part=ended.get_name(), error=repr(error))
    return "failed"
