"""Kafka plumbing metrics, named under each service's namespace (`<svc>_kafka_*`).

Labels are bounded: topic names (a fixed set) and small enums; never keys or payload values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

RPC_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class KafkaMetrics:
    def __init__(self, namespace: str, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            f"{namespace}_kafka_messages_consumed_total",
            "Messages read, by topic and result (handled, expired, undecodable, failed).",
            ["topic", "result"],
            registry=registry,
        )
        self.produced = Counter(
            f"{namespace}_kafka_messages_produced_total",
            "Messages acknowledged by the broker, by topic.",
            ["topic"],
            registry=registry,
        )
        self.errors = Counter(
            f"{namespace}_kafka_errors_total",
            "Kafka plumbing failures by stage (produce, rpc, consume, commit, handler) and "
            "error class.",
            ["stage", "error"],
            registry=registry,
        )
        self.rpc_duration = Histogram(
            f"{namespace}_kafka_rpc_duration_seconds",
            "Request/reply round trip over Kafka, by request topic.",
            ["topic"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.rpc_outcomes = Counter(
            f"{namespace}_kafka_rpc_requests_total",
            "Requests over Kafka by request topic and outcome (replied, timeout, unavailable).",
            ["topic", "outcome"],
            registry=registry,
        )
