"""The monitoring as code, checked offline (no network, no Prometheus): rule conventions, every
alert covered by promtool unit tests both ways, every metric a query names documented in
docs/metrics.md, the Grafana dashboard and provisioning, and the Prometheus configurations
(compose's, the local one, and what `authbus-dev up --prometheus` writes) loading the rules.

promtool's own checks (syntax, rule unit tests) are in tests/integration/test_promtool.py;
every query against a live Prometheus in tests/e2e/test_promql_live.py.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from authbus_dev import prometheus
from authbus_dev.fleet import Fleet, Ports
from authbus_dev.infra import InfraConfig
from authbus_shared.kafka.metrics import RPC_BUCKETS

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "authbus.json"
MONITORING_DOC = ROOT / "docs" / "monitoring.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"
SEVERITIES = {"page", "ticket"}
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")  # level:metric:operations
# a service metric's name in PromQL: not part of a recording rule's name (`job:api_...:rate5m`)
SERVICE_METRIC = re.compile(r"(?<![\w:])((?:api|authz|ratelimit)_[a-z0-9_]+)(?![\w:])")
RECORDED_NAME = re.compile(r"(?<![\w:])([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)(?![\w:])")
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@cache
def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in prometheus.rule_files()
        for group in load(path)["groups"]
        for rule in group["rules"]
    ]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def records() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


@cache
def panel_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


@cache
def alert_test_outcomes() -> dict[str, set[bool]]:
    """{alert name: {True if a test expects it firing, False if one expects it quiet}}."""
    outcomes: dict[str, set[bool]] = {}
    for path in prometheus.rule_tests():
        for test in load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                outcomes.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    return outcomes


@cache
def documented_metrics() -> set[str]:
    """Every metric name in the tables of docs/metrics.md, `<svc>_` spelled out."""
    names = set(re.findall(r"^\| `([a-z<>_]+)` \|", METRICS_DOC.read_text(), re.MULTILINE))
    return {n.replace("<svc>", svc) for n in names for svc in ("api", "authz", "ratelimit")}


# ---- rules ---------------------------------------------------------------------------------------


def test_every_rule_file_has_its_promtool_tests() -> None:
    for path in prometheus.rule_files():
        tests = prometheus.RULE_TESTS / path.name
        assert tests.exists(), f"no promtool tests for {path.name}"
        assert load(tests)["rule_files"] == [f"../rules/{path.name}"]


def test_recording_rules_are_named_level_metric_operations() -> None:
    bad = sorted(name for name in records() if not RECORD_NAME.match(name))
    assert not bad, bad


def test_rule_names_are_unique() -> None:
    names = [rule.get("record") or rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: str(a["alert"]))
def test_every_alert_says_how_urgent_what_and_where_to_look(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in SEVERITIES
    assert {"summary", "description", "runbook"} <= alert["annotations"].keys()
    anchor = alert["annotations"]["runbook"].removeprefix("docs/monitoring.md#")
    headings = re.findall(r"^#+ (.+)$", MONITORING_DOC.read_text(), re.MULTILINE)
    slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    assert anchor in slugs, f"docs/monitoring.md has no heading for #{anchor}"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: str(a["alert"]))
def test_every_alert_is_tested_firing_and_quiet(alert: dict[str, Any]) -> None:
    assert alert_test_outcomes().get(alert["alert"]) == {True, False}


def test_the_queries_name_only_documented_metrics() -> None:
    exprs = [*(rule["expr"] for rule in rules()), *panel_exprs()]
    used = {m for expr in exprs for m in SERVICE_METRIC.findall(expr)}
    known = documented_metrics()

    def documented(name: str) -> bool:
        base = next((name.removesuffix(s) for s in HISTOGRAM_SERIES if name.endswith(s)), name)
        return name in known or base in known

    assert sorted(m for m in used if not documented(m)) == []


def test_the_queries_use_only_series_the_rules_record() -> None:
    exprs = [*(rule["expr"] for rule in rules()), *panel_exprs()]
    used = {name for expr in exprs for name in RECORDED_NAME.findall(expr)}
    assert sorted(used - records()) == []


def test_the_slo_threshold_is_a_bucket_of_the_round_trip_histogram() -> None:
    """`le="0.25"`: a bucket the api's Kafka round-trip histogram has (a missing one would
    make every verification bad), spelled as Prometheus 2 and 3 both store it."""
    slo = (prometheus.RULES / "slo-verification.yml").read_text()
    assert set(re.findall(r'le="([0-9.]+)"', slo)) == {"0.25"}
    assert 0.25 in RPC_BUCKETS


# ---- Grafana -------------------------------------------------------------------------------------


def test_every_dashboard_panel_queries_prometheus_through_the_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}

    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for name in re.findall(r"\$(\w+)", target["expr"]):
                assert name.startswith("__") or name in variables, (panel["title"], name)


def test_grafana_provisioning_gives_the_data_source_and_the_dashboards() -> None:
    sources = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [(s["type"], s["url"], s["isDefault"]) for s in sources] == [
        ("prometheus", "http://prometheus:9090", True)
    ]
    providers = load(GRAFANA / "provisioning" / "dashboards" / "authbus.yml")["providers"]
    assert [(p["type"], p["options"]["path"]) for p in providers] == [
        ("file", "/var/lib/grafana/dashboards/authbus")
    ]


# ---- Prometheus configurations -------------------------------------------------------------------


def scrape_jobs(config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }


def test_the_local_config_is_what_authbus_dev_writes_for_its_default_fleet(
    tmp_path: Path,
) -> None:
    fleet = Fleet(InfraConfig(run_dir=tmp_path), {"api": 1, "authz": 1, "ratelimit": 1}, Ports())
    rendered = load_text(prometheus.render_config(prometheus.fleet_targets(fleet)))
    static = load(prometheus.DEPLOY / "prometheus.local.yml")

    assert scrape_jobs(rendered) == scrape_jobs(static)
    assert rendered["global"] == static["global"]
    assert rendered["rule_files"] == [str(prometheus.DEPLOY / static["rule_files"][0])]


def test_authbus_dev_scrapes_every_instance_of_a_larger_fleet(tmp_path: Path) -> None:
    fleet = Fleet(InfraConfig(run_dir=tmp_path), {"api": 3, "authz": 2, "ratelimit": 0}, Ports())
    rendered = load_text(prometheus.render_config(prometheus.fleet_targets(fleet)))

    assert scrape_jobs(rendered) == {
        "api": ["127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002"],
        "authz": ["127.0.0.1:9110", "127.0.0.1:9111"],
    }


def test_compose_prometheus_loads_the_same_rules() -> None:
    config = load(prometheus.DEPLOY / "prometheus.yml")
    compose = load(ROOT / "docker-compose.yml")

    assert config["rule_files"] == ["rules/*.yml"]  # beside /etc/prometheus/prometheus.yml
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in volumes
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes


def load_text(text: str) -> Any:
    return yaml.safe_load(text)


# ---- the cached install --------------------------------------------------------------------------


def test_only_a_complete_unpacked_install_counts(tmp_path: Path) -> None:
    (tmp_path / "prometheus.partial-x1" / "usr" / "bin").mkdir(parents=True)
    assert prometheus.installed(tmp_path) is None

    done = tmp_path / "prometheus-2.42.0"
    done.mkdir()
    (done / ".complete").write_text("2.42.0\n")

    found = prometheus.installed(tmp_path)
    assert found is not None
    assert found.version == "2.42.0"
    assert found.promtool == done / "usr" / "bin" / "promtool"
