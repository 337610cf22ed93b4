"""The rate limiter over a twin of the owners (ADR 0010): one ask per key in flight, fallback
when the owner does not answer, and the global bound across api instances (SPEC R3, R4, R8)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from authbus_api.core.quota import Quota
from authbus_api.core.rates import Admit, Need, RatePolicy, Refuse, Unavailable
from authbus_api.rate import STALLED_ROUNDS, RateLimiter
from authbus_ratelimit.core.leases import LeaseBook
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    RecallLease,
    ReleaseLease,
    SubjectLocked,
)
from authbus_shared.kafka.rpc import RpcTimeout
from tests.unit.core.support import T0, FakeClock

ANN = "acct:ann"
DEFAULT = RatePolicy(LeasePolicy(name="default", limit=60, window_s=60), scope="account")
LOGIN = RatePolicy(LeasePolicy(name="login", limit=5, window_s=60, lockout_s=300), "account")
STRICT = LeasePolicy(name="strict", limit=3, window_s=10)


@dataclass
class _Window:
    start: datetime
    end: datetime
    allocated: int = 0
    held: dict[str, int] = field(default_factory=dict)
    blocked_until: datetime | None = None


class TwinOwner:
    """The owner's rules in brief: a window opens at the first ask after the last ended; an
    ask gets min(want, r, max(1, ceil(r / 2h))); a waiting ask that finds r = 0 locks a policy
    with a lockout; a release goes back to its window."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.windows: dict[str, _Window] = {}
        self.locks: list[SubjectLocked] = []

    def acquire(self, ask: AcquireLease) -> LeaseGranted:
        at = self.clock()
        w = self.windows.get(ask.key)
        if w is None or at >= w.end:
            w = self.windows[ask.key] = _Window(at, at + timedelta(seconds=ask.policy.window_s))
        r = ask.policy.limit - w.allocated
        grant = 0
        if w.blocked_until is not None and at < w.blocked_until:
            pass
        elif r > 0:
            holders = len(w.held) + (ask.instance not in w.held)
            grant = min(ask.want, r, max(1, math.ceil(r / (2 * holders))))
            w.allocated += grant
            w.held[ask.instance] = w.held.get(ask.instance, 0) + grant
        elif not ask.prefetch and ask.policy.lockout_s > 0:
            w.blocked_until = at + timedelta(seconds=ask.policy.lockout_s)
            self.locks.append(
                SubjectLocked(
                    subject=ask.subject,
                    key=ask.key,
                    policy=ask.policy.name,
                    until=w.blocked_until,
                    strikes=1,
                    at=at,
                )
            )
        return LeaseGranted(
            key=ask.key,
            granted=grant,
            window_start=w.start,
            window_end=w.end,
            remaining=ask.policy.limit - w.allocated,
            blocked_until=w.blocked_until,
        )

    def release(self, release: ReleaseLease) -> None:
        w = self.windows.get(release.key)
        if w is not None and w.start == release.window_start:
            n = min(release.unused, w.held.get(release.instance, 0))
            w.allocated -= n
            w.held[release.instance] -= n


class TwinLeases:
    """The `Leases` port over the twin owner, counting what it is asked. `down`: every ask
    times out; `hold`: asks wait until it is set; `error`: asks raise it."""

    def __init__(self, owner: TwinOwner) -> None:
        self.owner = owner
        self.asks: list[AcquireLease] = []
        self.released: list[ReleaseLease] = []
        self.down = False
        self.hold: asyncio.Event | None = None
        self.error: Exception | None = None

    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        self.asks.append(ask)
        await asyncio.sleep(0)  # a round trip: other requests run meanwhile
        if self.hold is not None:
            await self.hold.wait()
        if self.error is not None:
            raise self.error
        if self.down:
            raise RpcTimeout("no reply")
        return self.owner.acquire(ask)

    async def release(self, release: ReleaseLease) -> None:
        self.released.append(release)
        self.owner.release(release)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def owner(clock: FakeClock) -> TwinOwner:
    return TwinOwner(clock)


@pytest.fixture
def leases(owner: TwinOwner) -> TwinLeases:
    return TwinLeases(owner)


