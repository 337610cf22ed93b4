"""e2e fixtures: the real service processes (two api, two authz, one ratelimit) on the
session's real Kafka and MongoDB-wire server, started by the project's own fleet tooling."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authbus_dev.fleet import Fleet, Instance, Ports, Service
from authbus_dev.infra import InfraConfig
from authbus_dev.paths import VENV_BIN
from authbus_dev.ports import free_port_run

PASSWORD = "correct horse battery staple"
COUNTS: dict[Service, int] = {"api": 2, "authz": 2, "ratelimit": 1}


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
        return self.admin(
            "token", "create", email, "--name", "e2e", *(f"--scope={s}" for s in scopes)
        )

    def metric(self, service: Service, name: str, **labels: str) -> float:
        """The sum of a metric over every instance of a service."""
        total = 0.0
        for instance in self.fleet.instances(service):
            text = httpx.get(f"{instance.url}/metrics", timeout=5).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == name and labels.items() <= sample.labels.items():
                        total += sample.value
        return total


@pytest.fixture(scope="session")
def system(infrastructure: InfraConfig) -> Iterator[System]:
    prefix = f"e2e{uuid.uuid4().hex[:6]}."
    ports = Ports(
        api=free_port_run(COUNTS["api"] + 1),
        authz=free_port_run(COUNTS["authz"]),
        ratelimit=free_port_run(COUNTS["ratelimit"]),
    )
    # usage reports every second (default 30 s) so last-used times show within a test
    env = {"KAFKA__TOPIC_PREFIX": prefix, "AUTHBUS_API_USAGE_REPORT_S": "1"}
    fleet = Fleet(infrastructure, COUNTS, ports, env=env)
    try:
        fleet.start_all()
        yield System(fleet, prefix)
    finally:
        fleet.stop_all()
