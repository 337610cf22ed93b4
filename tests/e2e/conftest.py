"""e2e fixtures: the real service processes (four api, two authz, two ratelimit) on the
session's real Kafka and MongoDB-wire server, started by the project's own fleet tooling.

Rate policies: the seeds' 60 per minute per account, 1,000 per minute per client address
for requests without valid credentials (a large limit, and room for the security suite's
bad credentials), and "writes", 5 per minute per account on the routes that name it
(`/v1/writes/{id}`: a stricter route policy, R2). Loopback is a trusted proxy, so a test can
pose as its own client address with `X-Forwarded-For`."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from authbus_dev.browser import LAUNCH_ARGS, BrowserUnavailable, chromium
from authbus_dev.fleet import Fleet, Instance, Ports, Service
from authbus_dev.infra import InfraConfig
from authbus_dev.paths import RUNS, VENV_BIN
from authbus_dev.ports import free_port_run
from tests.integration.test_gateway import UPSTREAM, raw_echo
from tests.path_variants import ROUTES_TOML
from tests.support import serving_in_thread

PASSWORD = "correct horse battery staple"
SCREENSHOTS = RUNS / "screenshots"  # the browser tests' artefacts
COUNTS: dict[Service, int] = {"api": 4, "authz": 2, "ratelimit": 2}
POLICIES = """
[[policy]]
name = "global"
scope = "account"
limit = 60
window_s = 60
lockout_s = 60

[[policy]]
name = "anonymous"
scope = "address"
limit = 1000
window_s = 60
lockout_s = 60

[[policy]]
name = "writes"
scope = "account"
limit = 5
window_s = 60
every_route = false
"""


def wait_for(check: Callable[..., bool], timeout_s: float = 30.0) -> None:
    """Poll `check` until it holds (the test fails after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@dataclass(frozen=True)
class System:
    fleet: Fleet
    topic_prefix: str

    def apis(self) -> list[Instance]:
        return self.fleet.instances("api")

    def admin(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        """Run the real `authbus-admin` CLI (over Kafka) and return its JSON output."""
        env = {
            **os.environ,
            "AUTHBUS_ADMIN_KAFKA__BOOTSTRAP_SERVERS": self.fleet.infra.bootstrap,
            "AUTHBUS_ADMIN_KAFKA__TOPIC_PREFIX": self.topic_prefix,
        }
        result = subprocess.run(
            [str(VENV_BIN / "authbus-admin"), *args, "--json"],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        parsed: dict[str, Any] = json.loads(result.stdout)
        return parsed

    def new_account(self, password: str = PASSWORD) -> str:
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        self.admin("account", "create", email, "--password-stdin", stdin=password + "\n")
        return email

    def new_token(self, email: str, *scopes: str) -> dict[str, Any]:
        """An operator's token for `email` with `scopes`, granted to the account first (A8)."""
        if scopes:
            self.admin("account", "grant-scopes", email, *scopes)
        return self.admin(
            "token", "create", email, "--name", "e2e", *(f"--scope={s}" for s in scopes)
        )

    def metric(self, service: Service, name: str, **labels: str) -> float:
        """The sum of a metric over every instance of a service."""
        return sum(self.instance_metric(i, name, **labels) for i in self.fleet.instances(service))

    def instance_metric(self, instance: Instance, name: str, **labels: str) -> float:
        """The sum of a metric's samples with these labels on one instance."""
        total = 0.0
        text = httpx.get(f"{instance.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total


ROUTES = """
[[route]]
path = "/v1/echo/{{id}}"
methods = ["GET", "POST"]
upstream = "{upstream}"
scopes = ["read"]

[[route]]
path = "/v1/admin/{{rest:path}}"
methods = ["GET"]
upstream = "{upstream}"
scopes = ["admin"]
error_shape = "structured"

[[route]]
path = "/v2/preview"
methods = ["GET"]
upstream = "{upstream}"
released = false

[[route]]
path = "/v1/writes/{{id}}"
methods = ["GET", "POST"]
upstream = "{upstream}"
policies = ["writes"]
"""


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    """An HTTP app the gateway fronts (the echo app of tests/integration/test_gateway.py), in a
    thread of this process for the whole session."""
    with serving_in_thread(UPSTREAM) as url:
        yield url


@pytest.fixture(scope="session")
def raw_upstream() -> Iterator[str]:
    """An upstream that answers with the request target exactly as it arrived (for the
    path-variant routes of tests/path_variants.py)."""
    with serving_in_thread(raw_echo) as url:
        yield url


@pytest.fixture(scope="session")
def system(infrastructure: InfraConfig, upstream: str, raw_upstream: str) -> Iterator[System]:
    prefix = f"e2e{uuid.uuid4().hex[:6]}."
    ports = Ports(
        api=free_port_run(COUNTS["api"] + 1),
        authz=free_port_run(COUNTS["authz"]),
        ratelimit=free_port_run(COUNTS["ratelimit"]),
    )
    # usage reports every second (default 30 s) so last-used times show within a test
    policies = infrastructure.run_dir / f"{prefix}policies.toml"
    policies.write_text(POLICIES)
    routes = infrastructure.run_dir / f"{prefix}routes.toml"
    routes.write_text(ROUTES.format(upstream=upstream) + ROUTES_TOML.format(upstream=raw_upstream))
    env = {
        "KAFKA__TOPIC_PREFIX": prefix,
        "AUTHBUS_API_USAGE_REPORT_S": "1",
        "AUTHBUS_API_RATE__POLICIES_FILE": str(policies),
        "AUTHBUS_API_TRUSTED_PROXIES": '["127.0.0.0/8"]',
        "AUTHBUS_API_ROUTES_FILE": str(routes),
    }
    fleet = Fleet(infrastructure, COUNTS, ports, env=env)
    try:
        fleet.start_all()
        yield System(fleet, prefix)
    finally:
        fleet.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, driven by Playwright (issue #12; `authbus_dev/browser.py`
    installs it). Per module, never per session: Playwright's sync API keeps an event loop
    running in this thread while it is open, and every later `asyncio.run` would fail."""
    try:
        executable = chromium()
    except BrowserUnavailable as exc:
        pytest.skip(f"no browser here: {exc}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=list(LAUNCH_ARGS)
        )
        yield launched
        launched.close()


@pytest.fixture
def ratelimit_restored(system: System) -> Iterator[None]:
    """Whatever a test stops or kills, every ratelimit instance runs again after it."""
    yield
    for instance in system.fleet.instances("ratelimit"):
        system.fleet.start(instance)
    for instance in system.fleet.instances("ratelimit"):
        system.fleet.wait_ready(instance)
