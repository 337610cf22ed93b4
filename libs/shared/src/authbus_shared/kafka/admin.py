"""Topic creation and broker readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from authbus_shared.contracts.topics import TopicSpec
from authbus_shared.settings import KafkaSettings

log = structlog.get_logger(__name__)

TOPIC_ALREADY_EXISTS = 36


def resolve(spec: TopicSpec, settings: KafkaSettings) -> TopicSpec:
    """The spec with this deployment's topic prefix applied (empty by default)."""
    if not settings.topic_prefix:
        return spec
    return TopicSpec(settings.topic_prefix + spec.name, spec.partitions, spec.purpose, spec.config)


async def ensure_topics(
    settings: KafkaSettings, specs: Iterable[TopicSpec], *, timeout_s: float = 30.0
) -> None:
    """Create the topics that do not exist yet (idempotent, safe to race), then wait until the
    broker's metadata shows every one of them."""
    specs = list(specs)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id_prefix}-admin",
        request_timeout_ms=settings.request_timeout_ms,
    )
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=settings.topic_replication_factor,
                    topic_configs=dict(s.config),
                )
                for s in specs
            ]
        )
        for topic, code, *rest in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise KafkaError(f"cannot create topic {topic}: error {code} {rest}")
        deadline = time.monotonic() + timeout_s
        wanted = {s.name for s in specs}
        while True:
            present = set(await admin.list_topics())
            if wanted <= present:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not visible: {sorted(wanted - present)}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    log.info("topics ready", topics=sorted(s.name for s in specs))


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The partition ids of `topic`, fetched from the brokers now.

    aiokafka's public `partitions_for_topic` only reads a cache that a manually assigned
    consumer never fills, and `topics()` returns names only; the client's fresh cluster
    metadata holds the partitions (aiokafka 0.14).
    """
    cluster = await consumer._client.fetch_all_metadata()
    return sorted(cluster.partitions_for_topic(topic) or ())
