"""ratelimit as a service over the real broker (ADR 0010): owners grant quota leases for the
keys of the partitions they hold, never more than a key's limit in a window, broadcast a
lockout on a breach, and a new owner rebuilds all of it by replaying the partition
(SPEC S2, R1, R3, R4)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import CollectorRegistry

from authbus_api.core.quota import Quota
from authbus_api.core.rates import Admit, Need, RatePolicy, Refuse
from authbus_api.core.verdict_cache import VerdictCache
from authbus_api.leases import KafkaLeases
from authbus_api.metrics import ApiMetrics
from authbus_api.rate import RateLimiter
from authbus_api.views import Views
from authbus_dev.ports import free_port
from authbus_ratelimit.runner import run as run_ratelimit
from authbus_ratelimit.settings import RatelimitSettings
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.contracts import topics
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    RecallLease,
    StrikeRecorded,
    SubjectLocked,
)
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.kafka.consumers import BroadcastReader
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import RpcClient
from authbus_shared.settings import KafkaSettings, OpsSettings
from tests.support import collected, eventually, in_process

LOCKING = LeasePolicy(name="global", limit=10, window_s=60, lockout_s=60)
PLAIN = LeasePolicy(name="plain", limit=7, window_s=60)


def ratelimit(kafka: KafkaSettings) -> RatelimitSettings:
    return RatelimitSettings(kafka=kafka, ops=OpsSettings(port=free_port()))


@contextlib.asynccontextmanager
async def asker(kafka: KafkaSettings, instance: str) -> AsyncIterator[KafkaLeases]:
    """An api instance's lease port, on the real broker."""
    metrics = KafkaMetrics("t", CollectorRegistry())
    replies = resolve(topics.REPLIES, kafka)
    leases = resolve(topics.RATELIMIT_LEASES, kafka)
    await ensure_topics(kafka, [replies, leases, resolve(topics.RATELIMIT_DECISIONS, kafka)])
    publisher = Publisher(kafka, client_id=instance, metrics=metrics)
    await publisher.start()
    rpc = RpcClient(
        kafka,
        publisher=publisher,
        reply_topic=replies,
        instance_id=instance,
        metrics=metrics,
        client_id=instance,
    )
    await rpc.start()
    try:
        yield KafkaLeases(rpc, publisher, leases.name, instance, timedelta(seconds=10))
    finally:
        await rpc.stop()
        await publisher.stop()


def ask(
    instance: str,
    subject: str,
    policy: LeasePolicy,
    want: int = 1000,
    *,
    after: Sequence[LeaseGranted] = (),
) -> AcquireLease:
    """An ask from an instance that received the replies `after` (to this instance, for this
    key) and admitted every unit of them: what it tells the owner it holds and spent."""
    current = [r for r in after if after and r.window_start == after[-1].window_start]
    return AcquireLease(
        key=f"{policy.name}:{subject}",
        subject=subject,
        policy=policy,
        instance=instance,
        want=want,
        window_start=current[-1].window_start if current else None,
        spent=sum(r.granted for r in current),
    )


async def drain(leases: KafkaLeases, subject: str, policy: LeasePolicy) -> list[LeaseGranted]:
    """Ask (spending every unit) until the owner grants nothing: the last reply is the
    breach's."""
    replies = [await leases.acquire(ask(leases.instance_id, subject, policy))]
    while replies[-1].granted:
        replies.append(
            await leases.acquire(ask(leases.instance_id, subject, policy, after=replies))
        )
    return replies


async def test_two_owners_never_grant_more_than_the_limit_and_broadcast_the_lockout(
    kafka: KafkaSettings,
) -> None:
    """R1, R3, R4: the keys spread over both owners; each key's grants sum to its limit."""
    subjects = [f"acct:{i}" for i in range(8)]
    first, second = ratelimit(kafka), ratelimit(kafka)
    async with (
        in_process(run_ratelimit(first), first.ops.port),
        in_process(run_ratelimit(second), second.ops.port),
        collected(kafka, topics.RATELIMIT_DECISIONS) as decisions,
        asker(kafka, "api-1") as one,
        asker(kafka, "api-2") as two,
    ):
        granted = {}
        for subject in subjects:
            # two api instances ask in turn, as a client spraying both would make them
            replies: dict[str, list[LeaseGranted]] = {"api-1": [], "api-2": []}
            last: LeaseGranted | None = None
            turn = 0
            while last is None or last.granted or last.outstanding:
                leases = (one, two)[turn % 2]
                turn += 1
                mine = replies[leases.instance_id]
                last = await leases.acquire(ask(leases.instance_id, subject, LOCKING, after=mine))
                mine.append(last)
            assert last.blocked_until is not None
            granted[subject] = sum(r.granted for rs in replies.values() for r in rs)
        await eventually(lambda: len(decisions) >= len(subjects))

    assert granted == dict.fromkeys(subjects, LOCKING.limit)
    locked = {d.subject: d for d in decisions if isinstance(d, SubjectLocked)}
    assert set(locked) == set(subjects)
    now = utcnow()
    for lock in locked.values():
        assert lock.strikes == 1
        assert timedelta(seconds=50) < lock.until - now <= timedelta(seconds=60)


