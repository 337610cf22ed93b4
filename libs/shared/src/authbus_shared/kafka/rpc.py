"""Request/reply over Kafka: correlation id, deadline, replies routed to the asking instance.

Routing (docs/adr/0004-reply-routing.md): one shared reply topic with P partitions (32 by
default). An asker picks one partition from a hash of its instance id and reads only that
partition, without a consumer group, from its end at start. A request carries
`reply_to = (topic, partition, instance)`; the responder produces the reply to that partition.
The asker matches replies to waiting calls by correlation id and drops the rest.

With N askers on P partitions an asker reads about max(1, N/P) times its own reply traffic
(50 api instances on 32 partitions: each partition has 1-3 readers). No topic is created per
instance, no coordination is needed to join or leave, and a crashed asker leaves nothing
behind. Raise P when instances outnumber partitions by much; replies are never stored beyond
the topic's short retention.

Deadline: the asker waits `timeout` in all, sending included (a broker that is gone or a
producer that is backed up cannot stretch it); the request carries `deadline` so a responder
that picks it up late (a backlog) skips it rather than doing work nobody waits for.

Errors, classified here once (SPEC O4): no reply in time raises `RpcTimeout`; a request that
could not be sent (any Kafka error: the broker unreachable, the producer's queue full) raises
`RpcUnavailable`, a subclass, so every caller that handles a timeout (the api: 503, or the
rate-limit fallback) handles both, and no Kafka error class leaks past this boundary as a 500
or a dead task. Each is counted: `kafka_rpc_outcomes_total{outcome}` (replied, timeout,
unavailable) and, for the unavailable ones, `kafka_errors_total{stage="rpc",error=<class>}`.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from datetime import datetime, timedelta

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from authbus_shared.contracts.envelope import (
    Contract,
    Envelope,
    MessageDecodeError,
    ReplyTo,
    decode,
    new_id,
    utcnow,
    wrap,
)
from authbus_shared.contracts.topics import TopicSpec
from authbus_shared.kafka.admin import partitions_of
from authbus_shared.kafka.consumers import fetch, stop_task
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Backlogged, Key, Publisher
from authbus_shared.settings import KafkaSettings

log = structlog.get_logger(__name__)


class RpcTimeout(TimeoutError):
    """No reply before the deadline."""


class RpcUnavailable(RpcTimeout):
    """The request could not be sent (the broker is unreachable, the producer backed up)."""


def reply_partition(instance_id: str, partitions: int) -> int:
    return zlib.crc32(instance_id.encode()) % partitions


class RpcClient:
    def __init__(
        self,
        settings: KafkaSettings,
        *,
        publisher: Publisher,
        reply_topic: TopicSpec,
        instance_id: str,
        metrics: KafkaMetrics,
        client_id: str,
    ) -> None:
        self._publisher = publisher
        self._reply_topic = reply_topic.name
        self._instance = instance_id
        self._metrics = metrics
        self._consumer_config = {
            "bootstrap_servers": settings.bootstrap_servers,
            "client_id": client_id,
            "group_id": None,
            "enable_auto_commit": False,
            "fetch_max_wait_ms": 100,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._reply_to: ReplyTo | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._reply_to is not None and self.alive

    @property
    def task(self) -> asyncio.Task[None]:
        if self._task is None:
            raise RuntimeError("RpcClient not started")
        return self._task

    @property
    def alive(self) -> bool:
        return self._task is None or not self._task.done() or self._task.cancelled()

    async def start(self) -> None:
        self._consumer = consumer = AIOKafkaConsumer(**self._consumer_config)
        await consumer.start()
        partitions = await partitions_of(consumer, self._reply_topic)
        if not partitions:
            raise RuntimeError(f"reply topic {self._reply_topic} missing")
        tp = TopicPartition(self._reply_topic, reply_partition(self._instance, len(partitions)))
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)  # resolve now: no reply sent after this is missed
        self._reply_to = ReplyTo(topic=tp.topic, partition=tp.partition, instance=self._instance)
        self._task = asyncio.create_task(self._read_replies(), name="rpc-replies")
        log.info("reply inbox ready", topic=tp.topic, partition=tp.partition)

    async def stop(self) -> None:
        await stop_task(self._task)
        for fut in self._pending.values():
            fut.cancel()
        if self._consumer is not None:
            await self._consumer.stop()

    async def request(
        self,
        topic: str,
        payload: Contract,
        *,
        key: Key,
        timeout: timedelta,  # noqa: ASYNC109 - the deadline also travels in the request
        partition: int | None = None,
    ) -> Envelope:
        """Send `payload` to `topic` (to `partition`, else the key's) and wait for the reply
        envelope."""
        if self._reply_to is None:
            raise RuntimeError("RpcClient.request before start")
        correlation_id = new_id()
        envelope = wrap(
            payload,
            producer=self._instance,
            now=utcnow(),
            correlation_id=correlation_id,
            reply_to=self._reply_to,
            timeout=timeout,
        )
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout.total_seconds()):
                await self._publisher.publish(topic, envelope, key=key, partition=partition)
                reply = await future
        except TimeoutError:
            self._metrics.rpc_outcomes.labels(topic=topic, outcome="timeout").inc()
            raise RpcTimeout(f"no reply from {topic} within {timeout}") from None
        except (KafkaError, Backlogged) as exc:
            self._metrics.rpc_outcomes.labels(topic=topic, outcome="unavailable").inc()
            self._metrics.errors.labels(stage="rpc", error=type(exc).__name__).inc()
            raise RpcUnavailable(f"{topic}: {type(exc).__name__}") from exc
        finally:
            self._pending.pop(correlation_id, None)
        self._metrics.rpc_outcomes.labels(topic=topic, outcome="replied").inc()
        self._metrics.rpc_duration.labels(topic=topic).observe(time.perf_counter() - started)
        return reply

    async def _read_replies(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("RpcClient not started")
        while True:
            batch = await fetch(consumer, self._metrics, "rpc-replies", timeout_ms=500)
            for records in batch.values():
                for record in records:
                    self._deliver(record.value)

    def _deliver(self, raw: bytes | None) -> None:
        try:
            envelope = decode(raw)
        except MessageDecodeError:
            self._metrics.consumed.labels(topic=self._reply_topic, result="undecodable").inc()
            return
        future = self._pending.get(envelope.correlation_id or "")
        if future is None or future.done():
            return  # another instance's reply, or one that came after its caller gave up
        future.set_result(envelope)
        self._metrics.consumed.labels(topic=self._reply_topic, result="handled").inc()


class Responder:
    """Sends replies, only to the deployment's reply topic (a request cannot aim a reply at
    another topic) and only while the asker still waits."""

    def __init__(self, publisher: Publisher, *, reply_topic: TopicSpec, instance_id: str) -> None:
        self._publisher = publisher
        self._reply_topic = reply_topic.name
        self._instance = instance_id

    def wanted(self, request: Envelope, now: datetime) -> bool:
        """Whether a reply can be sent and is still awaited."""
        return (
            request.reply_to is not None
            and request.reply_to.topic == self._reply_topic
            and not request.expired(now)
        )

    async def reply(self, request: Envelope, payload: Contract) -> None:
        addressed = self._addressed(request, payload)
        if addressed is not None:
            topic, envelope, partition = addressed
            await self._publisher.publish(topic, envelope, partition=partition)

    def reply_nowait(self, request: Envelope, payload: Contract) -> None:
        """Send the reply without waiting for the broker (a failure is logged and counted by
        the publisher): for a handler that must go on with the next message at once."""
        addressed = self._addressed(request, payload)
        if addressed is not None:
            topic, envelope, partition = addressed
            self._publisher.send_nowait(topic, envelope, partition=partition)

    def _addressed(self, request: Envelope, payload: Contract) -> tuple[str, Envelope, int] | None:
        """Where the reply goes and the reply, or None when the request names no valid one."""
        if request.reply_to is None or request.reply_to.topic != self._reply_topic:
            log.warning("reply not sent: bad reply_to", type=request.type, id=request.id)
            return None
        envelope = wrap(
            payload,
            producer=self._instance,
            now=utcnow(),
            correlation_id=request.correlation_id,
        )
        return request.reply_to.topic, envelope, request.reply_to.partition
