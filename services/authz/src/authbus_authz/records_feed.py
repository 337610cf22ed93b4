"""The changes feed into authz's record cache (ADR 0019): a broadcast reader of
`auth.changes.v1` from its end, every instance on its own (no group), as the api reads it.
Heartbeats tell the cache how fresh its view is; revocations and account changes drop the
records they concern (`core/records.py`). Other events on the feed change nothing."""

from __future__ import annotations

from datetime import timedelta

from authbus_authz.core.records import RecordCache
from authbus_authz.metrics import AuthzMetrics
from authbus_authz.settings import AuthzSettings
from authbus_shared.contracts import topics
from authbus_shared.contracts.envelope import Envelope, payload_of
from authbus_shared.contracts.events import (
    AccountChanged,
    ChangesHeartbeat,
    KeyRevoked,
    TokenRevoked,
)
from authbus_shared.kafka.consumers import BroadcastReader, Handler
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.settings import KafkaSettings


def record_cache(settings: AuthzSettings, metrics: AuthzMetrics) -> RecordCache:
    cached = settings.record_cache
    cache = RecordCache(
        partitions=topics.AUTH_CHANGES.partitions,
        max_entries=cached.max_entries,
        ttl=timedelta(seconds=cached.ttl_s),
        bound=timedelta(milliseconds=cached.bound_ms),
        skew=timedelta(milliseconds=cached.clock_skew_ms),
    )
    metrics.record_entries.set_function(lambda: len(cache))
    return cache


def on_change(cache: RecordCache) -> Handler:
    async def handle(envelope: Envelope) -> None:
        match payload_of(envelope):
            case ChangesHeartbeat(partition=partition, at=at):
                cache.heard(partition, at)
            case TokenRevoked(token_id=token_id):
                cache.token_revoked(token_id)
            case KeyRevoked(key_id=key_id):
                cache.key_revoked(key_id)
            case AccountChanged(account_id=account_id):
                cache.account_changed(account_id)

    return handle


def changes_reader(
    kafka: KafkaSettings, topic: str, cache: RecordCache, metrics: KafkaMetrics, client_id: str
) -> BroadcastReader:
    return BroadcastReader(
        kafka,
        topics=[topic],
        handler=on_change(cache),
        metrics=metrics,
        client_id=client_id,
        start_at="end",
    )
