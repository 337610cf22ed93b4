"""ratelimit as a service over the real broker (ADR 0010): owners grant quota leases for the
keys of the partitions they hold, never more than a key's limit in a window, broadcast a
lockout on a breach, and a new owner rebuilds all of it by replaying the partition
(SPEC S2, R1, R3, R4)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from prometheus_client import CollectorRegistry

from authbus_api.leases import KafkaLeases
from authbus_dev.ports import free_port
from authbus_ratelimit.runner import run as run_ratelimit
from authbus_ratelimit.settings import RatelimitSettings
from authbus_shared.contracts import topics
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    SubjectLocked,
)
from authbus_shared.kafka.admin import ensure_topics, resolve
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
