"""Every wait on Kafka is bounded by the caller's budget, and Kafka's errors are classified at
one boundary (SPEC O4; issue #10 item 1): a request that cannot be sent or gets no reply ends
within its timeout as `RpcUnavailable` / `RpcTimeout` (both `TimeoutError`s, which every caller
turns into a 503 or a rate-limit fallback), never a raw aiokafka error; a producer whose broker
is away refuses new sends beyond a bound instead of queueing them."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError, KafkaConnectionError, KafkaTimeoutError
from prometheus_client import CollectorRegistry

from authbus_shared.contracts.envelope import Envelope, ReplyTo, utcnow, wrap
from authbus_shared.contracts.events import AccountChanged
from authbus_shared.kafka.consumers import fetch
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Backlogged, Publisher
from authbus_shared.kafka.rpc import RpcClient, RpcTimeout, RpcUnavailable
from authbus_shared.settings import KafkaSettings

EVENT = AccountChanged(account_id="a1", change="disabled", at=utcnow())


class StuckPublisher:
    """A publisher whose broker never acknowledges, or fails at once."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    async def publish(self, topic: str, envelope: Envelope, **_: Any) -> None:
        if self.error is not None:
            raise self.error
        await asyncio.Event().wait()


def client(publisher: Any) -> tuple[RpcClient, KafkaMetrics]:
    metrics = KafkaMetrics("test", CollectorRegistry())
    rpc = RpcClient(
        KafkaSettings(),
        publisher=publisher,
        reply_topic=type("T", (), {"name": "replies"})(),
        instance_id="api-1",
        metrics=metrics,
        client_id="test",
    )
    rpc._reply_to = ReplyTo(topic="replies", partition=0, instance="api-1")  # as if started
    return rpc, metrics


async def test_a_send_that_never_completes_ends_within_the_callers_budget() -> None:
    rpc, metrics = client(StuckPublisher())
    started = time.monotonic()

    with pytest.raises(RpcTimeout):
        await rpc.request("auth.verify.v1", EVENT, key=b"k", timeout=timedelta(milliseconds=150))

    assert time.monotonic() - started < 0.5
    assert metrics.rpc_outcomes.labels(topic="auth.verify.v1", outcome="timeout")._value.get() == 1


@pytest.mark.parametrize(
    "error", [KafkaConnectionError("broker gone"), KafkaTimeoutError(), Backlogged("full")]
)
async def test_a_kafka_error_becomes_rpc_unavailable_counted_by_class(
    error: BaseException,
) -> None:
    rpc, metrics = client(StuckPublisher(error))

    with pytest.raises(RpcUnavailable) as raised:
        await rpc.request("auth.verify.v1", EVENT, key=b"k", timeout=timedelta(seconds=1))

    assert isinstance(raised.value, TimeoutError)  # what every caller already handles
    assert (
        metrics.rpc_outcomes.labels(topic="auth.verify.v1", outcome="unavailable")._value.get() == 1
    )
    assert metrics.errors.labels(stage="rpc", error=type(error).__name__)._value.get() == 1


class NeverAcknowledged:
    async def send_and_wait(self, *_: Any, **__: Any) -> None:
        await asyncio.Event().wait()


async def test_a_producer_refuses_sends_beyond_its_bound_instead_of_queueing() -> None:
    metrics = KafkaMetrics("t", CollectorRegistry())
    publisher = Publisher(
        KafkaSettings(),
        client_id="t",
        metrics=metrics,
        max_in_flight=2,
        producer=NeverAcknowledged(),
    )
    envelope = wrap(EVENT, producer="t", now=utcnow())
    waiting = [publisher.enqueue("t", envelope) for _ in range(2)]
    await asyncio.sleep(0)

    with pytest.raises(Backlogged):
        await publisher.publish("t", envelope)
    assert metrics.errors.labels(stage="produce", error="Backlogged")._value.get() == 1
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


TP = TopicPartition("t", 0)
RECORD = SimpleNamespace(offset=41, value=b"")


class FlakyConsumer:
    """A consumer whose broker is away for a few fetches, then back."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures

    async def getmany(self, **_: Any) -> dict[Any, list[Any]]:
        if self.failures:
            raise self.failures.pop(0)
        return {TP: [RECORD]}


async def test_a_read_loop_rides_out_a_broker_absence() -> None:
    metrics = KafkaMetrics("t", CollectorRegistry())
    consumer = FlakyConsumer([KafkaConnectionError("gone"), KafkaConnectionError("still gone")])

    batch = await fetch(consumer, metrics, "test")

    assert batch == {TP: [RECORD]}
    assert metrics.errors.labels(stage="consume", error="KafkaConnectionError")._value.get() == 2


async def test_a_read_loop_still_ends_on_an_error_that_is_not_transient() -> None:
    consumer = FlakyConsumer([IllegalStateError("not subscribed")])

    with pytest.raises(IllegalStateError):
        await fetch(consumer, KafkaMetrics("t", CollectorRegistry()), "test")


class WatermarkedConsumer:
    """What the lag gauge reads of a consumer: its assignment and high watermarks."""

    def __init__(self, high: dict[TopicPartition, int]) -> None:
        self.high = high

    def assignment(self) -> set[TopicPartition]:
        return set(self.high)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high.get(tp)


def _lag(registry: CollectorRegistry, reader: str, topic: str) -> float | None:
    return registry.get_sample_value(
        "t_kafka_consumer_lag_messages", {"reader": reader, "topic": topic}
    )


def test_consumer_lag_is_the_high_watermark_past_what_the_reader_fetched() -> None:
    registry = CollectorRegistry()
    metrics = KafkaMetrics("t", registry)
    p0, p1, other = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("u", 0)
    consumer = WatermarkedConsumer({p0: 100, p1: 50, other: 7})
    records = [SimpleNamespace(offset=n) for n in range(80, 90)]  # fetched up to offset 89

    metrics.lag.fetched("reader", consumer, {p0: records, p1: [SimpleNamespace(offset=49)]})

    assert _lag(registry, "reader", "t") == (100 - 90) + (50 - 50)
    assert _lag(registry, "reader", "u") is None  # nothing fetched from it yet: unknown
    consumer.high[p0] = 95  # a stale watermark behind the position never counts below zero
    metrics.lag.fetched("reader", consumer, {p0: [SimpleNamespace(offset=99)]})
    assert _lag(registry, "reader", "t") == 0
    del consumer.high[p1]  # revoked partitions drop out
    consumer.high[p0] = 130
    assert _lag(registry, "reader", "t") == 30
