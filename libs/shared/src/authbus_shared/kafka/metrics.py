"""Kafka plumbing metrics, named under each service's namespace (`<svc>_kafka_*`).

Labels are bounded: topic names (a fixed set) and small enums; never keys or payload values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RPC_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class KafkaMetrics:
    def __init__(self, namespace: str, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            f"{namespace}_kafka_messages_consumed_total",
            "Messages read, by topic and result (handled, undecodable, failed).",
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
        self.lag = ConsumerLag(namespace, registry)


class ConsumerLag(Collector):
    """`<svc>_kafka_consumer_lag_messages{reader, topic}`: messages on the broker that a reader
    has not fetched yet, summed over the partitions it is assigned: each partition's high
    watermark (from the consumer's last fetch response) minus the next offset the reader
    fetches. Computed when Prometheus scrapes; a partition the reader has fetched nothing from
    since it was assigned is left out (its position is not known yet)."""

    def __init__(self, namespace: str, registry: CollectorRegistry) -> None:
        self._name = f"{namespace}_kafka_consumer_lag_messages"
        self._readers: dict[str, tuple[AIOKafkaConsumer, dict[TopicPartition, int]]] = {}
        registry.register(self)

    def fetched(
        self,
        reader: str,
        consumer: AIOKafkaConsumer,
        batch: Mapping[TopicPartition, Sequence[Any]],
    ) -> None:
        """Note where `reader` stands after one fetch (called with every batch, empty too)."""
        positions = self._readers.setdefault(reader, (consumer, {}))[1]
        for tp, records in batch.items():
            if records:
                positions[tp] = records[-1].offset + 1

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            self._name,
            "Messages on the broker not yet fetched by a reader, summed over its partitions.",
            labels=["reader", "topic"],
        )
        for reader, (consumer, positions) in sorted(self._readers.items()):
            lag: dict[str, int] = {}
            for tp in consumer.assignment():
                high, position = consumer.highwater(tp), positions.get(tp)
                if high is not None and position is not None:
                    lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - position)
            for topic, messages in sorted(lag.items()):
                family.add_metric([reader, topic], messages)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, "", labels=["reader", "topic"])
