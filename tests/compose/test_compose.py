"""docker-compose.yml deployed and scaled for real (issue #11; README "Deploying with Docker
Compose" runs the same commands). In file order: the images, an operator's first account and
token through `docker compose run`, Prometheus scraping every replica, a killed api replica,
and a scale-out. Host-side traffic goes only to the ports the project publishes on 127.0.0.1.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.compose.conftest import SCALE, Deployment

# The package fixture's set-up runs inside the first test: on a cold machine it builds compose
# (about 4 min), the base and the images.
pytestmark = pytest.mark.timeout(1800)

PASSWORD = "correct horse battery staple 9"
EMAIL = "operator@example.com"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _eventually(check: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last is True:
            return
        time.sleep(1.0)
    pytest.fail(f"{what} not within {timeout_s}s; last seen: {last}")


def test_services_run_as_the_unprivileged_user(deployment: Deployment) -> None:
    for service in SCALE:
        user = deployment.docker.docker(
            "image", "inspect", "-f", "{{.Config.User}}", f"authbus/{service}:latest"
        ).stdout.strip()
        assert user == "authbus", service
        uid = deployment.compose("exec", "-T", "--index", "1", service, "id", "-u").stdout
        assert uid.strip() == "10001", service


def test_operator_cli_creates_an_account_and_a_token_that_the_gateway_accepts(
    deployment: Deployment,
) -> None:
    created = deployment.compose(
        "run", "--rm", "-T", "authz", "authbus-admin", "account", "create", EMAIL,
        "--password-stdin", "--json",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert EMAIL in created.stdout
    token = deployment.compose(
        "run", "--rm", "-T", "authz", "authbus-admin", "token", "create", EMAIL, "--name", "ci"
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    status, body = _get(f"{deployment.gateway}/v0/me", headers)
    assert (status, b'"auth_method":"token"' in body) == (200, True), body
    assert _get(f"{deployment.gateway}/v0/me", {"Accept": "application/json"})[0] == 401


def test_the_settings_page_and_its_files_come_through_the_gateway(deployment: Deployment) -> None:
    """The image carries the templates and assets (package data), and nginx passes the pages."""
    page = _get(f"{deployment.gateway}/settings/sign-in", {"Accept-Language": "de"})
    css = _get(f"{deployment.gateway}/settings/assets/settings.css")

    assert (page[0], b"<h1>Anmelden</h1>" in page[1]) == (200, True), page
    assert css[0] == 200


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/%6Detrics", "//metrics/"])
def test_the_gateway_does_not_expose_the_ops_endpoints(deployment: Deployment, path: str) -> None:
    assert _get(deployment.gateway + path)[0] == 404


def _every_replica_up(deployment: Deployment, ports: dict[str, int]) -> object:
    expected = {
        (job, f"{ip}:{port}")
        for job, port in ports.items()
        for ip in deployment.replicas(job).values()
    }
    seen = deployment.targets()
    up = {target for target, health in seen.items() if health == "up"}
    return expected == set(seen) == up or {"expected": sorted(expected), "seen": seen}


PORTS = {"api": 8000, "authz": 9101, "ratelimit": 9102}


def test_prometheus_scrapes_every_replica(deployment: Deployment) -> None:
    assert {s: len(deployment.replicas(s)) for s in SCALE} == SCALE
    _eventually(lambda: _every_replica_up(deployment, PORTS), 60, "every replica up in Prometheus")
    print(f"\nPrometheus targets: {sorted(deployment.targets())}")


def test_the_gateway_keeps_answering_when_an_api_replica_is_killed(deployment: Deployment) -> None:
    victim = sorted(deployment.replicas("api"))[0]
    deployment.docker.docker("kill", victim)  # SIGKILL: no drain, as a crash
    state = deployment.docker.docker("inspect", "-f", "{{.State.Running}}", victim).stdout
    assert state.strip() == "false"  # down as the requests below start
    answers = []
    for _ in range(60):
        started = time.monotonic()
        status = _get(f"{deployment.gateway}/.well-known/jwks.json")[0]
        answers.append((status, time.monotonic() - started))
    assert [status for status, _ in answers] == [200] * 60
    # A request the gateway first sends to the dead address waits for the connect to fail
    # (proxy_connect_timeout 2s in deploy/nginx/gateway.conf), then goes to the next replica.
    slowest = max(seconds for _, seconds in answers)
    print(f"\nafter killing {victim}: 60/60 answered 200, slowest {slowest:.2f}s")
    assert slowest < 2.0 + 1.0
    deployment.up(SCALE)  # whole again for what follows (--wait: healthy)


def test_a_fourth_api_replica_gets_traffic_and_is_scraped(deployment: Deployment) -> None:
    before = set(deployment.replicas("api").values())
    deployment.up({**SCALE, "api": 4})
    new = set(deployment.replicas("api").values()) - before
    assert len(new) == 1, new
    (address,) = new

    def served_by_new() -> object:
        for _ in range(20):  # the gateway spreads requests over every address DNS gives
            assert _get(f"{deployment.gateway}/.well-known/jwks.json")[0] == 200
        counted = deployment.query(f'api_http_requests_total{{instance="{address}:8000"}}')
        return counted > 0 or counted

    _eventually(served_by_new, 90, f"requests counted by the new replica {address}")
    _eventually(
        lambda: _every_replica_up(deployment, PORTS), 60, "the new replica up in Prometheus"
    )