def limiter(leases: TwinLeases, clock: FakeClock, instance: str = "api-1") -> RateLimiter:
    return RateLimiter(Quota(instance), leases, clock=clock, sleep=clock.sleep)


def sec(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def settle() -> None:
    """Let the background tasks run as far as they can."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_requests_of_one_key_share_one_ask(
    leases: TwinLeases, clock: FakeClock
) -> None:
    leases.hold = asyncio.Event()
    rate = limiter(leases, clock)
    waiting = [asyncio.create_task(rate.admit([Need(DEFAULT, ANN)])) for _ in range(4)]
    for _ in range(3):
        await asyncio.sleep(0)

    leases.hold.set()
    results = await asyncio.gather(*waiting)

    assert len(leases.asks) == 1
    assert all(isinstance(r, Admit) for r in results)
    # the first ask wants 4 (slow start): the four requests share it
    assert sorted(r.states[0].remaining for r in results if isinstance(r, Admit)) == [
        56,
        57,
        58,
        59,
    ]


async def test_a_request_with_units_left_is_decided_without_waiting(
    leases: TwinLeases, clock: FakeClock
) -> None:
    """The hot path: no round trip, not even a suspension."""
    rate = limiter(leases, clock)
    await rate.admit([Need(DEFAULT, ANN)])

    pending = rate.admit([Need(DEFAULT, ANN)])
    with pytest.raises(StopIteration) as done:
        pending.send(None)

    assert isinstance(done.value.value, Admit)
    assert len(leases.asks) == 1


async def test_an_owner_that_does_not_answer_puts_a_fail_open_key_in_fallback(
    leases: TwinLeases, clock: FakeClock
) -> None:
    """R8: admitted locally up to the limit; the owner is asked again after the fallback
    period, and then enforces the window again."""
    policy = RatePolicy(STRICT, "account", fail_mode="open")
    rate = limiter(leases, clock)
    leases.down = True

    first = await rate.admit([Need(policy, ANN)])
    more = [await rate.admit([Need(policy, ANN)]) for _ in range(3)]

    assert isinstance(first, Admit)
    assert first.fallback == ("strict",)
    assert [type(r) for r in more] == [Admit, Admit, Refuse]
    assert len(leases.asks) == 1

    leases.down = False
    clock.advance(timedelta(seconds=2))
    back = [await rate.admit([Need(policy, ANN)]) for _ in range(4)]

    assert [type(r) for r in back] == [Admit, Admit, Admit, Refuse]
    assert all(r.fallback == () for r in back if isinstance(r, Admit))
    assert len(leases.asks) > 1


async def test_an_owner_that_does_not_answer_makes_a_fail_closed_key_unavailable(
    leases: TwinLeases, clock: FakeClock
) -> None:
    """R8: 503, not a guess."""
    policy = RatePolicy(STRICT, "account", fail_mode="closed")
    rate = limiter(leases, clock)
    leases.down = True

    assert await rate.admit([Need(policy, ANN)]) == Unavailable("strict")
    assert await rate.admit([Need(policy, ANN)]) == Unavailable("strict")
    assert len(leases.asks) == 1

    leases.down = False
    clock.advance(timedelta(seconds=2))
    assert isinstance(await rate.admit([Need(policy, ANN)]), Admit)


@pytest.mark.parametrize("concurrent", [False, True], ids=["one-by-one", "all-at-once"])
async def test_four_instances_admit_exactly_the_limit_in_a_window(
    owner: TwinOwner, clock: FakeClock, concurrent: bool
) -> None:
    """R4, the bound: 200 requests spread over 4 api instances sharing one owner, 60 pass."""
    instances = [limiter(TwinLeases(owner), clock, f"api-{i}") for i in range(4)]
    calls = [instances[n % 4].admit([Need(DEFAULT, ANN)]) for n in range(200)]

    if concurrent:
        results = await asyncio.gather(*calls)
    else:
        results = [await call for call in calls]

    assert sum(isinstance(r, Admit) for r in results) == 60
    assert all(isinstance(r, Admit | Refuse) for r in results)
    assert all(r.fallback == () for r in results if isinstance(r, Admit))
    refused = [r for r in results if isinstance(r, Refuse)]
    assert {r.retry_at for r in refused} == {sec(60)}


async def test_a_breach_locks_the_subject_on_every_instance(
    owner: TwinOwner, clock: FakeClock
) -> None:
    """R3: the owner's lock refuses the subject everywhere, on every policy."""
    a, b = (limiter(TwinLeases(owner), clock, f"api-{i}") for i in range(2))
    results = [await a.admit([Need(LOGIN, ANN)]) for _ in range(6)]
    (lock,) = owner.locks
    b.quota.locked(lock)

    assert [type(r) for r in results] == [Admit] * 5 + [Refuse]
    for refused in (results[-1], await b.admit([Need(DEFAULT, ANN)])):
        assert isinstance(refused, Refuse)
        assert (refused.retry_at, refused.locked) == (sec(300), True)


async def test_a_request_in_the_end_margin_waits_for_the_next_window(
    leases: TwinLeases, clock: FakeClock
) -> None:
    """R4: a slice is never spent in its window's last 250 ms; the request is admitted from
    the next window once the owner opened it."""
    rate = limiter(leases, clock)
    await rate.admit([Need(DEFAULT, ANN)])
    clock.advance(timedelta(seconds=59.8))

    result = await rate.admit([Need(DEFAULT, ANN)])

    assert isinstance(result, Admit)
    assert result.states[0].reset_at == sec(120)
    assert clock.slept == [pytest.approx(0.2)]


async def test_replies_it_cannot_spend_send_the_key_to_fallback_after_a_few_rounds(
    clock: FakeClock,
) -> None:
    """A host whose clock is far ahead of the broker's gets only windows it sees as ended: it
    stops asking after a few rounds rather than loop."""
    leases = TwinLeases(TwinOwner(FakeClock(sec(-100))))
    rate = limiter(leases, clock)

    result = await rate.admit([Need(DEFAULT, ANN)])

    assert isinstance(result, Admit)
    assert result.fallback == ("default",)
    assert len(leases.asks) == STALLED_ROUNDS


async def test_an_error_other_than_a_timeout_propagates_and_the_next_request_asks_again(
    leases: TwinLeases, clock: FakeClock
) -> None:
    rate = limiter(leases, clock)
    leases.error = ValueError("broken reply")

    with pytest.raises(ValueError, match="broken reply"):
        await rate.admit([Need(DEFAULT, ANN)])

    leases.error = None
    assert isinstance(await rate.admit([Need(DEFAULT, ANN)]), Admit)
    assert len(leases.asks) == 2


async def test_tick_tops_up_in_the_background_and_gives_back_idle_slices(
    leases: TwinLeases, owner: TwinOwner, clock: FakeClock
) -> None:
    rate = limiter(leases, clock)
    for _ in range(3):  # 4 granted (slow start), 1 left <= 4 // 4
        assert isinstance(await rate.admit([Need(DEFAULT, ANN)]), Admit)

    await rate.tick()
    await settle()

    top_up = leases.asks[-1]
    assert (len(leases.asks), top_up.prefetch, top_up.want) == (2, True, 8)
    after = await rate.admit([Need(DEFAULT, ANN)])
    assert isinstance(after, Admit)
    assert after.states[0].remaining == 56  # 60 - 4: what the instance holds now counts

    clock.advance(timedelta(seconds=1))
    await rate.tick()

    assert leases.released == [
        ReleaseLease(key="default:acct:ann", instance="api-1", window_start=T0, unused=8, spent=4)
    ]
    assert owner.windows["default:acct:ann"].held["api-1"] == 4  # what was used
    assert len(leases.asks) == 2


async def test_tick_raises_the_error_of_a_failed_top_up(
    leases: TwinLeases, clock: FakeClock
) -> None:
    rate = limiter(leases, clock)
    for _ in range(3):
        await rate.admit([Need(DEFAULT, ANN)])
    leases.error = ValueError("broken reply")
    await rate.tick()
    await settle()

    with pytest.raises(ValueError, match="broken reply"):
        await rate.tick()


async def test_run_ticks_every_interval(leases: TwinLeases, clock: FakeClock) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    rate = RateLimiter(Quota("api-1"), leases, clock=clock, sleep=sleep)
    runner = asyncio.create_task(rate.run(every_s=0.5))
    await settle()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner

    assert slept[:2] == [0.5, 0.5]


# --- exact both ways (R9): the real book as the owner, recalls broadcast in memory -----------


class BookOwner:
    """The real lease book behind the port of several limiters; recalls and locks go to the
    quotas of the instances it knows (the decisions broadcast), unless they are `deaf`."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.book = LeaseBook()
        self.quotas: dict[str, Quota] = {}
        self.deaf: set[str] = set()
        self.recalls: list[RecallLease] = []

    def limiter(self, instance: str) -> RateLimiter:
        quota = Quota(instance)
        self.quotas[instance] = quota
        return RateLimiter(quota, self, clock=self.clock, sleep=self.clock.sleep)

    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        await asyncio.sleep(0)
        answer = self.book.acquire(ask, self.clock())
        for quota in self.quotas.values():
            if answer.locked is not None:
                quota.locked(answer.locked)
            if answer.recall is not None and quota.instance not in self.deaf:
                quota.recalled(answer.recall, self.clock())
        if answer.recall is not None:
            self.recalls.append(answer.recall)
        await asyncio.sleep(0)  # the recall answers go out meanwhile
        return answer.reply

    async def release(self, release: ReleaseLease) -> None:
        self.book.release(release, self.clock())


WRITES = RatePolicy(LeasePolicy(name="writes", limit=5, window_s=60, lockout_s=60), "account")


async def test_round_robin_over_three_instances_admits_exactly_the_limit_then_locks(
    clock: FakeClock,
) -> None:
    """R9, R3: 5 per minute, requests one by one over 3 instances: 5 admitted, whatever
    instance holds the unspent units; the 6th is the breach, and says the lockout's 60 s."""
    owner = BookOwner(clock)
    apis = [owner.limiter(f"api-{i}") for i in range(3)]

    results = []
    for n in range(9):
        results.append(await apis[n % 3].admit([Need(WRITES, ANN)]))
        clock.advance(timedelta(milliseconds=100))

    assert [type(r).__name__ for r in results] == ["Admit"] * 5 + ["Refuse"] * 4
    first_refusal = results[5]
    assert isinstance(first_refusal, Refuse) and first_refusal.locked
    assert first_refusal.retry_at - clock() > timedelta(seconds=59)
    assert owner.recalls  # the last units were recalled from the instances holding them


async def test_an_instance_that_does_not_answer_a_recall_costs_a_refusal_never_a_fallback(
    clock: FakeClock,
) -> None:
    """The bound: api-1 holds units and never answers. api-0's request is refused after its
    budget (200 ms), with Retry-After about a second, and no fallback admits past the limit."""
    owner = BookOwner(clock)
    api0, api1 = owner.limiter("api-0"), owner.limiter("api-1")
    owner.deaf.add("api-1")
    assert isinstance(await api1.admit([Need(WRITES, ANN)]), Admit)  # api-1 holds 3, spent 1
    for _ in range(2):
        assert isinstance(await api0.admit([Need(WRITES, ANN)]), Admit)
    started = clock()

    refused = await api0.admit([Need(WRITES, ANN)])

    assert isinstance(refused, Refuse) and not refused.locked
    assert timedelta(0) < clock() - started <= timedelta(milliseconds=220)
    assert refused.retry_at - clock() <= timedelta(seconds=1)
    assert refused.states[0].reset_at == T0 + timedelta(seconds=60)  # the window's true end
    assert owner.book.holdings(WRITES.key(ANN))["api-1"] == (3, 0)  # stranded there


async def test_a_recall_answer_leaves_at_once_without_waiting_for_a_tick(
    clock: FakeClock,
) -> None:
    owner = BookOwner(clock)
    api0, api1 = owner.limiter("api-0"), owner.limiter("api-1")
    await api1.admit([Need(WRITES, ANN)])  # api-1 holds 2 unspent
    for _ in range(2):
        await api0.admit([Need(WRITES, ANN)])

    admitted = await api0.admit([Need(WRITES, ANN)])  # recalls api-1's 2

    assert isinstance(admitted, Admit)
    assert owner.book.holdings(WRITES.key(ANN))["api-1"] == (1, 1)
