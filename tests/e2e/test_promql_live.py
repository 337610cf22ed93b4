"""The monitoring's PromQL against a live Prometheus scraping the real fleet (issue #11).

Grafana cannot run here, so this is how the dashboard is checked: Debian's Prometheus (from
the project's cache, `authbus_dev.prometheus`) scrapes every instance of the e2e fleet with the
rules of `deploy/prometheus/rules/`, a little traffic goes through the api (a 401 without a
credential, a token's 200 from authz and again from the cache, a wrong password in Basic auth
and in a login), and then:
- every target is up and every rule evaluates without error (`/api/v1/rules`);
- every dashboard panel's query, Grafana's variables replaced, returns at least one series;
- every recording rule's expression, and the series it records, return at least one series;
- every alert's expression evaluates (it need not fire).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from authbus_dev import prometheus
from authbus_dev.ports import free_port
from tests.e2e.conftest import PASSWORD, System

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
# what Grafana puts in place of its variables (`$instance`: the "All" value)
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$instance": ".*"}
SETTLE_S = 40.0  # scrapes (every second) and rule evaluations catching up with the traffic


class Prometheus:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=f"{url}/api/v1", timeout=10)

    def get(self, path: str, **params: str) -> Any:
        answer = self.http.get(path, params=params)
        body = answer.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def up_count(self) -> int:
        result = self.get("/query", query="count(up == 1)")["result"]
        return int(result[0]["value"][1]) if result else 0

    def wait_scraped(self, targets: int, timeout_s: float = 20.0) -> None:
        """Until every target has been scraped, and answered."""
        deadline = time.monotonic() + timeout_s
        while self.up_count() < targets:
            assert time.monotonic() < deadline, self.get("/targets")
            time.sleep(0.5)

    def series(self, expr: str) -> int:
        data = self.get("/query", query=expr)
        return len(data["result"]) if data["resultType"] == "vector" else 1


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in prometheus.rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def panel_queries() -> dict[str, str]:
    """{"<dashboard>/<panel>/<refId>": PromQL with Grafana's variables replaced}."""
    queries = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                assert "$" not in expr, f"a Grafana variable left in {expr}"
                queries[f"{path.stem}/{panel['title']}/{target['refId']}"] = expr
    return queries


def make_traffic(system: System) -> None:
    email = system.new_account()
    token = system.new_token(email)["token"]
    api = system.apis()[0].url
    with httpx.Client(base_url=api, timeout=15) as http:
        assert http.get("/v0/me").status_code == 401  # no credential
        for _ in range(2):  # authz's verdict, then the cache's
            me = http.get("/v0/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200, me.text
        assert http.get("/v0/me", auth=(email, "not " + PASSWORD)).status_code == 401
        login = {"email": email, "password": "not " + PASSWORD, "name": "x"}
        assert http.post("/v0/tokens", json=login).status_code == 401


@pytest.fixture(scope="module")
def live(system: System) -> Iterator[Prometheus]:
    local = prometheus.LocalPrometheus(
        system.fleet.infra.run_dir / f"prometheus-{uuid.uuid4().hex[:6]}", free_port()
    )
    config = prometheus.render_config(
        prometheus.fleet_targets(system.fleet), scrape_interval="1s", evaluation_interval="1s"
    )
    local.start(config, prometheus.ensure())
    client = Prometheus(local.url)
    try:
        local.wait_ready()
        client.wait_scraped(len(system.fleet.instances()))
        make_traffic(system)
        yield client
    finally:
        client.http.close()
        local.stop()


def empty_after_settling(client: Prometheus, queries: dict[str, str]) -> dict[str, str]:
    """The queries still without a series once scrapes and rules had time to catch up."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        empty = {name: expr for name, expr in queries.items() if client.series(expr) == 0}
        if not empty or time.monotonic() > deadline:
            return empty
        time.sleep(1.0)


def test_every_instance_is_scraped_and_every_rule_evaluates(
    live: Prometheus, system: System
) -> None:
    targets = live.get("/targets")["activeTargets"]
    assert len(targets) == len(system.fleet.instances())
    bad = {t["scrapeUrl"]: t["lastError"] for t in targets if t["health"] != "up"}
    assert not bad, bad

    groups = live.get("/rules")["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert len(loaded) == len(rules())
    failing = {r["name"]: r.get("lastError") for r in loaded if r["health"] == "err"}
    assert not failing, failing


def test_every_dashboard_panel_returns_series(live: Prometheus) -> None:
    queries = panel_queries()
    assert len(queries) > 30

    assert empty_after_settling(live, queries) == {}


def test_every_recording_rule_returns_series(live: Prometheus) -> None:
    recorded = [rule for rule in rules() if "record" in rule]
    queries = {r["record"]: r["expr"] for r in recorded}
    queries |= {f"{r['record']} (recorded)": r["record"] for r in recorded}

    assert empty_after_settling(live, queries) == {}


def test_every_alert_expression_evaluates(live: Prometheus) -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    assert len(alerts) >= 15

    for alert in alerts:
        live.get("/query", query=alert["expr"])  # raises on a PromQL error
