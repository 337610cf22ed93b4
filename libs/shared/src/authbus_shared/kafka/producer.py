"""The one way authbus produces: `acks="all"`, idempotence on, linger chosen by settings.

aiokafka's defaults are `acks=1` and no idempotence; a message the broker acknowledged under
those can still be lost on a leader change, so they are set explicitly here (DESIGN, Kafka).

Backpressure: at most `max_in_flight` sends wait for their acknowledgement at once; beyond,
a send fails at once with `Backlogged` instead of queueing without bound while the broker is
away (a caller with a budget gets its answer in time; SPEC O4).
"""

from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaProducer

from authbus_shared.contracts.envelope import Envelope, encode
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.settings import KafkaSettings

log = structlog.get_logger(__name__)
Key = str | bytes | None
MAX_IN_FLIGHT = 10_000


class Backlogged(Exception):
    """Too many sends wait for the broker already: this one is not queued."""


def _key_bytes(key: Key) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class Publisher:
    def __init__(
        self,
        settings: KafkaSettings,
        *,
        client_id: str,
        metrics: KafkaMetrics,
        max_in_flight: int = MAX_IN_FLIGHT,
        producer: AIOKafkaProducer | None = None,  # a stand-in, for tests
    ) -> None:
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._producer = producer or AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            request_timeout_ms=settings.request_timeout_ms,
        )
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()  # flushes what is buffered

    async def partitions(self, topic: str) -> list[int]:
        """The partition ids of `topic`, from the broker's metadata."""
        return sorted(await self._producer.partitions_for(topic))

    async def publish(
        self, topic: str, envelope: Envelope, *, key: Key = None, partition: int | None = None
    ) -> None:
        """Send and wait for the broker's acknowledgement (all in-sync replicas)."""
        await self.enqueue(topic, envelope, key=key, partition=partition)

    def enqueue(
        self, topic: str, envelope: Envelope, *, key: Key = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        """Send without waiting: returns a future that resolves on acknowledgement. Lets a
        caller put many messages in one batch (linger) and wait for them together."""
        return asyncio.ensure_future(self._send(topic, envelope, key, partition))

    def send_nowait(
        self, topic: str, envelope: Envelope, *, key: Key = None, partition: int | None = None
    ) -> None:
        """Send, and do not wait: for messages nobody waits on (a reply, a broadcast, a lease
        release). A failure is counted by `_send` and logged here."""
        self.enqueue(topic, envelope, key=key, partition=partition).add_done_callback(_unsent)

    async def _send(self, topic: str, envelope: Envelope, key: Key, partition: int | None) -> None:
        if self._in_flight >= self._max_in_flight:
            self._metrics.errors.labels(stage="produce", error="Backlogged").inc()
            raise Backlogged(f"{self._in_flight} sends already wait for the broker")
        self._in_flight += 1
        try:
            await self._producer.send_and_wait(
                topic, encode(envelope), key=_key_bytes(key), partition=partition
            )
        except Exception as exc:
            self._metrics.errors.labels(stage="produce", error=type(exc).__name__).inc()
            raise
        finally:
            self._in_flight -= 1
        self._metrics.produced.labels(topic=topic).inc()


def _unsent(sent: asyncio.Future[None]) -> None:
    if not sent.cancelled() and (error := sent.exception()) is not None:
        log.warning("message not sent", error=repr(error))
