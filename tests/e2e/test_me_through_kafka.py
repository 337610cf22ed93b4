"""The walking skeleton end to end: real processes, real Kafka, real MongoDB-wire server.

`GET /v0/me` with a Bearer token answers the account on every api instance, after the api
asked authz over Kafka (first sight of the token) and counted the hit with ratelimit over
Kafka; no token or a bad one gets the catalog's 401; a revocation reaches every instance.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from authbus_dev.fleet import Instance
from tests.e2e.conftest import System, wait_for

JSON = {"Accept": "application/json"}


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def me(api: Instance, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{api.url}/v0/me", headers=headers, timeout=10)


def test_a_token_made_after_start_answers_me_on_both_api_instances(system: System) -> None:
    email = system.new_account()
    token = system.new_token(email, "read")["token"]
    asked = system.metric("authz", "authz_verify_verdicts_total", kind="bearer", outcome="valid")
    leased = system.metric("ratelimit", "ratelimit_units_granted_total")

    answers = [me(api, bearer(token)) for api in system.apis()]

    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["email"] == email
        assert answer.json()["scopes"] == ["read"]
        assert answer.json()["auth_method"] == "token"
    # each api instance asked authz once (first sight), over Kafka ...
    after = system.metric("authz", "authz_verify_verdicts_total", kind="bearer", outcome="valid")
    assert after - asked == len(system.apis())
    # ... and each took its quota from a lease ratelimit granted over Kafka.
    assert system.metric("ratelimit", "ratelimit_units_granted_total") - leased >= 2


def test_a_known_token_is_answered_from_the_cache(system: System) -> None:
    token = system.new_token(system.new_account())["token"]
    api = system.apis()[0]
    me(api, bearer(token))
    asked = system.metric("authz", "authz_verify_verdicts_total", kind="bearer")

    for _ in range(5):
        assert me(api, bearer(token)).status_code == 200

    assert system.metric("authz", "authz_verify_verdicts_total", kind="bearer") == asked


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API token."),
        (bearer("not-a-token"), "API token invalid."),
        ({"Authorization": "Basic %%%"}, "API token invalid."),
    ],
)
def test_401_in_json_when_asked_and_html_otherwise(
    system: System, headers: dict[str, str], message: str
) -> None:
    for api in system.apis():
        as_json = me(api, {**headers, **JSON})
        as_html = me(api, headers)

        assert as_json.status_code == as_html.status_code == 401
        assert as_json.json() == {"code": "401", "error": message}
        assert as_html.headers["content-type"].startswith("text/html")
        assert message in as_html.text
        assert "Bearer" in as_json.headers["www-authenticate"]


def test_a_revoked_token_is_refused_on_every_api_instance(system: System) -> None:
    issued = system.new_token(system.new_account())
    for api in system.apis():  # both instances have it cached as valid
        assert me(api, bearer(issued["token"])).status_code == 200

    system.admin("token", "revoke", issued["token_id"])

    for api in system.apis():
        wait_for(lambda api=api: me(api, bearer(issued["token"])).status_code == 401, 5)


def test_the_account_limit_is_counted_across_instances_and_locks_out(system: System) -> None:
    """R1, R3, R4: exactly 60 admitted across both instances, then the lockout everywhere."""
    token = system.new_token(system.new_account())["token"]
    apis = system.apis()

    statuses = [me(apis[i % 2], bearer(token)).status_code for i in range(70)]
    wait_for(lambda: all(me(api, bearer(token)).status_code == 429 for api in apis))

    assert statuses.count(200) == 60
    locked = me(apis[0], bearer(token, **JSON))
    assert locked.json() == {"code": "429", "error": "Too many requests. Please try again later."}
    assert 0 < int(locked.headers["retry-after"]) <= 60


def mongo_connections(pid: int, mongo_port: int) -> int:
    """TCP connections of process `pid` whose remote port is the MongoDB-wire server's."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == mongo_port and fields[9] in inodes:
                count += 1
    return count


def test_only_authz_talks_to_mongodb(system: System) -> None:
    port = system.fleet.infra.mongo_port
    by_service = {
        i.name: mongo_connections(system.fleet.process(i).pid() or 0, port)
        for i in system.fleet.instances()
    }

    assert all(n > 0 for name, n in by_service.items() if name.startswith("authz")), by_service
    assert all(n == 0 for name, n in by_service.items() if not name.startswith("authz")), by_service


def test_sigterm_stops_an_api_instance_cleanly(system: System) -> None:
    extra = Instance("api", len(system.apis()), system.fleet.ports.of("api", len(system.apis())))
    system.fleet.start(extra)
    system.fleet.wait_ready(extra)
    process = system.fleet.process(extra)
    pid = process.pid()
    assert pid is not None

    os.kill(pid, signal.SIGTERM)

    assert process.wait_exit(15) == 0
    assert "api stopped" in process.tail(5)
