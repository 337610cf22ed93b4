"""Baselines: the broker and the database on their own, on the same run, no authz running.

Each Kafka hop publishes with the project's `Publisher` (acks=all, idempotence, the run's
linger) and waits until the message has been read back, matched by correlation id:
- `base:kafka`: read as the asker reads its replies (`RpcClient`): one partition, assigned,
  from its end, with the reply reader's settings. The reply leg of a verification.
- `base:kafka0`: the same with `linger_ms=0` (shown only when the run's linger is not 0).
- `base:group`: read as authz reads its requests: the project's `GroupConsumer` (each message
  handled as soon as fetched, offsets committed in the background) over as many partitions as
  `auth.verify.v1`. The request leg of a verification, without authz's work.
- `base:mongo`: one `find_one` by `_id` through motor. authz does two per bearer check.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from motor.motor_asyncio import AsyncIOMotorClient
from prometheus_client import CollectorRegistry

from authbus_dev import infra
from authbus_shared.contracts import topics
from authbus_shared.contracts.authz import CredentialVerified, Outcome
from authbus_shared.contracts.envelope import (
    Envelope,
    MessageDecodeError,
    decode,
    new_id,
    utcnow,
    wrap,
)
from authbus_shared.contracts.topics import TopicSpec
from authbus_shared.kafka.admin import ensure_topics
from authbus_shared.kafka.group import GroupConsumer
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Publisher
from authbus_shared.settings import KafkaSettings

from . import cpu
from .console import progress
from .load import closed_loop
from .measure import Measured, measure_all
from .options import Options
from .report import Report

REPLY_TIMEOUT_S = 10.0


class Echo:
    """One Kafka hop: publish an envelope with the project's `Publisher`, wait until the
    reader hands it back. Subclasses say how it is read."""

    PARTITIONS: ClassVar[int] = 1

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.metrics = KafkaMetrics("bench", CollectorRegistry())
        self._publisher = Publisher(kafka, client_id="bench-echo", metrics=self.metrics)
        self._pending: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        await self._publisher.start()
        await self.start_reading()

    async def stop(self) -> None:
        await self.stop_reading()
        await self._publisher.stop()

    async def start_reading(self) -> None:
        raise NotImplementedError

    async def stop_reading(self) -> None:
        raise NotImplementedError

    def address(self, i: int) -> tuple[bytes | None, int | None]:
        """(key, partition) of message i."""
        raise NotImplementedError

    async def __call__(self, i: int) -> bool:
        correlation_id = new_id()
        payload = CredentialVerified(outcome=Outcome.INVALID)  # a reply-sized message
        envelope = wrap(payload, producer="bench", now=utcnow(), correlation_id=correlation_id)
        arrived = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = arrived
        key, partition = self.address(i)
        try:
            await self._publisher.publish(self.topic, envelope, key=key, partition=partition)
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                await arrived
        except TimeoutError:
            return False
        finally:
            self._pending.pop(correlation_id, None)
        return True

    def arrived(self, envelope: Envelope) -> None:
        future = self._pending.get(envelope.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(None)


class AssignedEcho(Echo):
    """Read as the asker reads its replies: one partition, assigned, from its end, with the
    reply reader's consumer settings (`RpcClient`)."""

    async def start_reading(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers,
            client_id="bench-echo",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,  # as RpcClient's reply reader
        )
        await self._consumer.start()
        tp = TopicPartition(self.topic, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_end(tp)
        await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def stop_reading(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._consumer.stop()

    def address(self, i: int) -> tuple[bytes | None, int | None]:
        return None, 0

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=500, max_records=500)
            for records in batch.values():
                for record in records:
                    with contextlib.suppress(MessageDecodeError):
                        self.arrived(decode(record.value))


class GroupEcho(Echo):
    """Read as authz reads its requests: the project's `GroupConsumer` over as many partitions
    as `auth.verify.v1`, messages keyed to spread over them."""

    PARTITIONS = topics.AUTH_VERIFY.partitions

    async def start_reading(self) -> None:
        async def handle(envelope: Envelope) -> None:
            self.arrived(envelope)

        self._consumer = GroupConsumer(
            self.kafka,
            group_id=f"{self.topic}.group",
            topics=[self.topic],
            handler=handle,
            metrics=self.metrics,
            client_id="bench-echo-group",
            concurrency=64,  # as authz
        )
        await self._consumer.start()
        async with asyncio.timeout(30):
            while not self._consumer.caught_up:  # noqa: ASYNC110 - the consumer's own flag
                await asyncio.sleep(0.05)

    async def stop_reading(self) -> None:
        await self._consumer.stop()

    def address(self, i: int) -> tuple[bytes | None, int | None]:
        return hashlib.sha256(str(i).encode()).digest(), None


@contextlib.asynccontextmanager
async def echoing(kafka: KafkaSettings, kind: type[Echo]) -> AsyncIterator[Echo]:
    topic = f"bench{uuid.uuid4().hex[:6]}.echo.v1"
    await ensure_topics(kafka, [TopicSpec(topic, kind.PARTITIONS, "bench: Kafka hops")])
    echo = kind(kafka, topic)
    await echo.start()
    try:
        yield echo
    finally:
        await echo.stop()


async def warm_broker(kafka: KafkaSettings, seconds: float) -> None:
    """Hops at a high rate through a group consumer (produce, fetch and offset commits),
    thrown away: the broker's JVM compiles its hot paths."""
    if seconds > 0:
        async with echoing(kafka.model_copy(update={"linger_ms": 0}), GroupEcho) as echo:
            await closed_loop(echo, concurrency=8, seconds=seconds)


async def kafka_baseline(
    kafka: KafkaSettings, label: str, kind: type[Echo], pids: cpu.Pids, report: Report
) -> None:
    async with echoing(kafka, kind) as echo:
        await measure_all(Measured(label, echo, pids), report.opts, report.add)


async def mongo_baseline(cfg: infra.InfraConfig, pids: cpu.Pids, report: Report) -> None:
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(cfg.mongo_uri, tz_aware=True)
    try:
        collection = client[f"bench_{uuid.uuid4().hex[:6]}"]["probe"]
        docs = 64
        await collection.insert_many([{"_id": f"d{i}", "n": i} for i in range(docs)])

        async def find(i: int) -> bool:
            return await collection.find_one({"_id": f"d{i % docs}"}) is not None

        await measure_all(Measured("base:mongo", find, pids), report.opts, report.add)
    finally:
        client.close()


async def baselines(cfg: infra.InfraConfig, opts: Options, report: Report) -> None:
    pids = cpu.process_ids(cfg, None)
    kafka = opts.kafka(cfg.bootstrap)
    progress(f"warming the broker up ({opts.broker_warmup:g} s)")
    await warm_broker(kafka, opts.broker_warmup)
    progress("baselines")
    await kafka_baseline(kafka, "base:kafka", AssignedEcho, pids, report)
    if kafka.linger_ms != 0:
        unlingered = kafka.model_copy(update={"linger_ms": 0})
        await kafka_baseline(unlingered, "base:kafka0", AssignedEcho, pids, report)
    await kafka_baseline(kafka, "base:group", GroupEcho, pids, report)
    await mongo_baseline(cfg, pids, report)