async def test_a_new_owner_replays_the_partition_and_keeps_a_client_over_its_limit(
    kafka: KafkaSettings,
) -> None:
    """R4 with a failure: what the first owner granted and locked survives its stop."""
    first, second = ratelimit(kafka), ratelimit(kafka)
    async with asker(kafka, "api-1") as leases:
        async with in_process(run_ratelimit(first), first.ops.port):
            locked = await drain(leases, "acct:ann", LOCKING)
            exhausted = await drain(leases, "acct:bob", PLAIN)
            partly = await leases.acquire(ask("api-1", "acct:cy", PLAIN, want=3))
        async with in_process(run_ratelimit(second), second.ops.port):
            after_lock = await leases.acquire(ask("api-1", "acct:ann", LOCKING, after=locked))
            after_exhausted = await leases.acquire(ask("api-1", "acct:bob", PLAIN, after=exhausted))
            after_partly = await leases.acquire(ask("api-1", "acct:cy", PLAIN, after=[partly]))

    assert sum(r.granted for r in locked) == LOCKING.limit
    assert (after_lock.granted, after_lock.blocked_until) == (0, locked[-1].blocked_until)
    assert sum(r.granted for r in exhausted) == PLAIN.limit
    assert (after_exhausted.granted, after_exhausted.remaining) == (0, 0)
    assert after_exhausted.window_start == exhausted[0].window_start
    assert partly.granted == 3
    assert after_partly.window_start == partly.window_start
    assert after_partly.granted + after_partly.remaining == PLAIN.limit - 3


async def test_a_client_that_keeps_breaching_is_held_back_longer(kafka: KafkaSettings) -> None:
    """R7: a breach soon after the last lockout doubles the next one, and says so."""
    policy = LeasePolicy(
        name="strict", limit=2, window_s=60, lockout_s=1, lockout_cap_s=4, strike_memory_s=60
    )
    settings = ratelimit(kafka)
    async with (
        in_process(run_ratelimit(settings), settings.ops.port),
        collected(kafka, topics.RATELIMIT_DECISIONS) as decisions,
        asker(kafka, "api-1") as leases,
    ):
        first = await drain(leases, "acct:eve", policy)
        first_lock = first[-1].blocked_until
        assert first_lock is not None
        await asyncio.sleep(max(0.0, (first_lock - utcnow()).total_seconds()) + 0.1)
        again = await leases.acquire(ask("api-1", "acct:eve", policy, after=first))
        await eventually(lambda: len(decisions) >= 2)

    locks = [d for d in decisions if isinstance(d, SubjectLocked)]
    assert [lock.strikes for lock in locks] == [1, 2]
    assert [round((lock.until - lock.at).total_seconds()) for lock in locks] == [1, 2]
    assert sum(r.granted for r in first) == policy.limit
    assert again.granted == 0
    assert again.blocked_until == locks[1].until


# --- exact both ways (R9): real holders in this process, recalls over the broadcast --------


@dataclass
class Holder:
    """An api instance's rate limiting as the runner wires it: lease port, quota, limiter
    with its background work, and the decisions reader (lockouts, recalls)."""

    limiter: RateLimiter
    registry: CollectorRegistry

    def recalls_answered(self) -> float:
        answered = {"outcome": "answered"}
        return self.registry.get_sample_value("api_rate_recalls_total", answered) or 0.0


@contextlib.asynccontextmanager
async def holder(kafka: KafkaSettings, instance: str) -> AsyncIterator[Holder]:
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    # Idle slices never go back in these tests: only a recall can bring units back.
    quota = Quota(instance, release_idle=timedelta(minutes=5))
    cache = VerdictCache(max_entries=1, ttl=timedelta(1), negative_ttl=timedelta(1))
    views = Views(cache, AuthzKeys(), quota, metrics)
    reader = BroadcastReader(
        kafka,
        topics=[resolve(topics.RATELIMIT_DECISIONS, kafka).name],
        handler=views.on_decision,
        metrics=metrics.kafka,
        client_id=instance,
        start_at="end",
    )
    async with asker(kafka, instance) as leases:
        await reader.start()
        limiter = RateLimiter(quota, leases)
        work = asyncio.create_task(limiter.run())
        try:
            yield Holder(limiter, registry)
        finally:
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            await reader.stop()


