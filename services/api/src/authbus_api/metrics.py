"""api metrics (docs/metrics.md). Labels are bounded: route templates, methods, statuses,
outcomes; never a path as sent, a token, a key or an account id."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from authbus_shared.kafka.metrics import KafkaMetrics

M = TypeVar("M", Counter, Histogram)


class Children(Generic[M]):
    """A labelled metric's children by label values, each looked up once: prometheus_client's
    `labels()` checks and locks on every call (several µs on the hot path). Label values are
    bounded by design, so this is too."""

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.kafka = KafkaMetrics("api", registry)
        self.requests = Counter(
            "api_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "api_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.cache = Counter(
            "api_verdict_cache_lookups_total",
            "Verdict cache lookups, by result (hit, miss).",
            ["result"],
            registry=registry,
        )
        self.verdicts = Counter(
            "api_auth_verdicts_total",
            "Authentication results, by outcome (valid, invalid, revoked, missing, ...).",
            ["outcome"],
            registry=registry,
        )
        self.invalidations = Counter(
            "api_verdict_cache_invalidations_total",
            "Change events applied to the verdict cache, by event type.",
            ["event"],
            registry=registry,
        )
        self.rate = Counter(
            "api_rate_decisions_total",
            "Rate checks on this instance, by policy and result (allowed, limited, locked, "
            "unavailable).",
            ["policy", "result"],
            registry=registry,
        )
        self.rate_fallback = Counter(
            "api_rate_fallback_total",
            "Requests decided by the local fallback while a key's owner was unreachable (R8), "
            "by policy and fail mode.",
            ["policy", "mode"],
            registry=registry,
        )
        self.lease_asks = Counter(
            "api_rate_lease_asks_total",
            "Lease asks to ratelimit owners, by kind (blocking, prefetch) and outcome "
            "(granted, recalling, empty, timeout).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.recalls = Counter(
            "api_rate_recalls_total",
            "Owners' recalls naming this instance, by outcome (answered: its unspent units of "
            "the window went back at once; ignored: about a window it no longer holds).",
            ["outcome"],
            registry=registry,
        )
        self.stale = Counter(
            "api_stale_cache_uses_total",
            "Cached verdicts met while the changes feed was older than the staleness bound "
            "(A12), by what was done: reverified (authz answered), grace (served from the "
            "cache, authz unreachable), refused (503: past the grace).",
            ["use"],
            registry=registry,
        )
        self.feed_age = Gauge(
            "api_changes_feed_age_seconds",
            "How old this instance's view of auth.changes.v1 is: every change acknowledged "
            "before now minus this has been read (-1 before the first heartbeat of every "
            "partition).",
            registry=registry,
        )
        # the hot path's children, looked up once
        self.request_count = Children(self.requests)
        self.request_time = Children(self.duration)
        self.cache_lookup = Children(self.cache)
        self.verdict = Children(self.verdicts)
        self.rate_decision = Children(self.rate)
        self.lockouts = Counter(
            "api_rate_lockouts_received_total",
            "Lockouts (SubjectLocked) applied from the decisions topic.",
            registry=registry,
        )
