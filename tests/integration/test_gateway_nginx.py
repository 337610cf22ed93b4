"""The compose gateway (deploy/nginx/gateway.conf) behind a real nginx: the api's ops endpoints
(/metrics, /healthz, /readyz) are not reachable through the public port, whatever the spelling
of the path, while everything else reaches the api (issue #11 item 3). The configuration is the
compose file's, with this test's ports in place of Docker's DNS names; the api runs as an HTTP
server in this process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from authbus_dev.ports import free_port
from tests.integration.test_forward_auth_nginx import (
    api_app,
    routes_for,
    running_nginx,
    unprivileged,
)
from tests.support import raw_http, serving

GATEWAY = Path(__file__).parents[2] / "deploy" / "nginx" / "gateway.conf"
OPS = [
    "/metrics",
    "/healthz",
    "/readyz",
    "/metrics/",
    "//metrics",
    "/%6Detrics",
    "/%6detrics",
    "/v0/../metrics",
    "/./readyz",
    "/readyz?verbose=1",
    "/METRICS",
    "/healthz/x",
]


def gateway_conf(folder: Path, listen: int, api: str) -> Path:
    server = (
        GATEWAY.read_text()
        .replace("listen 8000;", f"listen 127.0.0.1:{listen};")
        .replace("resolver 127.0.0.11 valid=10s ipv6=off;", "")
        .replace("set $api_upstream http://api:8000;", f"set $api_upstream {api};")
    )
    assert f"set $api_upstream {api};" in server and "127.0.0.11" not in server
    return unprivileged(folder, server)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    async with contextlib.AsyncExitStack() as stack:
        api = await stack.enter_async_context(serving(api_app(routes_for(tmp_path))))
        listen = free_port()
        url = await stack.enter_async_context(
            running_nginx(gateway_conf(tmp_path, listen, api), listen)
        )
        yield url, api


@pytest.mark.parametrize("target", OPS)
async def test_the_ops_endpoints_are_not_reachable_through_the_gateway(
    gateway: tuple[str, str], target: str
) -> None:
    url, _ = gateway
    answer = await raw_http(url, "GET", target)

    assert answer.status == 404, (target, answer.status, answer.body[:200])
    assert b"# HELP" not in answer.body


async def test_the_api_is_reachable_through_the_gateway_and_its_ops_port_directly(
    gateway: tuple[str, str],
) -> None:
    url, api = gateway

    assert (await raw_http(url, "GET", "/v0/me")).status == 401  # the api's answer
    assert (await raw_http(url, "GET", "/.well-known/jwks.json")).status == 200
    direct = await raw_http(api, "GET", "/metrics")  # Prometheus, inside the network
    assert direct.status == 200 and b"# HELP" in direct.body
