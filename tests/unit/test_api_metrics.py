"""The api's hot-path metrics (issue #13): lock-free cells collected as ordinary Prometheus
counters and histograms, read here through the exposition a scrape gets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from authbus_api.metrics import HTTP_BUCKETS, ApiMetrics


def test_counters_read_as_prometheus_counters() -> None:
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    for _ in range(3):
        metrics.request_count("/v0/me", "GET", "200").inc()
    metrics.request_count("/v0/me", "GET", "401").inc()
    metrics.cache_lookup("hit").inc(2)
    labels = {"route": "/v0/me", "method": "GET", "status": "200"}
    assert registry.get_sample_value("api_http_requests_total", labels) == 3
    assert registry.get_sample_value("api_http_requests_total", labels | {"status": "401"}) == 1
    assert registry.get_sample_value("api_verdict_cache_lookups_total", {"result": "hit"}) == 2
    text = generate_latest(registry).decode()
    assert "# TYPE api_http_requests_total counter" in text
    assert "# TYPE api_rate_decisions_total counter" in text


def test_a_histogram_counts_each_time_in_its_bucket_cumulatively() -> None:
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    times = (0.0001, 0.0005, 0.003, 0.003, 7.0)  # 0.0005: on a bound, counted in that bucket
    for seconds in times:
        metrics.request_time.observe("/v0/me", seconds)

    def bucket(le: str) -> float | None:
        sample = "api_http_request_duration_seconds_bucket"
        return registry.get_sample_value(sample, {"route": "/v0/me", "le": le})

    assert bucket("0.0005") == 2
    assert bucket("0.001") == 2
    assert bucket("0.005") == 4
    assert bucket("2.5") == 4
    assert bucket("+Inf") == 5
    assert len(HTTP_BUCKETS) == 12
    count = registry.get_sample_value(
        "api_http_request_duration_seconds_count", {"route": "/v0/me"}
    )
    total = registry.get_sample_value("api_http_request_duration_seconds_sum", {"route": "/v0/me"})
    assert count == 5
    assert total is not None and abs(total - sum(times)) < 1e-9
