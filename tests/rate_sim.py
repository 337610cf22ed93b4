"""An in-memory deployment of the rate limiter, for property tests (ADR 0010, SPEC R9).

The real owner (`LeaseHandlers` around `LeaseBook`) and N real api holders (`Quota`,
`RateLimiter`, `Views.on_decision`) on a bus that behaves like Kafka as far as the algorithm
relies on it, on virtual time (tests/virtual_time.py):
- the leases log: each producer's messages arrive in the order it sent them (one producer, one
  partition: Kafka's idempotent producer), after a random latency; across producers, any
  interleaving; the broker stamps the arrival time (LogAppendTime);
- the owner reads the log in order, one message at a time; a reply goes back after a random
  latency, only while the asker still waits, and may be lost; broadcasts (locks, recalls) reach
  every holder after a random latency each, in order per holder;
- an owner restart drops its book and replays the whole log into a fresh one;
- a paused holder does nothing (no request decided, no broadcast read, no background work,
  replies held back) until it resumes.

Every decision is recorded with a global sequence number, so a test can tell what the global
admitted count of a window was at the moment of each refusal. A "disturbance" is anything that
can keep a holder from answering a recall within the ask budget: a pause, a slow hop (spike),
an owner that is down.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from authbus_api.core.quota import Quota
from authbus_api.core.rates import Admit, Need, RatePolicy, Refuse
from authbus_api.core.verdict_cache import VerdictCache
from authbus_api.metrics import ApiMetrics
from authbus_api.rate import RateLimiter
from authbus_api.views import Views
from authbus_ratelimit.core.leases import LeaseBook
from authbus_ratelimit.handlers import LeaseHandlers
from authbus_ratelimit.metrics import RatelimitMetrics
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.contracts.envelope import Contract, Envelope, ReplyTo, payload_of, wrap
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    ReleaseLease,
    StrikeRecorded,
    SubjectLocked,
)
from authbus_shared.kafka.producer import Key
from tests.unit.core.support import T0

SUBJECT = "acct:sim"
BUDGET_S = 0.2  # the api's ask timeout (ask_timeout_ms): an ask's deadline, a recall's budget
DECISIONS, LEASES = "ratelimit.decisions.v1", "ratelimit.leases.v1"


@dataclass(frozen=True)
class Knobs:
    """The shape of one run."""

    instances: int
    limit: int
    window_s: int
    lockout_s: int
    windows: int  # how many windows of traffic
    per_window: int  # arrivals per window
    burst: int  # requests per arrival, back to back (large limits)
    uneven: bool  # 80% of the traffic on instance 0
    latency_ms: tuple[float, float]  # one hop, uniform
    spike: float  # probability that a hop takes 50-400 ms instead
    lost_replies: float
    pauses: int  # holders paused once each, for 0.1-3 s
    restarts: int  # owner crashes, each replayed into a fresh book

    @property
    def policy(self) -> RatePolicy:
        lease = LeasePolicy(
            name="sim",
            limit=self.limit,
            window_s=self.window_s,
            lockout_s=self.lockout_s,
            lockout_cap_s=4 * self.lockout_s,
            strike_memory_s=10 * self.lockout_s,
        )
        return RatePolicy(lease, scope="account", fail_mode="closed")


@dataclass(frozen=True)
class Decided:
    seq: int
    at: float
    holder: str
    kind: str  # admit, refuse, locked, unavailable
    reset_at: datetime | None  # admit / refuse: the window's end; locked: the lock's end
    stranded: int = 0  # refuse: units of the window out at holders, not admitted
    waited: float = 0.0  # how long the request waited for its verdict


@dataclass(frozen=True)
class Breach:
    seq: int
    at: datetime
    until: datetime


class Sim:
    def __init__(self, knobs: Knobs, rng: random.Random) -> None:
        self.knobs, self.rng = knobs, rng
        self.loop = asyncio.get_running_loop()
        self.key = knobs.policy.key(SUBJECT)
        self.log: list[tuple[Envelope, float]] = []
        self.pending: dict[str, tuple[asyncio.Future[LeaseGranted], Holder]] = {}
        self.decided: list[Decided] = []
        self.breaches: list[Breach] = []
        self.disturbances: list[tuple[float, float]] = []
        self.shadow = LeaseBook()  # every record once, in order, never restarted
        self.windows: dict[datetime, datetime] = {}  # the owner's windows: start -> end
        self.admitted: dict[datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.holders = [Holder(self, f"api-{i}") for i in range(knobs.instances)]
        self.owner = Owner(self)
        self._seq = 0

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.loop.time())

    def hop(self) -> float:
        if self.rng.random() < self.knobs.spike:
            slow = self.rng.uniform(0.05, 0.4)
            self.disturbances.append((self.loop.time(), self.loop.time() + slow))
            return slow
        low, high = self.knobs.latency_ms
        return self.rng.uniform(low, high) / 1000

    def seq(self) -> int:
        self._seq += 1
        return self._seq

    def append(self, envelope: Envelope) -> None:
        """The broker appends a record to the leases log, stamped with its time."""
        self.log.append((envelope, self.loop.time()))
        message = payload_of(envelope)
        if isinstance(message, AcquireLease):
            reply = self.shadow.acquire(message, self.now()).reply
            self.windows[reply.window_start] = reply.window_end
        elif isinstance(message, ReleaseLease):
            self.shadow.release(message, self.now())
        elif isinstance(message, StrikeRecorded):
            self.shadow.strike_recorded(message)
        self.owner.wake.set()

    def record(self, holder: str, kind: str, reset_at: datetime | None, began: float = 0.0) -> None:
        stranded = 0
        if kind == "admit" and reset_at is not None:
            self.admitted[reset_at][holder] += 1
        elif kind == "refuse":
            stranded = self._stranded()
        now = self.loop.time()
        decided = Decided(self.seq(), now, holder, kind, reset_at, stranded, now - began)
        self.decided.append(decided)

    def _stranded(self) -> int:
        """Units of the current window allocated to holders and not admitted by them."""
        end = self.windows.get(self.shadow.window_start(self.key) or T0)
        counts = self.admitted.get(end, {}) if end is not None else {}
        return sum(
            max(0, allocated - counts.get(holder, 0))
            for holder, (allocated, _) in self.shadow.holdings(self.key).items()
        )


class Owner:
    """The key's owner (the real handlers, on twin ports); `crash` restarts it with a replay."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.handlers = LeaseHandlers(
            responder=self,
            publisher=self,
            decisions_topic=DECISIONS,
            metrics=RatelimitMetrics(CollectorRegistry()),
            instance_id="owner",
            clock=sim.now,
        )
        self.handlers.assigned(0)
        self.offset = 0
        self.up = True
        self.wake = asyncio.Event()
        self._last_sent = 0.0

    async def run(self) -> None:
        while True:
            while self.up and self.offset < len(self.sim.log):
                envelope, at = self.sim.log[self.offset]
                self.offset += 1
                await self.handlers.handle(0, envelope, T0 + timedelta(seconds=at))
                await asyncio.sleep(self.sim.rng.uniform(0.00002, 0.0003))
            self.wake.clear()
            await self.wake.wait()

    async def crash(self, down_s: float) -> None:
        start = self.sim.loop.time()
        self.up = False
        await asyncio.sleep(down_s)
        self.sim.disturbances.append((start, self.sim.loop.time() + BUDGET_S))
        self.handlers.revoked(0)
        self.handlers.assigned(0)
        self.offset, self.up = 0, True
        self.wake.set()

    # the Replies and Sender ports
    def wanted(self, request: Envelope, now: datetime) -> bool:
        return request.reply_to is not None and not request.expired(now)

    def reply_nowait(self, request: Envelope, payload: Contract) -> None:
        waiting = self.sim.pending.get(request.correlation_id or "")
        if waiting is None or self.sim.rng.random() < self.sim.knobs.lost_replies:
            return
        future, holder = waiting
        assert isinstance(payload, LeaseGranted)
        holder.later(self.sim.hop(), lambda: None if future.done() else future.set_result(payload))

    def send_nowait(
        self, topic: str, envelope: Envelope, *, key: Key = None, partition: int | None = None
    ) -> None:
        sim = self.sim
        if topic == LEASES:  # a strike checkpoint: this producer's records in order
            arrival = max(self._last_sent + 1e-6, sim.loop.time() + sim.hop())
            self._last_sent = arrival
            sim.loop.call_at(arrival, sim.append, envelope)
            return
        event = payload_of(envelope)
        if isinstance(event, SubjectLocked):
            sim.breaches.append(Breach(sim.seq(), event.at, event.until))
        for holder in sim.holders:
            holder.deliver_broadcast(envelope, sim.hop())


