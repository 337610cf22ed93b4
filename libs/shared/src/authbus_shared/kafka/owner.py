"""A consumer-group member that keeps state per partition and rebuilds it from the log.

For a service whose state is a pure function of a partition's messages and their broker
timestamps (ratelimit's lease books, ADR 0010): Kafka is the state's log, no database needed.

Algorithm:
- The group spreads the partitions over the instances. When this instance is given a
  partition (start, a peer's crash, a rebalance), `on_assigned(partition)` lets the service
  make a fresh state for it, and reading starts at the first message appended at or after
  `now - replay_horizon` (`offsets_for_times`), not at the committed offset: replaying those
  messages rebuilds exactly the state the previous owner had. When a partition is taken
  away, `on_revoked(partition)` drops its state.
- Messages are handled one at a time, in partition order, each with its partition and its
  broker timestamp (topics created with `message.timestamp.type=LogAppendTime`, so the time is
  the broker's, monotonic per partition and the same on every replay). The handler decides
  what is live: a request whose deadline has passed is replayed into the state, not answered.
- Progress is committed every `commit_interval_s`, for lag monitoring only (a new owner
  replays by time, never from a commit), and never while the member rejoins its group
  (`SafeCommits`): a commit sent during the member's JoinGroup fails with ILLEGAL_GENERATION
  and makes aiokafka rejoin again, which kept the group rebalancing forever (ADR 0014).
  Nothing is committed on revocation (the callback only lets a commit in flight finish): the
  rebalance callbacks do no more than that and the round trips for the start offsets.

Readiness: caught up once every partition of the latest assignment has been read up to the end
offset it had at assignment (the replay is over).

Membership and the bound (ADR 0014): with `group_instance_id` (static membership, KIP-345) a
member that restarts under the same id within `session_timeout_ms` takes back its own
partitions without a rebalance: the others keep theirs and replay nothing. A dynamic member (or
a static one back later) joins as new: the group rebalances once the dead member's session has
expired (`session_timeout_ms`, 6 s by default, the broker's minimum), every member is given its
partitions again and replays them. Either way the partitions are owned and replayed again
within about `session_timeout_ms` + one heartbeat + the replay (measured: ADR 0014). A static
member that stops keeps its partitions until its session expires (aiokafka sends no LeaveGroup
for it); a dynamic one leaves at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiokafka import TopicPartition

from authbus_shared.contracts.envelope import Envelope, utcnow
from authbus_shared.kafka.consumers import Reader, stop_task
from authbus_shared.kafka.group import LOST_TO_REBALANCE, Rebalance, SafeCommits, group_member
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.settings import KafkaSettings

log = structlog.get_logger(__name__)

OwnedHandler = Callable[[int, Envelope, datetime], Awaitable[None]]
STOP_COMMIT_S = 3.0


class PartitionOwner(Reader):
    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        topic: str,
        handler: OwnedHandler,
        on_assigned: Callable[[int], None],
        on_revoked: Callable[[int], None],
        replay_horizon: timedelta,
        metrics: KafkaMetrics,
        client_id: str,
        session_timeout_ms: int = 6000,
        commit_interval_s: float = 1.0,
        group_instance_id: str | None = None,
    ) -> None:
        consumer = group_member(
            settings,
            group_id=group_id,
            client_id=client_id,
            group_instance_id=group_instance_id,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(500, session_timeout_ms // 4),
        )
        super().__init__(consumer, _unused, metrics, f"owner-{group_id}")
        self._commits = SafeCommits(consumer)
        self._topic = topic
        self._owned = handler
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._horizon = replay_horizon
        self._interval = commit_interval_s
        self._committer: asyncio.Task[None] | None = None
        self.partitions: frozenset[int] = frozenset()

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=Rebalance(self._revoked, self._assigned))
        self._run()
        self._committer = asyncio.create_task(self._commit_loop(), name=f"{self._name}-commits")

    async def stop(self) -> None:
        await stop_task(self._committer)
        await stop_task(self._task)
        # The commit is for lag monitoring only (a new owner replays by time): with the broker
        # gone, do not let it hold up the stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_COMMIT_S):
                await self._commit()
        await self._consumer.stop()

    async def _record(self, tp: TopicPartition, record: Any) -> None:
        at = datetime.fromtimestamp(record.timestamp / 1000, tz=UTC)

        async def handle(envelope: Envelope) -> None:
            await self._owned(tp.partition, envelope, at)

        await self._handle_one(tp.topic, record.value, handle)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._commit()

    async def _commit(self) -> None:
        try:
            await self._commits.commit()
        except LOST_TO_REBALANCE as exc:  # the new owner replays by time anyway
            log.info("commit lost to a rebalance", error=repr(exc))

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        await self._commits.settle()  # a commit in flight is answered before the JoinGroup
        for tp in revoked:
            self._on_revoked(tp.partition)
        self.partitions = self.partitions - {tp.partition for tp in revoked}

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        new = sorted(assigned, key=lambda tp: tp.partition)
        since = int((utcnow() - self._horizon).timestamp() * 1000)
        # The ends first: a partition with nothing since the horizon starts at its end, and
        # that end must be taken before looking, or an ask appended in between would be skipped
        # (and the previous owner, no longer owning it, dropped it too).
        ends = await self._consumer.end_offsets(new) if new else {}
        starts = await self._consumer.offsets_for_times(dict.fromkeys(new, since)) if new else {}
        positions: dict[TopicPartition, int] = {}
        for tp in new:
            found = starts.get(tp)
            positions[tp] = found.offset if found is not None else ends[tp]
            self._consumer.seek(tp, positions[tp])
            self._on_assigned(tp.partition)
        self.partitions = self.partitions | {tp.partition for tp in new}
        self.catch_up.expect(ends, positions)
        log.info(
            "partitions assigned, replaying",
            partitions=[tp.partition for tp in new],
            to_replay=sum(ends[tp] - positions[tp] for tp in new),
        )


async def _unused(envelope: Envelope) -> None:  # the owner passes its own handler per message
    raise RuntimeError("PartitionOwner handles messages with their partition and time")
