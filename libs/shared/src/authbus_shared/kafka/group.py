"""A consumer-group member that handles messages as they come and commits what is handled.

Algorithm (pipelined, at-least-once):
- The fetch loop hands each message to its own task as soon as it is fetched, at most
  `concurrency` at once (a full set of slots stops the fetching: backpressure). With
  `concurrency=1` messages are handled one after the other, in order.
- `Offsets` remembers, per partition, the fetched offsets still being handled. What may be
  committed is the lowest offset still in hand, or the one after the last fetched when none is:
  an offset is never committed before every message below it is handled.
- A commit loop commits what advanced every `commit_interval` (one commit in flight), off the
  path of every message: a slow commit (Kafka 4's group coordinator lingers before appending)
  or a slow message (an argon2 check) no longer holds up the others.
- On a rebalance the revoked partitions' progress is committed and forgotten; the new owner
  reads from there (a message in hand at that moment may be handled twice: handlers are
  idempotent). On stop: no new fetches, the messages in hand finish (bounded), a last commit.
- No commit while the member rejoins its group (`SafeCommits`, ADR 0014): the revocation's
  commit goes out before the JoinGroup, the loop's wait until the new generation is assigned.

Readiness: caught up once, for every partition of the latest assignment, what may be committed
reaches the end offset it had at assignment (an instance with no partition is caught up).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from aiokafka.protocol.group import JoinGroupRequest

from authbus_shared.kafka.consumers import Handler, Reader, fetch, stop_task
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.settings import KafkaSettings

log = structlog.get_logger(__name__)
LOST_TO_REBALANCE = (CommitFailedError, IllegalStateError, RebalanceInProgressError)


def rejoining(consumer: AIOKafkaConsumer) -> bool:
    """Whether `consumer` is rejoining its group, or about to: a rebalance was signalled
    (`need_rejoin`), its partitions are being revoked or reassigned, or the broker has
    forgotten it (no member id). aiokafka 0.14 keeps this in private state; the unit tests pin
    the attributes read here."""
    coordinator = consumer._coordinator
    state = consumer._subscription
    if coordinator is None or state.subscription is None:
        return False
    return bool(
        state.reassignment_in_progress
        or coordinator.need_rejoin(state.subscription)
        or coordinator.member_id == JoinGroupRequest.UNKNOWN_MEMBER_ID
    )


class SafeCommits:
    """Offset commits that never race the member's own rejoin (ADR 0014).

    A commit sent while the member's JoinGroup waits at the broker queues behind it on the
    coordinator's connection (the broker reads one request per connection at a time), is read
    once the group has a new generation, and fails with ILLEGAL_GENERATION; aiokafka then
    forgets the member id and rejoins at once, which starts another rebalance, during which
    the next commit fails the same way: a loop. So a commit goes out only while the member is
    not rejoining, checked under a lock that every commit of the member takes, and the
    revocation callback (which aiokafka awaits before it sends the JoinGroup) takes the lock
    too: it commits (`revoking=True`: read in the old generation), or waits for a commit in
    flight to be answered (`settle`), so no commit can follow the JoinGroup on the wire."""

    def __init__(self, consumer: AIOKafkaConsumer, settle_s: float = 2.0) -> None:
        self._consumer = consumer
        self._lock = asyncio.Lock()
        self._settle_s = settle_s

    async def settle(self) -> None:
        """Wait (at most `settle_s`) until no commit of this member is in flight."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settle_s), self._lock:
                pass

    async def commit(
        self, offsets: dict[TopicPartition, int] | None = None, *, revoking: bool = False
    ) -> bool:
        """Commit `offsets` (None: every assigned partition's position); False when skipped.
        Raises what `AIOKafkaConsumer.commit` raises (see `LOST_TO_REBALANCE`)."""
        async with self._lock:
            coordinator = self._consumer._coordinator
            if coordinator is not None and coordinator.generation < 0:
                return False  # forgotten by the broker: nothing it would take
            if rejoining(self._consumer) and not revoking:
                return False
            if not self._consumer.assignment():
                return False
            await self._consumer.commit(offsets)
            return True


