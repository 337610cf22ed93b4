"""ratelimit as a service over the real broker: it counts the hits of the keys it owns and
broadcasts decisions, with the lockout once the limit is passed (SPEC S2, R1, R3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from authbus_dev.ports import free_port
from authbus_ratelimit.runner import run as run_ratelimit
from authbus_ratelimit.settings import RatelimitSettings
from authbus_shared.contracts import topics
from authbus_shared.contracts.envelope import Contract, utcnow, wrap
from authbus_shared.contracts.ratelimit import RateDecided, RecordHits
from authbus_shared.kafka.admin import resolve
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Publisher
from authbus_shared.settings import KafkaSettings, OpsSettings
from tests.support import collected, eventually, in_process


@pytest.fixture
async def decisions(kafka: KafkaSettings) -> AsyncIterator[list[Contract]]:
    settings = RatelimitSettings(
        kafka=kafka, limit=5, window_s=60, lockout_s=60, ops=OpsSettings(port=free_port())
    )
    async with (
        in_process(run_ratelimit(settings), settings.ops.port),
        collected(kafka, topics.RATELIMIT_DECISIONS) as seen,
    ):
        yield seen


async def test_the_owner_counts_hits_and_locks_the_key_out_past_its_limit(
    kafka: KafkaSettings, decisions: list[Contract]
) -> None:
    publisher = Publisher(kafka, client_id="t", metrics=KafkaMetrics("t", CollectorRegistry()))
    await publisher.start()
    hits_topic = resolve(topics.RATELIMIT_HITS, kafka).name
    at = utcnow()
    try:
        for hits in (2, 3, 1):
            message = RecordHits(key="acct:ann", hits=hits, first_at=at)
            await publisher.publish(hits_topic, wrap(message, producer="t", now=at), key="acct:ann")
    finally:
        await publisher.stop()

    await eventually(lambda: len(decisions) == 3)
    rated = [d for d in decisions if isinstance(d, RateDecided)]
    assert [(d.count, d.remaining) for d in rated] == [(2, 3), (5, 0), (6, 0)]
    assert rated[1].blocked_until is None
    blocked_until = rated[2].blocked_until
    assert blocked_until is not None
    assert abs(blocked_until - (at + timedelta(seconds=60))) < timedelta(seconds=1)
    assert {d.limit for d in rated} == {5}