async def admit(api: Holder, policy: RatePolicy, subject: str, n: int) -> list[object]:
    return [await api.limiter.admit([Need(policy, subject)]) for _ in range(n)]


async def test_a_recall_brings_back_units_stranded_at_another_instance(
    kafka: KafkaSettings,
) -> None:
    """R9: api-1 took a slice and its client left; api-2's client gets the whole rest of the
    limit, api-1's unspent units included (recalled, not left until the window's end)."""
    policy = RatePolicy(
        LeasePolicy(name="plain", limit=10, window_s=60), "account", fail_mode="closed"
    )
    first, second = ratelimit(kafka), ratelimit(kafka)
    async with (
        in_process(run_ratelimit(first), first.ops.port),
        in_process(run_ratelimit(second), second.ops.port),
        holder(kafka, "api-1") as one,
        holder(kafka, "api-2") as two,
    ):
        before = await admit(one, policy, "acct:recalled", 1)  # a slice of 4: 3 unspent
        after = await admit(two, policy, "acct:recalled", 12)
        recalls = one.recalls_answered()

    assert [type(r) for r in before] == [Admit]
    assert [type(r) for r in after] == [Admit] * 9 + [Refuse] * 3
    assert recalls >= 1


async def test_a_breach_locks_the_subject_even_when_its_client_stays_on_one_instance(
    kafka: KafkaSettings,
) -> None:
    """R3, R9: the client breaches on api-2 while api-1 still held units of the window: the
    owner recalls them, api-2 spends them, and the next request is the breach: locked for
    60 s, on api-1 too, and the first refusal already says so."""
    lease = LeasePolicy(name="writes", limit=5, window_s=60, lockout_s=60)
    policy = RatePolicy(lease, "account", fail_mode="closed")
    settings = ratelimit(kafka)
    async with (
        in_process(run_ratelimit(settings), settings.ops.port),
        collected(kafka, topics.RATELIMIT_DECISIONS) as decisions,
        holder(kafka, "api-1") as one,
        holder(kafka, "api-2") as two,
    ):
        await admit(one, policy, "acct:breach", 1)  # api-1 holds 2 unspent
        results = await admit(two, policy, "acct:breach", 6)
        await eventually(lambda: any(isinstance(d, SubjectLocked) for d in decisions))
        elsewhere = await one.limiter.admit([Need(policy, "acct:breach")])

    assert [type(r) for r in results] == [Admit] * 4 + [Refuse] * 2
    breach = results[4]
    assert isinstance(breach, Refuse) and breach.locked
    assert timedelta(seconds=58) < breach.retry_at - utcnow() <= timedelta(seconds=60)
    assert isinstance(elsewhere, Refuse) and elsewhere.retry_at == breach.retry_at
    (lock,) = [d for d in decisions if isinstance(d, SubjectLocked)]
    assert (lock.subject, lock.strikes) == ("acct:breach", 1)
    assert any(isinstance(d, RecallLease) for d in decisions)


async def test_a_lock_checkpoints_its_strike_in_the_key_s_own_partition(
    kafka: KafkaSettings,
) -> None:
    """R7 across fail-over: the owner that locks appends `StrikeRecorded` to the leases topic
    (the key's own partition: tests/unit/test_lease_handlers.py), so a new owner replaying from
    its horizon keeps the chain; a new owner then answers with the same lock."""
    policy = LeasePolicy(
        name="strict", limit=2, window_s=60, lockout_s=30, lockout_cap_s=120, strike_memory_s=600
    )
    first, second = ratelimit(kafka), ratelimit(kafka)
    async with (
        asker(kafka, "api-1") as leases,  # creates the topics
        collected(kafka, topics.RATELIMIT_LEASES) as log,
    ):
        async with in_process(run_ratelimit(first), first.ops.port):
            breached = await drain(leases, "acct:strike", policy)
            await eventually(lambda: any(isinstance(m, StrikeRecorded) for m in log))
        async with in_process(run_ratelimit(second), second.ops.port):
            again = await leases.acquire(ask("api-1", "acct:strike", policy, after=breached))

    # The new owner's replay of the breach appends the same checkpoint again (a lock still in
    # force is published again: handlers.py); a checkpoint it already has is a no-op.
    (strike,) = {m for m in log if isinstance(m, StrikeRecorded)}
    assert (strike.key, strike.strikes, strike.until) == (
        "strict:acct:strike",
        1,
        breached[-1].blocked_until,
    )
    assert strike.strike_memory_s == 600
    assert (again.granted, again.blocked_until) == (0, strike.until)
