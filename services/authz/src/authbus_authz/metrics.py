"""authz metrics (docs/metrics.md). Bounded labels only: enums, never ids or secrets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from authbus_shared.kafka.metrics import KafkaMetrics

VERIFY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class AuthzMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.kafka = KafkaMetrics("authz", registry)
        self.verdicts = Counter(
            "authz_verify_verdicts_total",
            "Credential checks answered, by credential kind and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.verify_duration = Histogram(
            "authz_verify_duration_seconds",
            "Time to check one credential (store reads, signature, argon2), by kind.",
            ["kind"],
            buckets=VERIFY_BUCKETS,
            registry=registry,
        )
        self.commands = Counter(
            "authz_commands_total",
            "Management commands answered, by command and result (done or the rejection).",
            ["command", "result"],
            registry=registry,
        )
        self.skipped = Counter(
            "authz_requests_skipped_total",
            "Requests not worked on: past their deadline, or with nowhere to reply.",
            ["reason"],
            registry=registry,
        )
        self.failures = Counter(
            "authz_request_failures_total",
            "Requests answered with RequestFailed, by reason (unavailable, internal).",
            ["reason"],
            registry=registry,
        )
        self.record_reads = Counter(
            "authz_record_cache_reads_total",
            "Records a verification read, by kind (token, key, account) and result: hit "
            "(from the cache), miss (from MongoDB), stale (from MongoDB: the changes feed was "
            "not read recently enough to trust the cache).",
            ["kind", "result"],
            registry=registry,
        )
        self.record_entries = Gauge(
            "authz_record_cache_entries",
            "Records in the cache.",
            registry=registry,
        )
        self._outbox_and_usage(registry)

    def _outbox_and_usage(self, registry: CollectorRegistry) -> None:
        """The outbox (ADR 0015) and the last-used times waiting for MongoDB."""
        self.outbox_published = Counter(
            "authz_outbox_events_published_total",
            "Events published from the outbox, by who published them: the instance that "
            "committed them (writer) or a relay (relay: the writer crashed or Kafka failed it).",
            ["by"],
            registry=registry,
        )
        self.outbox_errors = Counter(
            "authz_outbox_errors_total",
            "Outbox steps that failed, by stage (publish, remove, relay); the events stay "
            "staged and the relay publishes them.",
            ["stage"],
            registry=registry,
        )
        self.usage_deferred = Counter(
            "authz_usage_deferred_total",
            "Usage writes put off because MongoDB was unreachable (retried from memory).",
            registry=registry,
        )
        self.usage_dropped = Counter(
            "authz_usage_dropped_total",
            "Last-used times dropped: the waiting buffer was full, or a retry failed for "
            "another reason than an unreachable store.",
            registry=registry,
        )
        self.usage_pending = Gauge(
            "authz_usage_pending_credentials",
            "Credentials whose last-used time waits for MongoDB.",
            registry=registry,
        )
