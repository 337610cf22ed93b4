"""How requests are offered, and what comes out: closed and open loops, percentiles.

Closed loop: N workers, each sending its next request when its previous reply arrives. With 1
worker that is the unloaded latency; with 8 on 2 cores it is saturation (the loop sends as
fast as the system answers, so it measures throughput, and its latencies are mostly queueing).

Open loop: requests are sent on a schedule fixed in advance, whether or not earlier ones were
answered, as independent clients do. `poisson`: exactly rate x seconds send times drawn
uniformly over the stretch and sorted (a Poisson process conditioned on its count: random gaps,
bursts included, the offered rate exact); `fixed`: evenly spaced. Each latency runs from the
*scheduled* send time, so a sender held up by a slow system still charges the wait to the
system (no coordinated omission). Exception: the event loop's timers round up to the
millisecond, so the sender wakes up to 2 ms early and sends then; such a request is timed from
its actual send (with 1 ms, p99 of a constant 4 ms call read 0.5 ms high here).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Arrivals = Literal["poisson", "fixed"]

# One request, number i; True when the answer is the expected one.
Call = Callable[[int], Awaitable[bool]]

TIMER_SLACK_S = 0.002  # wake up this much early: asyncio's timers round up to the millisecond
KEEP_UP_SHARE = 0.95  # an open row keeps up when it completes at least this share of its rate
GROWTH, GROWTH_SLACK = 2.0, 2.0  # ... and its backlog did not grow (see falling_behind)


@dataclass(frozen=True)
class Closed:
    """A closed loop with `concurrency` requests in flight."""

    concurrency: int

    @property
    def label(self) -> str:
        return f"closed:{self.concurrency}"


@dataclass(frozen=True)
class Open:
    """An open loop offering `rate` requests per second."""

    rate: float
    arrivals: Arrivals = "poisson"

    @property
    def label(self) -> str:
        return f"open:{self.rate:g}/s"


Load = Closed | Open


@dataclass
class Sampled:
    latencies: list[float] = field(default_factory=list)  # seconds, one per completed request
    bad: int = 0
    elapsed: float = 0.0  # from the first send to the last reply
    in_flight: list[int] = field(default_factory=list)  # open loop: unanswered at each send
    late: list[float] = field(default_factory=list)  # open loop: sends behind schedule, seconds

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else 0.0


async def offer(call: Call, load: Load, seconds: float) -> Sampled:
    if isinstance(load, Closed):
        return await closed_loop(call, concurrency=load.concurrency, seconds=seconds)
    return await open_loop(call, schedule(load, seconds))


async def closed_loop(call: Call, *, concurrency: int, seconds: float) -> Sampled:
    """`concurrency` workers, each sending its next request when its previous one is answered,
    until `seconds` have passed (requests in flight then are waited for and counted)."""
    numbers = itertools.count()
    sampled = Sampled()
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            ok = await call(next(numbers))
            sampled.latencies.append(time.perf_counter() - sent)
            sampled.bad += not ok

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sampled.elapsed = time.perf_counter() - started
    return sampled


def schedule(load: Open, seconds: float) -> list[float]:
    """Send times, in seconds from the start of the stretch (see the module docstring)."""
    count = max(1, round(load.rate * seconds))
    if load.arrivals == "fixed":
        return [i / load.rate for i in range(count)]
    return sorted(random.uniform(0.0, seconds) for _ in range(count))


async def open_loop(call: Call, send_times: Sequence[float]) -> Sampled:
    """Send request i at `send_times[i]` whatever came back; wait for the last replies."""
    sampled = Sampled()
    in_flight: set[asyncio.Task[None]] = set()
    started = time.perf_counter() + TIMER_SLACK_S

    async def one(i: int, due: float) -> None:
        ok = await call(i)
        sampled.latencies.append(time.perf_counter() - due)
        sampled.bad += not ok

    try:
        for i, offset in enumerate(send_times):
            due = started + offset
            ahead = due - time.perf_counter() - TIMER_SLACK_S
            if ahead > 0:
                await asyncio.sleep(ahead)
            now = time.perf_counter()
            sampled.late.append(max(0.0, now - due))
            sampled.in_flight.append(len(in_flight))
            task = asyncio.create_task(one(i, min(due, now)))  # early: from the send
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
    finally:  # cancelled (Ctrl-C): no request outlives the row
        for task in in_flight:
            task.cancel()
    sampled.elapsed = time.perf_counter() - started
    return sampled


def falling_behind(sampled: Sampled, load: Load) -> str | None:
    """Why an open loop's system did not keep up with the offered rate, or None if it did:
    it completed less than 95% of the rate (replies drained long after the last send), or a
    backlog grew: the requests in flight at a send, averaged over the last quarter of the
    sends, were more than 2 + twice their average over the first quarter."""
    if not isinstance(load, Open):
        return None
    share = sampled.rate / load.rate
    quarter = max(1, len(sampled.in_flight) // 4)
    first = statistics.fmean(sampled.in_flight[:quarter] or [0])
    last = statistics.fmean(sampled.in_flight[-quarter:] or [0])
    if share >= KEEP_UP_SHARE and last <= GROWTH * first + GROWTH_SLACK:
        return None
    return f"BEHIND: {100 * share:.0f}% of offered, in flight {first:.1f} -> {last:.1f}"


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples (q in (0, 1])."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
