"""Rate limiting with quota leases, the async half: asks the owners what the core needs (ADR 0010).

`RateLimiter.admit` decides with the core (`core.quota.Quota`); a request whose leases have
units is decided with no await. Otherwise it sends the core's blocking asks concurrently over
the `Leases` port (the Kafka client in production, a twin in tests), one in flight per key:
concurrent requests of a key wait for the same ask, sent when the core says (`not_before`:
after an owner's recall delay, or at a window's end). An ask that times out puts its key in
fallback (R8). Answers to the owners' recalls (`Quota.recalled`, fed by the decisions
broadcast) are sent as soon as the core has them (`Quota.on_answer`). `tick` does the
background work: top-ups (`prefetch`), releases of idle slices, and the sweep; `run` repeats
it.

Rounds: a request decides again after each round of asks, telling the core since when it has
waited (the core refuses it once recalled units have not come back within its `ask_budget`).
Under a burst, the units a reply brings can go to other requests waiting on the same ask, and
a recall makes it ask again, so such rounds do not count; after `STALLED_ROUNDS` rounds in a
row with replies it cannot use (a window this host cannot spend in) the asks left are treated
as failed (fallback); after `MAX_ROUNDS` in all the request is refused for now (the owner does
answer: falling back would admit past the limit).

Order: the owner must read this instance's asks and releases of a key in the order the core
made them (ADR 0010, "Exact both ways", A1). Each is handed to the port in a task of its own,
created when the core made it, and neither awaits anything before the producer takes the
message; asyncio runs tasks in the order they were created, and one producer keeps that order
per partition. (An ask that first waits for `not_before` tells what the slice held when it was
made: stale, that can only leave units stranded, never give back units still spendable.)

Errors: `TimeoutError` (and `RpcTimeout`, its subclass) from the port means no reply in time;
any other exception propagates to the request that waited (and from `tick`, for top-ups).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from authbus_api.core.quota import Quota
from authbus_api.core.rates import Admit, Ask, Need, Outcome, Refuse, Unavailable
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.contracts.ratelimit import AcquireLease, LeaseGranted, ReleaseLease

STALLED_ROUNDS = 3
MAX_ROUNDS = 256  # a safety valve: a request served in turn needs far fewer


class Leases(Protocol):
    """The port to the keys' owners (ratelimit.leases.v1)."""

    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        """The owner's reply; raises `TimeoutError` when none comes in time."""
        ...

    async def release(self, release: ReleaseLease) -> None: ...


@dataclass
class RateLimiter:
    quota: Quota
    leases: Leases
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _flights: dict[str, asyncio.Task[Outcome]] = field(default_factory=dict, init=False, repr=False)
    _background: set[asyncio.Task[Any]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.quota.on_answer = self._answer_recalls

    async def admit(self, needs: Sequence[Need]) -> Admit | Refuse | Unavailable:
        """The request's verdict; one unit of every need is taken when it is `Admit`."""
        since = self.clock()
        decision = self.quota.decide(needs, since)
        if not isinstance(decision, Ask):
            return decision  # the hot path
        stalled = rounds = 0
        while True:
            if stalled >= STALLED_ROUNDS:
                return self._give_up(needs, decision)
            if rounds >= MAX_ROUNDS:
                return self.quota.refuse_waiting(needs, self.clock())
            flights = [self._flight(ask, decision.not_before) for ask in decision.asks]
            await asyncio.wait(flights)  # never cancels them: other requests may share them
            outcomes = [flight.result() for flight in flights]  # re-raises a flight's error
            rounds += 1
            stalled = stalled + 1 if all(o == "unusable" for o in outcomes) else 0
            decision = self.quota.decide(needs, self.clock(), since)
            if not isinstance(decision, Ask):
                return decision

    def _give_up(self, needs: Sequence[Need], ask: Ask) -> Admit | Refuse | Unavailable:
        now = self.clock()
        for pending in ask.asks:
            self.quota.ask_failed(pending.key, now)
        decision = self.quota.decide(needs, now)
        if isinstance(decision, Ask):  # cannot happen: every key asked for is in fallback
            raise RuntimeError(f"quota asks again after failing {decision.asks!r}")
        return decision

    def _flight(
        self, ask: AcquireLease, not_before: datetime | None = None
    ) -> asyncio.Task[Outcome]:
        """The task asking for `ask.key`: the one running, or a new one."""
        task = self._flights.get(ask.key)
        if task is None:
            task = asyncio.create_task(self._fly(ask, not_before), name=f"lease:{ask.key}")
            self._flights[ask.key] = task
        return task

    async def _fly(self, ask: AcquireLease, not_before: datetime | None) -> Outcome:
        """Send one ask and give its reply to the core; what it meant for the requests that
        wait on it (a top-up's reply is "wait": a request sharing it decides again)."""
        try:
            if not_before is not None:
                wait = (not_before - self.clock()).total_seconds()
                if wait > 0:
                    await self.sleep(wait)
            try:
                reply = await self.leases.acquire(ask)
            except TimeoutError:
                if ask.prefetch:
                    self.quota.prefetch_done(ask, None, self.clock())
                    return "wait"
                self.quota.ask_failed(ask.key, self.clock())
                return "none"
            if ask.prefetch:
                self.quota.prefetch_done(ask, reply, self.clock())
                return "wait"
            return self.quota.granted(ask, reply, self.clock())
        except BaseException:
            self.quota.abandon(ask.key)
            raise
        finally:
            if self._flights.get(ask.key) is asyncio.current_task():
                del self._flights[ask.key]

    async def tick(self) -> None:
        """One round of background work: start the top-ups due, give back idle slices, sweep.
        Raises the error of a top-up that failed other than by timing out."""
        self._reap(task for task in list(self._background) if task.done())
        now = self.clock()
        for ask in self.quota.prefetches(now):
            task = self._flight(ask)
            self._background.add(task)
        self._answer_recalls()
        releases = self.quota.releases(now)
        if releases:
            await asyncio.gather(*(self._release(r) for r in releases))
        self.quota.sweep(self.clock())

    def _answer_recalls(self) -> None:
        """Send the core's answers to recalls now (in the background: the port's release does
        not wait for the broker)."""
        for answer in self.quota.answers():
            task = asyncio.ensure_future(self._release(answer))
            self._background.add(task)

    async def _release(self, release: ReleaseLease) -> None:
        """A lost release only strands units until the window ends (the owner's count is
        never too low), so a timeout is not an error."""
        with contextlib.suppress(TimeoutError):
            await self.leases.release(release)

    def _reap(self, done: Iterable[asyncio.Task[Any]]) -> None:
        error: BaseException | None = None
        for task in done:
            self._background.discard(task)
            failure = None if task.cancelled() else task.exception()
            error = error or failure
        if error is not None:
            raise error

    async def run(self, every_s: float = 0.1) -> None:
        """`tick` forever, every `every_s` seconds."""
        while True:
            await self.tick()
            await self.sleep(every_s)
