"""ratelimit metrics (docs/metrics.md). Bounded labels only: never a limit key or a subject;
`policy` is bounded by the api's configuration."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from authbus_shared.kafka.metrics import KafkaMetrics


class RatelimitMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.kafka = KafkaMetrics("ratelimit", registry)
        self.asks = Counter(
            "ratelimit_lease_asks_total",
            "Lease asks answered live, by policy and result (granted; empty: a prefetch got "
            "nothing; recalling: units recalled, ask again; refused: the window is spent; "
            "locked: this ask locked the key; blocked: the key was locked already).",
            ["policy", "result"],
            registry=registry,
        )
        self.granted = Counter(
            "ratelimit_units_granted_total",
            "Requests handed out in leases, by policy.",
            ["policy"],
            registry=registry,
        )
        self.locks = Counter(
            "ratelimit_lockouts_total",
            "Subjects locked out (R3), by policy and whether the lockout grew (R7).",
            ["policy", "escalated"],
            registry=registry,
        )
        self.releases = Counter(
            "ratelimit_lease_releases_total",
            "Unused slices given back (idle, or answering a recall).",
            registry=registry,
        )
        self.recalls = Counter(
            "ratelimit_lease_recalls_total",
            "Recalls broadcast: a waiting ask found the window allocated and units unspent at "
            "other instances (R9), by policy.",
            ["policy"],
            registry=registry,
        )
        self.recalled_units = Counter(
            "ratelimit_lease_recalled_units_total",
            "Units that came back in answers to recalls (unspent, or never received).",
            registry=registry,
        )
        self.replayed = Counter(
            "ratelimit_replayed_total",
            "Messages applied to the state without a reply (replay after an assignment, or an "
            "ask whose asker stopped waiting).",
            registry=registry,
        )
        self.keys = Gauge("ratelimit_active_keys", "Keys held by this instance.", registry=registry)
        self.partitions = Gauge(
            "ratelimit_owned_partitions",
            "1 for each partition of ratelimit.leases.v1 this instance owns (at most the "
            "topic's partition count).",
            ["partition"],
            registry=registry,
        )
