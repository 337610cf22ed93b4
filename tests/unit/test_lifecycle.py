"""Stopping on a signal (SPEC S5: SIGTERM drains and exits 0), including one that arrives
before the service is waiting for it."""

from __future__ import annotations

import asyncio
import os
import signal

from authbus_shared.lifecycle import StopSignals, until_stopped


async def test_a_signal_before_the_wait_is_kept_not_the_default_kill() -> None:
    stop = StopSignals.install()
    forever = asyncio.create_task(asyncio.Event().wait())
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # still starting: nobody waits yet
        await asyncio.sleep(0)

        why = await until_stopped(stop, forever)
    finally:
        stop.uninstall()
        forever.cancel()

    assert why == "SIGTERM"


async def test_a_part_that_ends_first_is_a_failure() -> None:
    stop = StopSignals.install()
    try:
        why = await until_stopped(stop, asyncio.create_task(asyncio.sleep(0)))
    finally:
        stop.uninstall()

    assert why == "failed"
