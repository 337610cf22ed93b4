"""Topic checks at start on the real broker (ADR 0010, 0014): an existing leases topic without
the broker's clock (`message.timestamp.type=LogAppendTime`) refuses the start, naming the topic
and the fix; one the services created passes, every time."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from authbus_shared.contracts import topics
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.settings import ConfigError, KafkaSettings


async def create_by_hand(kafka: KafkaSettings, name: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 3, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def test_a_leases_topic_stamped_by_the_producers_refuses_the_start(
    kafka: KafkaSettings,
) -> None:
    leases = resolve(topics.RATELIMIT_LEASES, kafka)
    await create_by_hand(kafka, leases.name, {"message.timestamp.type": "CreateTime"})

    with pytest.raises(ConfigError) as refused:
        await ensure_topics(kafka, [resolve(topics.REPLIES, kafka), leases])

    message = str(refused.value)
    assert leases.name in message
    assert "message.timestamp.type=CreateTime" in message
    assert f"--entity-name {leases.name} --add-config message.timestamp.type=LogAppendTime" in (
        message
    )


async def test_topics_the_services_created_pass_the_check_on_every_start(
    kafka: KafkaSettings,
) -> None:
    specs = [resolve(spec, kafka) for spec in topics.ALL_TOPICS]

    await ensure_topics(kafka, specs)  # creates them
    await ensure_topics(kafka, specs)  # finds them, checks them


async def test_a_topic_without_enforced_settings_is_not_second_guessed(
    kafka: KafkaSettings,
) -> None:
    """Capacity settings stay the operator's: retention or partitions changed by hand pass."""
    decisions = resolve(topics.RATELIMIT_DECISIONS, kafka)
    await create_by_hand(kafka, decisions.name, {"retention.ms": "60000"})

    await ensure_topics(kafka, [decisions])