class Holder:
    """One api instance: the real Quota, RateLimiter and decisions reader on the bus."""

    def __init__(self, sim: Sim, name: str) -> None:
        self.sim, self.name = sim, name
        self.quota = Quota(name, ask_budget=timedelta(seconds=BUDGET_S))
        self.limiter = RateLimiter(self.quota, self, clock=sim.now)
        cache = VerdictCache(max_entries=1, ttl=timedelta(1), negative_ttl=timedelta(1))
        metrics = ApiMetrics(CollectorRegistry())
        self.views = Views(cache, AuthzKeys(), self.quota, metrics, clock=sim.now)
        self.running = asyncio.Event()
        self.running.set()
        self._last_sent = self._last_broadcast = 0.0
        self._held_back: list[Callable[[], None]] = []

    # the Leases port
    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        reply_to = ReplyTo(topic="replies", partition=0, instance=self.name)
        timeout = timedelta(seconds=BUDGET_S)
        envelope = wrap(
            ask,
            producer=self.name,
            now=self.sim.now(),
            reply_to=reply_to,
            correlation_id=str(self.sim.seq()),
            timeout=timeout,
        )
        future: asyncio.Future[LeaseGranted] = self.sim.loop.create_future()
        self.sim.pending[envelope.correlation_id or ""] = (future, self)
        self._send(envelope)
        try:
            async with asyncio.timeout(BUDGET_S):
                return await future
        finally:
            del self.sim.pending[envelope.correlation_id or ""]

    async def release(self, release: ReleaseLease) -> None:
        self._send(wrap(release, producer=self.name, now=self.sim.now()))

    def _send(self, envelope: Envelope) -> None:
        """To the log after a hop, never before what this holder sent earlier."""
        arrival = max(self._last_sent + 1e-6, self.sim.loop.time() + self.sim.hop())
        self._last_sent = arrival
        self.sim.loop.call_at(arrival, self.sim.append, envelope)

    def later(self, after: float, fn: Callable[[], None]) -> None:
        self.sim.loop.call_later(after, self._when_running, fn)

    def deliver_broadcast(self, envelope: Envelope, after: float) -> None:
        arrival = max(self._last_broadcast, self.sim.loop.time() + after)
        self._last_broadcast = arrival

        def read() -> None:
            self.sim.loop.create_task(self.views.on_decision(envelope))

        self.sim.loop.call_at(arrival, self._when_running, read)

    def _when_running(self, fn: Callable[[], None]) -> None:
        if self.running.is_set():
            fn()
        else:
            self._held_back.append(fn)

    async def pause(self, seconds: float) -> None:
        start = self.sim.loop.time()
        self.running.clear()
        await asyncio.sleep(seconds)
        self.sim.disturbances.append((start, self.sim.loop.time() + BUDGET_S))
        self.running.set()
        held, self._held_back = self._held_back, []
        for fn in held:
            fn()

    async def background(self) -> None:
        while True:
            await self.running.wait()
            await self.limiter.tick()
            await asyncio.sleep(0.1)

    async def request(self, needs: list[Need], burst: int) -> None:
        for _ in range(burst):
            await self.running.wait()
            began = self.sim.loop.time()
            decision = await self.limiter.admit(needs)
            if isinstance(decision, Admit):
                assert not decision.fallback, "fail-closed policy admitted by fallback"
                self.sim.record(self.name, "admit", decision.states[0].reset_at, began)
            elif isinstance(decision, Refuse):
                kind = "locked" if decision.locked else "refuse"
                self.sim.record(self.name, kind, decision.states[0].reset_at, began)
            else:
                self.sim.record(self.name, "unavailable", None, began)