@dataclass
class Offsets:
    """Per partition: the fetched offsets still in hand, and the next offset to fetch."""

    pending: dict[TopicPartition, set[int]] = field(default_factory=dict)
    fetched_to: dict[TopicPartition, int] = field(default_factory=dict)

    def fetched(self, tp: TopicPartition, offset: int) -> None:
        self.pending.setdefault(tp, set()).add(offset)
        self.fetched_to[tp] = max(self.fetched_to.get(tp, 0), offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        self.pending.get(tp, set()).discard(offset)

    def committable(self, tp: TopicPartition) -> int | None:
        if tp not in self.fetched_to:
            return None
        in_hand = self.pending.get(tp)
        return min(in_hand) if in_hand else self.fetched_to[tp]

    def all_committable(self) -> dict[TopicPartition, int]:
        found = {tp: self.committable(tp) for tp in self.fetched_to}
        return {tp: offset for tp, offset in found.items() if offset is not None}

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self.pending.pop(tp, None)
            self.fetched_to.pop(tp, None)


class GroupConsumer(Reader):
    """A member of consumer group `group_id` over `topics` (see the module docstring)."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        topics: Iterable[str],
        handler: Handler,
        metrics: KafkaMetrics,
        client_id: str,
        concurrency: int = 16,
        commit_interval_s: float = 0.1,
        session_timeout_ms: int = 10_000,
    ) -> None:
        consumer = group_member(
            settings,
            group_id=group_id,
            client_id=client_id,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(500, session_timeout_ms // 4),
        )
        super().__init__(consumer, handler, metrics, f"consumer-{group_id}")
        self._topics = list(topics)
        self._slots = asyncio.Semaphore(concurrency)
        self._interval = commit_interval_s
        self._offsets = Offsets()
        self._committed: dict[TopicPartition, int] = {}
        self._commits = SafeCommits(consumer)
        self._in_hand: set[asyncio.Task[None]] = set()
        self._committer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(
            self._topics, listener=Rebalance(self._on_revoked, self._on_assigned)
        )
        self._run()
        self._committer = asyncio.create_task(self._commit_loop(), name=f"{self._name}-commits")

    @property
    def alive(self) -> bool:
        committer_ok = (
            self._committer is None or not self._committer.done() or self._committer.cancelled()
        )
        return super().alive and committer_ok

    async def stop(self, drain_s: float = 10.0) -> None:
        """Stop fetching, let the messages in hand finish (up to `drain_s`), commit, leave."""
        await stop_task(self._task)
        if self._in_hand:
            await asyncio.wait(self._in_hand, timeout=drain_s)
        await stop_task(self._committer)
        await self._commit()
        await self._consumer.stop()

    async def _loop(self) -> None:
        try:
            while True:
                batch = await fetch(self._consumer, self._metrics, self._name, timeout_ms=100)
                for tp, records in batch.items():
                    for record in records:
                        await self._slots.acquire()  # all slots busy: stop fetching (backpressure)
                        self._offsets.fetched(tp, record.offset)
                        task = asyncio.create_task(self._one(tp, record))
                        self._in_hand.add(task)
                        task.add_done_callback(self._in_hand.discard)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._metrics.errors.labels(stage="consume", error=type(exc).__name__).inc()
            log.exception("read loop died", reader=self._name)
            raise

    async def _one(self, tp: TopicPartition, record: Any) -> None:
        try:
            await self._handle_one(tp.topic, record.value)
        finally:
            self._offsets.done(tp, record.offset)
            self._slots.release()
            progress = self._offsets.committable(tp)
            if progress is not None:
                self.catch_up.advance(tp, progress)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._commit()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        due = {
            tp: offset
            for tp, offset in self._offsets.all_committable().items()
            if (only is None or tp in only) and self._committed.get(tp) != offset
        }
        if not due:
            return
        try:
            if not await self._commits.commit(due, revoking=only is not None):
                return
        except LOST_TO_REBALANCE as exc:
            # The partitions moved to another member meanwhile: it reads them again from the
            # last commit. At-least-once; handlers are idempotent.
            self._metrics.errors.labels(stage="commit", error=type(exc).__name__).inc()
            log.warning("commit lost to a rebalance", error=repr(exc))
            return
        self._committed.update(due)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._commit(only=revoked)
        self._offsets.forget(revoked)
        for tp in revoked:
            self._committed.pop(tp, None)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        ends = await self._consumer.end_offsets(list(assigned)) if assigned else {}
        positions = {tp: await self._consumer.position(tp) for tp in assigned}
        self.catch_up.expect(ends, positions)
        log.info(
            "partitions assigned", partitions=sorted(f"{t.topic}/{t.partition}" for t in assigned)
        )


def group_member(
    settings: KafkaSettings, *, group_id: str, client_id: str, **options: Any
) -> AIOKafkaConsumer:
    """A consumer in group `group_id` that commits by hand (after handling), and starts a new
    group at the earliest offset. `options`: more of aiokafka's consumer settings."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=max(settings.request_timeout_ms, 40_000),
        **options,
    )


Moved = Callable[[set[TopicPartition]], Awaitable[None]]


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance listener, calling back a group member's own methods."""

    def __init__(self, revoked: Moved, assigned: Moved) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._assigned(assigned)
