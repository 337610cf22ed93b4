"""Ctrl-C and SIGTERM: whatever the run is doing, everything it started is stopped.

Outside the event loop (starting and stopping processes) the signal raises KeyboardInterrupt
where the run is, and the `finally` blocks stop what was started. Inside the event loop a
KeyboardInterrupt raised at an arbitrary point can leave aiokafka half torn down: in trials a
SIGTERM during a baseline hung the run for good (a consumer's stop waited on a commit whose
connection task the interrupt had already killed). So there the signal cancels the main task
instead, its cleanups run with the loop and every connection still up, and KeyboardInterrupt
is raised once `asyncio.run` has returned. A cancellation swallowed on the way (a stop path
awaiting a task it cancelled) is caught at the next row by `check`. A signal ignored from the
start (SIGINT in a background job) stays ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine, Iterator
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"interrupted": False}


def _raise(signum: int, frame: FrameType | None) -> None:
    _state["interrupted"] = True
    raise KeyboardInterrupt


def _honoured() -> list[signal.Signals]:
    return [s for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]


def catch_interrupts() -> None:
    """Install the handler that raises KeyboardInterrupt (outside the event loop). Also keeps
    `asyncio.run` from installing its own SIGINT handler."""
    for sig in _honoured():
        signal.signal(sig, _raise)


def check() -> None:
    """Between rows: stop here if a signal came and its cancellation got lost."""
    if _state["interrupted"]:
        raise asyncio.CancelledError


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, where a signal cancels `main` and then raises KeyboardInterrupt."""
    try:
        result = asyncio.run(_cancelled_on_signal(main))
    except asyncio.CancelledError:
        if _state["interrupted"]:
            raise KeyboardInterrupt from None
        raise
    if _state["interrupted"]:
        raise KeyboardInterrupt
    return result


async def _cancelled_on_signal(main: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    sigs = _honoured()

    def on_signal() -> None:
        _state["interrupted"] = True
        if task is not None:
            task.cancel()

    for sig in sigs:
        loop.add_signal_handler(sig, on_signal)
    try:
        return await main
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
        catch_interrupts()


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Stopping what we started is not cut short by a second Ctrl-C."""
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