@dataclass(frozen=True)
class Plan:
    """A fixed schedule instead of random traffic: (time, holder index) arrivals, and
    (holder index, time, seconds) pauses."""

    arrivals: tuple[tuple[float, int], ...]
    pauses: tuple[tuple[int, float, float], ...] = ()


async def run(knobs: Knobs, seed: int, plan: Plan | None = None) -> Sim:
    """One run: random traffic over `knobs.windows` windows with the pauses and restarts asked
    for, or the `plan`'s."""
    rng = random.Random(seed)
    sim = Sim(knobs, rng)
    needs = [Need(knobs.policy, SUBJECT)]
    span = knobs.windows * knobs.window_s
    tasks = [asyncio.create_task(sim.owner.run())]
    tasks += [asyncio.create_task(h.background()) for h in sim.holders]

    def start(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        tasks.append(asyncio.ensure_future(work()))

    if plan is None:
        pauses = [
            (sim.holders.index(h), rng.uniform(0, span), rng.uniform(0.1, 3.0))
            for h in rng.sample(sim.holders, min(knobs.pauses, len(sim.holders)))
        ]
        arrivals = [
            (at, 0 if knobs.uneven and rng.random() < 0.8 else rng.randrange(knobs.instances))
            for at in sorted(rng.uniform(0, span) for _ in range(knobs.windows * knobs.per_window))
        ]
    else:
        pauses, arrivals = list(plan.pauses), list(plan.arrivals)
    for index, at, length in pauses:
        sim.loop.call_later(at, start, lambda h=sim.holders[index], s=length: h.pause(s))
    for _ in range(knobs.restarts):
        at, down = rng.uniform(0, span), rng.uniform(0.05, 1.0)
        sim.loop.call_later(at, start, lambda d=down: sim.owner.crash(d))
    requests: list[asyncio.Task[None]] = []
    for at, index in arrivals:
        await asyncio.sleep(max(0.0, at - sim.loop.time()))
        requests.append(asyncio.create_task(sim.holders[index].request(needs, knobs.burst)))
    await asyncio.gather(*requests)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return sim
