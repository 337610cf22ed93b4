"""Reading Kafka: what every reader shares, and the broadcast reader (the group consumer is in
`group.py`).

Readers hand each message, decoded into an `Envelope`, to a handler, and track whether they
have caught up: the end offsets are taken when partitions are (re)assigned, and the reader is
caught up once its positions reach them. Readiness (SPEC S5) uses that.

Error boundary (STYLE 5): a message that is not an envelope, or whose contract is unknown, is
counted as `undecodable` and skipped (a poison message must not stall a partition). A handler
that raises is counted under `<svc>_kafka_errors_total{stage="handler"}` with the error class
and logged with its traceback; the message is then treated as handled. Handlers answer their
own failures (a request gets a `RequestFailed` reply), so raising is reserved for bugs, which
are logged loudly rather than crash-looping every instance on the same message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from authbus_shared.contracts.envelope import Envelope, MessageDecodeError, decode, utcnow
from authbus_shared.kafka.admin import partitions_of
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.settings import KafkaSettings

log = structlog.get_logger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]
StartAt = Literal["beginning", "end"] | timedelta


@dataclass
class CatchUp:
    """Which partitions still have to be read up to the offset they had at assignment."""

    targets: dict[TopicPartition, int] = field(default_factory=dict)
    assigned: bool = False

    def expect(
        self, targets: dict[TopicPartition, int], positions: dict[TopicPartition, int]
    ) -> None:
        self.targets = {tp: end for tp, end in targets.items() if positions.get(tp, 0) < end}
        self.assigned = True

    def advance(self, tp: TopicPartition, next_offset: int) -> None:
        target = self.targets.get(tp)
        if target is not None and next_offset >= target:
            del self.targets[tp]

    @property
    def done(self) -> bool:
        return self.assigned and not self.targets


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0


async def fetch(
    consumer: AIOKafkaConsumer, metrics: KafkaMetrics, name: str, timeout_ms: int = 200
) -> dict[TopicPartition, list[Any]]:
    """One `getmany`, riding out the broker's absences (SPEC O4): a retriable Kafka error (the
    broker unreachable, a leader moving) is counted and retried with a capped backoff instead of
    ending the read loop, which would end the process (every instance at once, on a blip).
    Other errors end it, as before."""
    backoff = RETRY_FIRST_S
    while True:
        try:
            batch: dict[TopicPartition, list[Any]] = await consumer.getmany(
                timeout_ms=timeout_ms, max_records=500
            )
        except KafkaError as exc:
            if not exc.retriable:
                raise
            metrics.errors.labels(stage="consume", error=type(exc).__name__).inc()
            log.warning("fetch failed, retrying", reader=name, error=repr(exc), in_s=backoff)
            await asyncio.sleep(backoff)
            backoff = min(RETRY_MAX_S, backoff * 2)
            continue
        metrics.lag.fetched(name, consumer, batch)
        return batch


class Reader:
    """What both readers share: the read loop, decoding, error counting, catch-up."""

    def __init__(
        self, consumer: AIOKafkaConsumer, handler: Handler, metrics: KafkaMetrics, name: str
    ) -> None:
        self._consumer = consumer
        self._handler = handler
        self._metrics = metrics
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self.catch_up = CatchUp()

    @property
    def caught_up(self) -> bool:
        return self.catch_up.done

    @property
    def task(self) -> asyncio.Task[None]:
        """The read loop (after `start`): the runner stops the service if it ends."""
        if self._task is None:
            raise RuntimeError(f"{self._name} not started")
        return self._task

    def _run(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        await stop_task(self._task)
        await self._consumer.stop()

    @property
    def alive(self) -> bool:
        """False once the read loop has died (liveness): the process should be restarted."""
        return self._task is None or not self._task.done() or self._task.cancelled()

    async def _loop(self) -> None:
        try:
            while True:
                batch = await fetch(self._consumer, self._metrics, self._name)
                if not batch:
                    continue
                for tp, records in batch.items():
                    for record in records:
                        await self._record(tp, record)
                    self.catch_up.advance(tp, records[-1].offset + 1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._metrics.errors.labels(stage="consume", error=type(exc).__name__).inc()
            log.exception("read loop died", reader=self._name)
            raise

    async def _record(self, tp: TopicPartition, record: Any) -> None:
        """One fetched record, in partition order (a subclass may want more than its value)."""
        await self._handle_one(tp.topic, record.value)

    async def _handle_one(
        self, topic: str, raw: bytes | None, handler: Handler | None = None
    ) -> None:
        try:
            envelope = decode(raw)
        except MessageDecodeError as exc:
            self._metrics.consumed.labels(topic=topic, result="undecodable").inc()
            log.warning("undecodable message skipped", topic=topic, reason=str(exc))
            return
        try:
            await (handler or self._handler)(envelope)
        except MessageDecodeError as exc:
            self._metrics.consumed.labels(topic=topic, result="undecodable").inc()
            log.warning("message skipped", topic=topic, type=envelope.type, reason=str(exc))
        except Exception as exc:
            self._metrics.consumed.labels(topic=topic, result="failed").inc()
            self._metrics.errors.labels(stage="handler", error=type(exc).__name__).inc()
            log.exception("handler failed", topic=topic, type=envelope.type, id=envelope.id)
        else:
            self._metrics.consumed.labels(topic=topic, result="handled").inc()


class BroadcastReader(Reader):
    """Reads every partition of `topics`, without a group: each instance sees every message.

    `start_at`: `beginning` (compacted state topics), `end` (only what happens from now), or a
    `timedelta` (what happened in that last stretch of time, e.g. the longest rate window).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        topics: Iterable[str],
        handler: Handler,
        metrics: KafkaMetrics,
        client_id: str,
        start_at: StartAt,
    ) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
        )
        self._topics = list(topics)
        super().__init__(consumer, handler, metrics, f"broadcast-{'+'.join(self._topics)}")
        self._start_at = start_at

    async def start(self) -> None:
        await self._consumer.start()
        tps = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in await partitions_of(self._consumer, topic)
        ]
        if not tps:
            raise RuntimeError(f"no partitions for {self._topics}: topics missing?")
        self._consumer.assign(tps)
        await self._seek(tps)
        positions = {tp: await self._consumer.position(tp) for tp in tps}
        self.catch_up.expect(await self._consumer.end_offsets(tps), positions)
        self._run()

    async def _seek(self, tps: list[TopicPartition]) -> None:
        if self._start_at == "beginning":
            await self._consumer.seek_to_beginning(*tps)
        elif self._start_at == "end":
            await self._consumer.seek_to_end(*tps)
        else:
            since_ms = int((utcnow() - self._start_at).timestamp() * 1000)
            # The ends first: nothing since `since` means "start at the end as it was before
            # looking", so a message appended meanwhile is still read.
            ends = await self._consumer.end_offsets(tps)
            found = await self._consumer.offsets_for_times({tp: since_ms for tp in tps})
            for tp in tps:
                hit = found.get(tp)
                self._consumer.seek(tp, ends[tp] if hit is None else hit.offset)
