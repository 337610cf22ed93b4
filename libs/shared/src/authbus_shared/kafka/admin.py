"""Topic creation and checks, broker readiness.

`ensure_topics` creates what is missing (idempotent, safe to race) and checks that every topic,
new or already there, has the settings the services rely on for correctness
(`ENFORCED_CONFIGS`): the leases topic's `message.timestamp.type=LogAppendTime` makes the
broker's clock the owner's, identical on a replay (ADR 0010). A topic someone created by hand
without it would let a replay rebuild different windows; the start fails naming the topic and
the fix. Capacity settings (retention, partitions) stay the operator's to tune.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from authbus_shared.contracts.topics import TopicSpec
from authbus_shared.settings import ConfigError, KafkaSettings

log = structlog.get_logger(__name__)

TOPIC_ALREADY_EXISTS = 36
ENFORCED_CONFIGS = frozenset({"message.timestamp.type"})


def resolve(spec: TopicSpec, settings: KafkaSettings) -> TopicSpec:
    """The spec with this deployment's topic prefix applied (empty by default)."""
    if not settings.topic_prefix:
        return spec
    return TopicSpec(settings.topic_prefix + spec.name, spec.partitions, spec.purpose, spec.config)


async def ensure_topics(
    settings: KafkaSettings, specs: Iterable[TopicSpec], *, timeout_s: float = 30.0
) -> None:
    """Create the topics that do not exist yet (idempotent, safe to race), wait until the
    broker's metadata shows every one of them, then check their `ENFORCED_CONFIGS` (a
    `ConfigError` names a topic that differs, and the fix)."""
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
        await check_configs(admin, specs, settings.bootstrap_servers)
    finally:
        await admin.close()
    log.info("topics ready", topics=sorted(s.name for s in specs))


async def check_configs(
    admin: AIOKafkaAdminClient, specs: Iterable[TopicSpec], bootstrap: str
) -> None:
    """Every topic's `ENFORCED_CONFIGS` as its spec says, or a `ConfigError` with the fix."""
    wanted = {s.name: {k: v for k, v in s.config.items() if k in ENFORCED_CONFIGS} for s in specs}
    wanted = {name: configs for name, configs in wanted.items() if configs}
    if not wanted:
        return
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(configs))
        for name, configs in wanted.items()
    ]
    wrong = []
    for response in await admin.describe_configs(resources):
        for code, message, _type, name, entries in response.resources:
            if code:
                raise KafkaError(f"cannot read the configuration of topic {name}: {code} {message}")
            found = {entry[0]: entry[1] for entry in entries}
            wrong += [
                (name, k, v, found.get(k)) for k, v in wanted[name].items() if found.get(k) != v
            ]
    if wrong:
        lines = [
            f"  topic {name}: {key}={found} but authbus needs {key}={value}; fix: "
            f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {name} --add-config {key}={value} (applies to new records; or "
            "delete the topic and let the services create it)"
            for name, key, value, found in wrong
        ]
        raise ConfigError("topic configuration:\n" + "\n".join(lines))


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The partition ids of `topic`, fetched from the brokers now.

    aiokafka's public `partitions_for_topic` only reads a cache that a manually assigned
    consumer never fills, and `topics()` returns names only; the client's fresh cluster
    metadata holds the partitions (aiokafka 0.14).
    """
    cluster = await consumer._client.fetch_all_metadata()
    return sorted(cluster.partitions_for_topic(topic) or ())
