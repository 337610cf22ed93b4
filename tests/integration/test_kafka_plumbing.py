"""The shared Kafka plumbing against the real broker: commits after handling, poison messages,
broadcast catch-up, and request/reply routed to the asking instance."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from authbus_shared.contracts.commands import CommandRejected, RevokeToken
from authbus_shared.contracts.envelope import Envelope, ReplyTo, payload_of, utcnow, wrap
from authbus_shared.contracts.topics import REPLIES, TopicSpec
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.kafka.consumers import BroadcastReader, StartAt
from authbus_shared.kafka.group import GroupConsumer
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import Responder, RpcClient, RpcTimeout, reply_partition
from authbus_shared.settings import KafkaSettings
from tests.support import eventually

Handler = Callable[[Envelope], Awaitable[None]]


def metrics() -> KafkaMetrics:
    return KafkaMetrics("test", CollectorRegistry())


def revoke(token_id: str) -> Envelope:
    return wrap(RevokeToken(token_id=token_id), producer="test", now=utcnow())


@pytest.fixture
async def topic(kafka: KafkaSettings) -> TopicSpec:
    spec = resolve(TopicSpec("plumbing.v1", 3, "test"), kafka)
    await ensure_topics(kafka, [spec])
    return spec


@pytest.fixture
async def publisher(kafka: KafkaSettings) -> AsyncIterator[Publisher]:
    pub = Publisher(kafka, client_id="test-pub", metrics=metrics())
    await pub.start()
    yield pub
    await pub.stop()


@contextlib.asynccontextmanager
async def group(
    kafka: KafkaSettings, topic: str, handler: Handler, group_id: str
) -> AsyncIterator[GroupConsumer]:
    consumer = GroupConsumer(
        kafka,
        group_id=group_id,
        topics=[topic],
        handler=handler,
        metrics=metrics(),
        client_id="test-group",
    )
    await consumer.start()
    try:
        await eventually(lambda: consumer.caught_up)
        yield consumer
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def broadcast(
    kafka: KafkaSettings, topic: str, handler: Handler, start_at: StartAt
) -> AsyncIterator[BroadcastReader]:
    reader = BroadcastReader(
        kafka, topics=[topic], handler=handler, metrics=metrics(), client_id="t", start_at=start_at
    )
    await reader.start()
    try:
        yield reader
    finally:
        await reader.stop()


async def test_a_restarted_group_member_resumes_after_what_was_handled(
    kafka: KafkaSettings, topic: TopicSpec, publisher: Publisher, unique: str
) -> None:
    seen: list[str] = []

    async def handle(envelope: Envelope) -> None:
        seen.append(envelope.payload["token_id"])

    for i in range(5):
        await publisher.publish(topic.name, revoke(f"first-{i}"), key=str(i))
    async with group(kafka, topic.name, handle, unique):
        await eventually(lambda: len(seen) == 5)
    for i in range(2):
        await publisher.publish(topic.name, revoke(f"second-{i}"), key=str(i))
    async with group(kafka, topic.name, handle, unique):
        await eventually(lambda: len(seen) == 7)
        await asyncio.sleep(0.5)  # a re-delivery of the first five would show up here

    assert sorted(seen) == sorted([f"first-{i}" for i in range(5)] + ["second-0", "second-1"])


async def test_a_poison_message_or_a_failing_handler_does_not_stall_the_partition(
    kafka: KafkaSettings, topic: TopicSpec, publisher: Publisher, unique: str
) -> None:
    handled: list[str] = []

    async def handle(envelope: Envelope) -> None:
        token_id = envelope.payload["token_id"]
        if token_id == "boom":
            raise RuntimeError("handler bug")
        handled.append(token_id)

    raw = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await raw.start()
    try:
        await raw.send_and_wait(topic.name, b"not json at all", partition=0)
    finally:
        await raw.stop()
    for token_id in ("boom", "after"):
        await publisher.publish(topic.name, revoke(token_id), partition=0)

    async with group(kafka, topic.name, handle, unique):
        await eventually(lambda: handled == ["after"])


async def test_a_slow_message_does_not_hold_up_the_others_but_order_is_kept_at_concurrency_1(
    kafka: KafkaSettings, topic: TopicSpec, publisher: Publisher, unique: str
) -> None:
    """The group consumer is pipelined: a slow handler (an argon2 check) no longer makes the
    messages fetched with it wait; with concurrency 1 (ratelimit) they are handled in order."""
    finished: list[str] = []
    slow_may_end = asyncio.Event()

    async def handle(envelope: Envelope) -> None:
        if envelope.payload["token_id"] == "slow":
            await slow_may_end.wait()
        finished.append(envelope.payload["token_id"])

    for token_id in ("slow", "fast-1", "fast-2", "fast-3"):
        await publisher.publish(topic.name, revoke(token_id), partition=0)
    pipelined = GroupConsumer(
        kafka,
        group_id=unique,
        topics=[topic.name],
        handler=handle,
        metrics=metrics(),
        client_id="t",
    )
    await pipelined.start()
    try:
        await eventually(lambda: finished == ["fast-1", "fast-2", "fast-3"])
        assert not pipelined.caught_up  # "slow" is still in hand: not caught up, not committed
        slow_may_end.set()
        await eventually(lambda: finished[-1] == "slow" and pipelined.caught_up)
    finally:
        await pipelined.stop()

    in_order: list[str] = []

    async def ordered(envelope: Envelope) -> None:
        await asyncio.sleep(0.01 if envelope.payload["token_id"] == "a" else 0)
        in_order.append(envelope.payload["token_id"])

    for token_id in ("a", "b", "c"):
        await publisher.publish(topic.name, revoke(token_id), partition=1)
    consumer = GroupConsumer(
        kafka,
        group_id=unique + "-1",
        topics=[topic.name],
        handler=ordered,
        metrics=metrics(),
        client_id="t",
        concurrency=1,
    )
    await consumer.start()
    try:
        await eventually(lambda: {"a", "b", "c"} <= set(in_order))
    finally:
        await consumer.stop()
    assert [t for t in in_order if t in "abc"] == ["a", "b", "c"]


async def test_every_broadcast_reader_sees_every_message_and_knows_when_caught_up(
    kafka: KafkaSettings, topic: TopicSpec, publisher: Publisher
) -> None:
    for i in range(6):
        await publisher.publish(topic.name, revoke(f"old-{i}"), key=str(i))
    first: list[str] = []
    second: list[str] = []
    late: list[str] = []

    async def into(box: list[str]) -> Handler:
        async def handle(envelope: Envelope) -> None:
            box.append(envelope.payload["token_id"])

        return handle

    async with (
        broadcast(kafka, topic.name, await into(first), "beginning") as a,
        broadcast(kafka, topic.name, await into(second), timedelta(minutes=5)) as b,
        broadcast(kafka, topic.name, await into(late), "end") as c,
    ):
        await eventually(lambda: a.caught_up and b.caught_up and c.caught_up)
        assert len(first) == len(second) == 6
        assert late == []
        await publisher.publish(topic.name, revoke("new"), key="n")
        await eventually(lambda: "new" in first and "new" in second and "new" in late)


@contextlib.asynccontextmanager
async def responder(
    kafka: KafkaSettings, topic: str, publisher: Publisher, group_id: str
) -> AsyncIterator[list[str]]:
    """A tiny service: answers RevokeToken with CommandRejected(detail=token_id)."""
    replies = Responder(publisher, reply_topic=resolve(REPLIES, kafka), instance_id="resp")
    answered: list[str] = []

    async def handle(envelope: Envelope) -> None:
        if not replies.wanted(envelope, utcnow()):
            return
        request = payload_of(envelope)
        assert isinstance(request, RevokeToken)
        answered.append(request.token_id)
        await replies.reply(
            envelope, CommandRejected(reason="unknown_token", detail=request.token_id)
        )

    async with group(kafka, topic, handle, group_id):
        yield answered


@contextlib.asynccontextmanager
async def asker(
    kafka: KafkaSettings, publisher: Publisher, instance: str
) -> AsyncIterator[RpcClient]:
    client = RpcClient(
        kafka,
        publisher=publisher,
        reply_topic=resolve(REPLIES, kafka),
        instance_id=instance,
        metrics=metrics(),
        client_id=instance,
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


def colliding_instances(partitions: int) -> tuple[str, str]:
    """Two instance ids that read the same reply partition."""
    seen: dict[int, str] = {}
    for n in range(10_000):
        name = f"api-{n}"
        p = reply_partition(name, partitions)
        if p in seen:
            return seen[p], name
        seen[p] = name
    raise AssertionError("no collision found")


async def test_replies_reach_the_asking_instance_even_when_two_share_a_partition(
    kafka: KafkaSettings, topic: TopicSpec, publisher: Publisher, unique: str
) -> None:
    await ensure_topics(kafka, [resolve(REPLIES, kafka)])
    one, two = colliding_instances(REPLIES.partitions)
    timeout = timedelta(seconds=10)

    async with (
        responder(kafka, topic.name, publisher, unique),
        asker(kafka, publisher, one) as a,
        asker(kafka, publisher, two) as b,
    ):
        replies = await asyncio.gather(
            *(
                c.request(topic.name, RevokeToken(token_id=f"{n}-{i}"), key=str(i), timeout=timeout)
                for i in range(10)
                for n, c in (("a", a), ("b", b))
            )
        )

    details = [payload_of(r).model_dump()["detail"] for r in replies]
    assert details == [f"{n}-{i}" for i in range(10) for n in ("a", "b")]


async def test_no_reply_in_time_raises_rpc_timeout(
    kafka: KafkaSettings, topic: TopicSpec, publisher: Publisher
) -> None:
    await ensure_topics(kafka, [resolve(REPLIES, kafka)])
    async with asker(kafka, publisher, "lonely") as client:
        with pytest.raises(RpcTimeout):
            await client.request(
                topic.name, RevokeToken(token_id="x"), key="x", timeout=timedelta(milliseconds=300)
            )


async def test_a_responder_skips_expired_requests_and_foreign_reply_topics(
    kafka: KafkaSettings, topic: TopicSpec, publisher: Publisher, unique: str
) -> None:
    now = utcnow()
    reply_topic = resolve(REPLIES, kafka).name
    stale = wrap(
        RevokeToken(token_id="stale"),
        producer="t",
        now=now - timedelta(seconds=10),
        reply_to=ReplyTo(topic=reply_topic, partition=0, instance="t"),
        timeout=timedelta(seconds=1),
    )
    foreign = wrap(
        RevokeToken(token_id="foreign"),
        producer="t",
        now=now,
        reply_to=ReplyTo(topic=f"{kafka.topic_prefix}auth.changes.v1", partition=0, instance="t"),
        timeout=timedelta(minutes=1),
    )
    fresh = wrap(
        RevokeToken(token_id="fresh"),
        producer="t",
        now=now,
        reply_to=ReplyTo(topic=reply_topic, partition=0, instance="t"),
        timeout=timedelta(minutes=1),
    )
    await ensure_topics(kafka, [resolve(REPLIES, kafka)])
    for envelope in (stale, foreign, fresh):
        await publisher.publish(topic.name, envelope, partition=0)

    async with responder(kafka, topic.name, publisher, unique) as answered:
        await eventually(lambda: answered == ["fresh"])
