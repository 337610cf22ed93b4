"""ratelimit metrics (docs/metrics.md). Bounded labels only: never a limit key."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from authbus_shared.kafka.metrics import KafkaMetrics


class RatelimitMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.kafka = KafkaMetrics("ratelimit", registry)
        self.hits = Counter(
            "ratelimit_hits_counted_total",
            "Hits counted by this owner, by policy.",
            ["policy"],
            registry=registry,
        )
        self.decisions = Counter(
            "ratelimit_decisions_published_total",
            "Decisions broadcast, by policy and state (open, exhausted, blocked).",
            ["policy", "state"],
            registry=registry,
        )
        self.keys = Gauge(
            "ratelimit_active_keys",
            "Keys with a live window or block held by this instance.",
            ["policy"],
            registry=registry,
        )
