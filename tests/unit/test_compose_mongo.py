"""The compose deployment's MongoDB can commit transactions (ADR 0015): a single-node replica
set, initiated by its own healthcheck with the address authz reaches it by, so authz (which
waits for it to be healthy) always finds a primary. Checked offline, like test_compose.py."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from tests.unit.test_compose import depends_on, environment, healthcheck_command, services


def test_mongo_runs_as_a_replica_set() -> None:
    command = services()["mongo"]["command"]

    assert command[command.index("--replSet") + 1] == "rs0"


def test_the_healthcheck_initiates_the_set_with_the_address_authz_uses() -> None:
    check = healthcheck_command("mongo")
    member = re.search(r"rs\.initiate\(\{_id: '(\w+)', members: \[\{_id: 0, host: '([^']+)'", check)
    uri = urlsplit(environment("authz")["AUTHBUS_AUTHZ_MONGO__URI"])

    assert member is not None and member.group(1) == "rs0"
    assert member.group(2) == f"{uri.hostname}:{uri.port or 27017}"
    assert "isWritablePrimary" in check  # healthy only once it can take writes
    assert depends_on("authz")["mongo"] == "service_healthy"
