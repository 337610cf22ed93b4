"""Offset commits never race the member's own rejoin (`kafka.group.SafeCommits`, ADR 0014): a
commit sent while the JoinGroup waits at the broker fails with ILLEGAL_GENERATION and makes
aiokafka rejoin again, which kept the ratelimit group rebalancing forever."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.protocol.group import JoinGroupRequest

from authbus_shared.kafka.group import SafeCommits, rejoining

TP = TopicPartition("t", 0)


@dataclass
class FakeCoordinator:
    generation: int = 3
    member_id: str = "member-1"
    rejoin_needed: bool = False

    def need_rejoin(self, subscription: object) -> bool:
        return self.rejoin_needed


@dataclass
class FakeState:
    subscription: object | None = "subscribed"
    reassignment_in_progress: bool = False


@dataclass
class FakeConsumer:
    """The few attributes of `AIOKafkaConsumer` the commits read (pinned below)."""

    _coordinator: FakeCoordinator = field(default_factory=FakeCoordinator)
    _subscription: FakeState = field(default_factory=FakeState)
    assigned: set[TopicPartition] = field(default_factory=lambda: {TP})
    committed: list[object] = field(default_factory=list)
    on_commit: asyncio.Event | None = None

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: object = None) -> None:
        self.committed.append(offsets)
        if self.on_commit is not None:
            await self.on_commit.wait()


def commits(consumer: FakeConsumer) -> SafeCommits:
    return SafeCommits(cast(AIOKafkaConsumer, consumer))


async def test_a_stable_member_commits() -> None:
    consumer = FakeConsumer()

    assert await commits(consumer).commit({TP: 5})
    assert consumer.committed == [{TP: 5}]


async def test_no_commit_once_a_rebalance_is_signalled_or_under_way() -> None:
    signalled = FakeConsumer(_coordinator=FakeCoordinator(rejoin_needed=True))
    reassigning = FakeConsumer(_subscription=FakeState(reassignment_in_progress=True))
    forgotten = FakeConsumer(_coordinator=FakeCoordinator(member_id=""))

    for consumer in (signalled, reassigning, forgotten):
        assert not await commits(consumer).commit()
        assert consumer.committed == []


async def test_the_revocation_commits_before_the_join_but_not_once_forgotten() -> None:
    """aiokafka runs the revocation callback before it sends the JoinGroup: its commit is
    read in the old generation. A member the broker forgot (generation -1) has nothing to
    commit in any generation."""
    revoking = FakeConsumer(_subscription=FakeState(reassignment_in_progress=True))
    forgotten = FakeConsumer(_coordinator=FakeCoordinator(generation=-1, member_id=""))

    assert await commits(revoking).commit({TP: 7}, revoking=True)
    assert not await commits(forgotten).commit({TP: 7}, revoking=True)
    assert revoking.committed == [{TP: 7}]
    assert forgotten.committed == []


async def test_nothing_assigned_nothing_committed() -> None:
    consumer = FakeConsumer(assigned=set())

    assert not await commits(consumer).commit()


async def test_a_commit_waiting_behind_the_revocation_checks_again_and_stays_home() -> None:
    """The loop's commit queued behind the revocation's must not go out after it: by then the
    JoinGroup may be on the wire."""
    consumer = FakeConsumer(on_commit=asyncio.Event())
    safe = commits(consumer)
    consumer._subscription.reassignment_in_progress = True
    revocation = asyncio.create_task(safe.commit({TP: 1}, revoking=True))
    await asyncio.sleep(0)
    loop_commit = asyncio.create_task(safe.commit({TP: 2}))
    await asyncio.sleep(0)
    assert consumer.on_commit is not None
    consumer.on_commit.set()

    assert await revocation
    assert not await loop_commit
    assert consumer.committed == [{TP: 1}]


async def test_aiokafka_still_has_what_the_commits_read() -> None:
    """`rejoining` reads aiokafka 0.14's private state; an upgrade that moves it fails here."""
    consumer = AIOKafkaConsumer(group_id="g", bootstrap_servers="127.0.0.1:1")
    try:
        state: Any = consumer._subscription

        assert isinstance(state, SubscriptionState)
        assert consumer._coordinator is None  # until started; then a GroupCoordinator
        assert isinstance(SubscriptionState.reassignment_in_progress, property)
        assert callable(GroupCoordinator.need_rejoin)
        assert JoinGroupRequest.UNKNOWN_MEMBER_ID == ""
        assert not rejoining(consumer)  # not started: no group yet
    finally:
        await consumer.stop()


async def test_the_revocation_waits_for_a_commit_in_flight_but_not_forever() -> None:
    """`settle`: the JoinGroup, sent after the revocation callback, never overtakes a commit."""
    consumer = FakeConsumer(on_commit=asyncio.Event())
    safe = SafeCommits(cast(AIOKafkaConsumer, consumer), settle_s=0.2)
    in_flight = asyncio.create_task(safe.commit())
    await asyncio.sleep(0)
    settled = asyncio.create_task(safe.settle())
    await asyncio.sleep(0.05)
    assert not settled.done()  # still waiting for the answer

    assert consumer.on_commit is not None
    consumer.on_commit.set()
    await asyncio.wait_for(settled, 1)
    assert await in_flight

    consumer.on_commit.clear()
    stuck = asyncio.create_task(safe.commit())
    await asyncio.sleep(0)
    await asyncio.wait_for(safe.settle(), 1)  # gives up after settle_s
    stuck.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stuck
