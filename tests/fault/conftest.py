"""The fault suite's own world: a Kafka broker and a SecantusDB on free loopback ports in a
folder of their own, and a fleet of the real processes on them (3 api, 2 authz, 2 ratelimit).
Nothing here touches the session infrastructure the integration and e2e tiers share: the
faults kill, stop and pause only what this module started, by pid.

Rate policies are generous (the load is not about 429s), except `probe`: 5 per minute per
account on `GET /v0/tokens`, the exact limit the ratelimit fault checks returns. Loopback is a
trusted proxy, so each request can name a client address of its own (`X-Forwarded-For`).

Package-scoped: up for the fault tests only, stopped after the last of them (not left running
through the tiers collected after this folder). Around every test the fleet is made whole
(`system`): the broker, the database and every instance running and ready, whatever the
previous test did or failed to undo.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from authbus_dev import infra
from authbus_dev.fleet import Fleet, Ports, Service
from authbus_dev.paths import RUNS
from authbus_dev.ports import free_port_run
from tests.conftest import local_infrastructure
from tests.e2e.conftest import System

COUNTS: dict[Service, int] = {"api": 3, "authz": 2, "ratelimit": 2}
PROBE_LIMIT = 5
POLICIES = f"""
[[policy]]
name = "global"
scope = "account"
limit = 1000000
window_s = 60
fail_mode = "open"

[[policy]]
name = "anonymous"
scope = "address"
limit = 1000000
window_s = 60
fail_mode = "open"

[[policy]]
name = "probe"
scope = "account"
limit = {PROBE_LIMIT}
window_s = 60
fail_mode = "open"
routes = ["GET /v0/tokens"]
"""


def make_whole(system: System) -> None:
    """Start whatever is not running (broker, database, instances) and wait until ready."""
    cfg = system.fleet.infra
    if not infra.kafka_process(cfg).running():
        infra.start_kafka(cfg)
        infra.wait_kafka(cfg)
    if not infra.mongo_process(cfg).running():
        infra.start_mongo(cfg)
        infra.wait_mongo(cfg)
    for instance in system.fleet.instances():
        if not system.fleet.process(instance).running():
            system.fleet.start(instance)
    for instance in system.fleet.instances():
        system.fleet.wait_ready(instance, 60.0)


@pytest.fixture(scope="package")
def fault_infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[infra.InfraConfig]:
    """A broker and a database for the fault suite alone (stopped after its last test)."""
    with local_infrastructure(tmp_path_factory.mktemp("fault")) as cfg:
        yield cfg


@pytest.fixture(scope="package")
def fault_system(fault_infra: infra.InfraConfig) -> Iterator[System]:
    prefix = f"fault{uuid.uuid4().hex[:6]}."
    policies = fault_infra.run_dir / "policies.toml"
    policies.write_text(POLICIES)
    ports = Ports(
        api=free_port_run(COUNTS["api"]),
        authz=free_port_run(COUNTS["authz"]),
        ratelimit=free_port_run(COUNTS["ratelimit"]),
    )
    env = {
        "KAFKA__TOPIC_PREFIX": prefix,
        "AUTHBUS_API_USAGE_REPORT_S": "1",
        "AUTHBUS_API_RATE__POLICIES_FILE": str(policies),
        "AUTHBUS_API_TRUSTED_PROXIES": '["127.0.0.0/8"]',
    }
    fleet = Fleet(fault_infra, COUNTS, ports, env=env)
    try:
        fleet.start_all(timeout_s=120.0)
        yield System(fleet, prefix)
    finally:
        fleet.stop_all()


@pytest.fixture
def system(fault_system: System) -> Iterator[System]:
    """The fault suite's fleet, whole at the start of the test and made whole after it."""
    make_whole(fault_system)
    yield fault_system
    make_whole(fault_system)


@pytest.fixture
def reports(fault_infra: infra.InfraConfig) -> tuple[Path, ...]:
    """Where the tests write their tables (also printed: `pytest -s` shows them): the run
    folder, and `.run/fault-reports`, which outlives pytest's rotation of its temp folders
    (the latest run's tables, for the issue's closing note)."""
    folders = (fault_infra.run_dir / "reports", RUNS / "fault-reports")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders
