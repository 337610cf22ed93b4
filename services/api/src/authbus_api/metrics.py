"""api metrics (docs/metrics.md). Labels are bounded: route templates, methods, statuses,
outcomes; never a path as sent, a token, a key or an account id."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from authbus_shared.kafka.metrics import KafkaMetrics


class Cell:
    """One labelled counter's value. The hot path adds with `+=`: no lock, because one event
    loop thread writes it (prometheus_client's children lock on every `inc`, about 0.8 µs; a
    histogram's `observe` about 2 µs; issue #13). A scrape reads a whole int or float."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Tally:
    """A labelled counter whose children are `Cell`s, collected as a Prometheus counter.
    Label values are bounded by design (route templates, enums), so its cells are too."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self._cells: dict[tuple[str, ...], Cell] = {}
        registry.register(self)

    def __call__(self, *values: str) -> Cell:
        cell = self._cells.get(values)
        if cell is None:
            cell = self._cells[values] = Cell()
        return cell

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, cell in list(self._cells.items()):
            family.add_metric(values, cell.value)
        yield family


class Timings:
    """One labelled histogram's cells: a count per bucket and the sum, added to without a
    lock (as `Cell`)."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0


class Histogram:
    """A labelled histogram of `Timings`, collected as a Prometheus histogram."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = (*buckets, float("inf"))
        self._cells: dict[str, Timings] = {}
        registry.register(self)

    def observe(self, value: str, seconds: float) -> None:
        cell = self._cells.get(value)
        if cell is None:
            cell = self._cells[value] = Timings(len(self.bounds))
        cell.counts[bisect_left(self.bounds, seconds)] += 1
        cell.total += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=(self.label,))
        for value, cell in list(self._cells.items()):
            cumulative, running = [], 0
            for bound, count in zip(self.bounds, cell.counts, strict=True):
                running += count
                cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
            family.add_metric((value,), cumulative, cell.total)
        yield family


HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.kafka = KafkaMetrics("api", registry)
        # the hot path's metrics: lock-free cells (`Tally`, `Histogram` above)
        self.request_count = Tally(
            "api_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry,
        )
        self.request_time = Histogram(
            "api_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            "route",
            HTTP_BUCKETS,
            registry,
        )
        self.cache_lookup = Tally(
            "api_verdict_cache_lookups",
            "Verdict cache lookups, by result (hit, miss).",
            ["result"],
            registry,
        )
        self.verdict = Tally(
            "api_auth_verdicts",
            "Authentication results, by outcome (valid, invalid, revoked, missing, ...).",
            ["outcome"],
            registry,
        )
        self.invalidations = Counter(
            "api_verdict_cache_invalidations_total",
            "Change events applied to the verdict cache, by event type.",
            ["event"],
            registry=registry,
        )
        self.rate_decision = Tally(
            "api_rate_decisions",
            "Rate checks on this instance, by policy and result (allowed, limited, locked, "
            "unavailable).",
            ["policy", "result"],
            registry,
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
        self.lockouts = Counter(
            "api_rate_lockouts_received_total",
            "Lockouts (SubjectLocked) applied from the decisions topic.",
            registry=registry,
        )
