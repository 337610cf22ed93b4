"""Forward auth behind a real nginx (SPEC G3): `auth_request` asks the api's
`/v0/forward-auth`; a valid credential reaches the app with its identity and without the
credential, anything else is stopped at nginx. The configuration is the sample in
docs/forward-auth/nginx.conf with this test's ports; nginx is the Debian package
(`authbus_dev.nginx.ensure`), the api and the app run as HTTP servers in this process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from authbus_api.app import HttpOptions, build_http
from authbus_api.metrics import ApiMetrics
from authbus_api.routes import load_routes
from authbus_dev import nginx
from authbus_dev.ports import free_port
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.ops import ASGIApp, Probes, ops_app
from tests.api_twins import VALID, ScriptedAuthz, twin_gate
from tests.integration.test_gateway import UPSTREAM, raw_echo
from tests.path_variants import ROUTES_TOML, VARIANTS
from tests.support import raw_http, serving

SAMPLE = Path(__file__).parents[2] / "docs" / "forward-auth" / "nginx.conf"


def api_app(routes: Path) -> ASGIApp:
    """The api with the path-variant routes (forward auth judges them; nginx proxies)."""
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    admin = VALID.model_copy(update={"scopes": ("admin",)})
    gate = twin_gate(metrics, authz=ScriptedAuthz({"good": VALID, "admin": admin}))
    options = HttpOptions(routes=load_routes(routes))
    return build_http(gate, AuthzKeys(), metrics, ops_app(registry, Probes()), options)


def routes_for(folder: Path) -> Path:
    path = folder / "routes.toml"
    path.write_text(
        ROUTES_TOML.format(upstream="http://unused.invalid")
        + '\n[[route]]\npath = "/v1/echo/{id}"\nmethods = ["GET", "POST"]\n'
        + 'upstream = "http://unused.invalid"\nscopes = ["read"]\n'
    )
    return path


def nginx_conf(folder: Path, listen: int, api: str, app: str) -> Path:
    """The sample, with this test's ports, and what nginx needs to run unprivileged here."""
    server = (
        SAMPLE.read_text()
        .replace("server 127.0.0.1:8000;", f"server {api.removeprefix('http://')};")
        .replace("server 127.0.0.1:9000;", f"server {app.removeprefix('http://')};")
        .replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    )
    assert api.removeprefix("http://") in server and f"127.0.0.1:{listen}" in server
    return unprivileged(folder, server)


def unprivileged(folder: Path, server: str) -> Path:
    """An nginx.conf around `server` that an ordinary process can run from `folder`."""
    conf = folder / "nginx.conf"
    temp = folder / "temp"
    temp.mkdir()
    conf.write_text(
        f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{server}
}}
"""
    )
    return conf


@contextlib.asynccontextmanager
async def running_nginx(conf: Path, port: int) -> AsyncIterator[str]:
    binary = str(nginx.ensure())
    args = ["-p", str(conf.parent), "-c", str(conf)]
    check = await asyncio.create_subprocess_exec(
        binary, "-t", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, errors = await check.communicate()
    assert check.returncode == 0, errors.decode()
    proc = await asyncio.create_subprocess_exec(
        binary,
        *args,
        "-g",
        "daemon off;",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as client, asyncio.timeout(10):
            while True:
                assert proc.returncode is None, (conf.parent / "error.log").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(f"http://127.0.0.1:{port}/")
                    break
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def nginx_front(folder: Path, app: ASGIApp) -> AsyncIterator[str]:
    """nginx with the sample's configuration, in front of `app`, asking the api."""
    async with serving(app) as upstream, serving(api_app(routes_for(folder))) as api:
        listen = free_port()
        async with running_nginx(nginx_conf(folder, listen, api, upstream), listen) as url:
            yield url


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[str]:
    async with nginx_front(tmp_path, UPSTREAM) as url:
        yield url


async def test_a_valid_credential_reaches_the_app_with_its_identity_only(front: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{front}/v1/echo/7?q=1",
            headers={"Authorization": "Bearer good", "X-Authbus-Account-Id": "forged"},
        )

    assert response.status_code == 200, response.text
    seen = response.json()["headers"]
    assert seen["x-authbus-account-id"] == "acc-1"
    assert seen["x-authbus-scopes"] == "read"
    assert "authorization" not in seen
    assert response.headers["ratelimit-policy"] == '"global";q=60;w=60'
    assert response.headers["ratelimit"].startswith('"global";r=59;')


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer bad"}])
async def test_without_a_valid_credential_nginx_answers_401_and_the_app_sees_nothing(
    front: str, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{front}/v1/echo/7", headers=headers, content=b"secret")

    assert response.status_code == 401
    assert "secret" not in response.text


# What nginx answers for authbus's answer to its auth_request: 401 and 403 pass through, any
# other refusal is an error to nginx (500); nginx itself refuses some paths first (400).
THROUGH_NGINX = {200: {200}, 401: {401}, 403: {403}, 404: {500}, 400: {500, 400}}
CALLERS: tuple[tuple[tuple[str, str], ...], ...] = (
    (),
    (("Authorization", "Bearer good"),),
    (("Authorization", "Bearer admin"),),
)


async def test_every_path_variant_through_a_real_nginx(tmp_path: Path) -> None:
    """A11 with nginx's own routing: each variant is stopped or let through as the route it
    names, and what reaches the app is the normalised path that was judged."""
    failures: list[tuple[str, object, object, object]] = []
    async with nginx_front(tmp_path, raw_echo) as url:
        for variant in VARIANTS:
            for who, expected in zip(CALLERS, variant.status, strict=True):
                answer = await raw_http(url, "GET", variant.raw, who)
                if answer.status not in THROUGH_NGINX[expected]:
                    failures.append((variant.raw, who, expected, answer.status))
                elif answer.status == 200:
                    seen = answer.body.decode().partition("?")[0]
                    if seen != variant.judged:
                        failures.append((variant.raw, who, variant.judged, seen))
    assert not failures
