"""The gateway (SPEC E4, G2): declared routes proxied to a real upstream over HTTP, with the
api's checks in front (404, 405, 418, 401, 403, rate limits) and what the upstream may trust.

The upstream is a real HTTP server (uvicorn, loopback); the api runs in this process with
in-memory twins for authz and the rate owner (no Kafka needed here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from authbus_api.app import HttpOptions, build_http
from authbus_api.metrics import ApiMetrics
from authbus_api.policies import load_policies, with_routes
from authbus_api.proxy import Upstreams
from authbus_api.routes import load_routes
from authbus_dev.ports import free_port
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.ops import Probes, Receive, Scope, Send, ops_app
from tests.api_twins import VALID, ScriptedAuthz, twin_gate
from tests.path_variants import ROUTES_TOML, VARIANTS, Variant
from tests.support import raw_http, read_answer, serving

JSON = {"Accept": "application/json"}
TOKEN = {"Authorization": "Bearer good"}


async def echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": body.decode(),
        },
        headers={"X-Upstream": "yes", "Connection": "close, X-Private", "X-Private": "no"},
    )


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(5):
            yield f"chunk-{n};".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


async def slow(request: Request) -> Response:
    await asyncio.sleep(3)
    return Response("late")


UPSTREAM = Starlette(
    routes=[
        Route("/v1/echo/{id}", echo, methods=["GET", "POST", "PUT"]),
        Route("/v1/small/{id}", echo, methods=["POST"]),
        Route("/v1/writes/{id}", echo, methods=["GET", "POST"]),  # e2e: a 5/min route
        Route("/v1/stream", stream),
        Route("/v1/slow", slow),
    ]
)


def routes_file(tmp_path: Path, upstream: str, dead: str) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(
        f"""
[[route]]
path = "/v1/echo/{{id}}"
methods = ["get", "POST"]
upstream = "{upstream}"
scopes = ["read"]

[[route]]
path = "/v1/small/{{id}}"
methods = ["POST"]
upstream = "{upstream}"
max_body_bytes = 1024

[[route]]
path = "/v1/stream"
methods = ["GET"]
upstream = "{upstream}"

[[route]]
path = "/v1/slow"
methods = ["GET"]
upstream = "{upstream}"

[[route]]
path = "/v1/dead"
methods = ["GET"]
upstream = "{dead}"

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
"""
    )
    return path


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(UPSTREAM) as upstream:
        routes = load_routes(routes_file(tmp_path, upstream, f"http://127.0.0.1:{free_port()}"))
        registry = CollectorRegistry()
        metrics = ApiMetrics(registry)
        gate = twin_gate(metrics, policies=with_routes(load_policies(None), routes))
        upstreams = Upstreams(timeout_s=1.0)
        options = HttpOptions(routes=routes, upstreams=upstreams)
        app = build_http(gate, AuthzKeys(), metrics, ops_app(registry, Probes()), options)
        try:
            async with serving(app) as api, httpx.AsyncClient(base_url=api) as c:
                yield c
        finally:
            await upstreams.close()


async def test_a_declared_route_reaches_its_upstream_with_identity_not_credentials(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/v1/echo/42?x=1",
        headers=TOKEN
        | {
            "X-Authbus-Account-Id": "forged",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "private to this hop",
            "X-Custom": "kept",
        },
    )

    assert response.status_code == 200, response.text
    seen = response.json()
    assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/v1/echo/42", "x=1")
    headers = seen["headers"]
    assert headers["x-authbus-account-id"] == "acc-1"  # ours, not the forged one
    assert headers["x-authbus-scopes"] == "read"
    assert headers["x-authbus-auth-method"] == "token"
    assert headers["x-custom"] == "kept"
    assert "authorization" not in headers
    assert "x-hop" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    # the upstream's answer, without its hop-by-hop headers, with the rate headers added
    assert response.headers["x-upstream"] == "yes"
    assert "x-private" not in response.headers
    assert response.headers["ratelimit-policy"] == '"global";q=60;w=60'


async def test_a_request_body_goes_through(client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        for part in (b"hello ", b"streamed ", b"world"):
            yield part

    response = await client.post("/v1/echo/1", headers=TOKEN, content=body())

    assert response.json()["body"] == "hello streamed world"


async def test_a_streamed_body_over_the_route_s_limit_is_a_413_mid_upload(
    client: httpx.AsyncClient,
) -> None:
    """No length declared: the body is counted as it streams upstream, and refused with the
    catalog's 413 (E5), not taken for an upstream failure (503)."""
    host, _, port = str(client.base_url).removeprefix("http://").rstrip("/").partition(":")
    conn = h11.Connection(h11.CLIENT)
    head = [("Host", host), ("Transfer-Encoding", "chunked"), *TOKEN.items(), *JSON.items()]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(conn.send(h11.Request(method="POST", target="/v1/small/1", headers=head)))
        for _ in range(8):
            writer.write(conn.send(h11.Data(data=b"x" * 512)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        answer = await asyncio.wait_for(read_answer(conn, reader), 10)
    finally:
        writer.close()
    assert answer.status == 413
    assert json.loads(answer.body)["code"] == "413"
    assert answer.headers["connection"] == "close"
    small = await client.post("/v1/small/1", headers=TOKEN | JSON, content=b"y" * 100)
    assert small.status_code == 200
    assert small.json()["body"] == "y" * 100


async def test_a_streamed_answer_arrives_whole(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/stream", headers=TOKEN)

    assert response.text == "".join(f"chunk-{n};" for n in range(5))


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "extra"),
    [
        ("GET", "/v1/nothing", TOKEN, 404, {}),
        ("DELETE", "/v1/echo/1", TOKEN, 405, {"allow": "GET, HEAD, POST"}),
        ("GET", "/v2/preview", TOKEN, 418, {}),
        ("GET", "/v1/echo/1", {}, 401, {}),
        ("GET", "/v1/admin/users", TOKEN, 403, {}),
    ],
)
async def test_the_catalog_answers_before_any_upstream(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    extra: dict[str, str],
) -> None:
    response = await client.request(method, path, headers=headers | JSON)

    assert response.status_code == status
    assert response.headers.items() >= extra.items()


async def test_a_route_can_have_its_own_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/admin/users", headers=TOKEN | JSON)

    assert json.loads(response.text) == {
        "error": {
            "errorId": "action.forbidden",
            "errorMessage": "Vous n'avez pas accès à ce point d'accès.",
        }
    }  # the account's language (fr)


@pytest.mark.parametrize("path", ["/v1/slow", "/v1/dead"])
async def test_an_upstream_that_fails_or_times_out_is_a_503(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path, headers=TOKEN | JSON)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def raw_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """An upstream that answers with the request target exactly as it arrived."""
    if scope["type"] != "http":
        return
    target = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": target})


@pytest.fixture
async def variants_api(tmp_path: Path) -> AsyncIterator[str]:
    """The api on real HTTP in front of `raw_echo`, with the path-variant routes."""
    async with serving(raw_echo) as upstream:
        path = tmp_path / "variants.toml"
        path.write_text(ROUTES_TOML.format(upstream=upstream))
        registry = CollectorRegistry()
        metrics = ApiMetrics(registry)
        admin = VALID.model_copy(update={"scopes": ("admin",)})
        gate = twin_gate(metrics, authz=ScriptedAuthz({"good": VALID, "admin": admin}))
        upstreams = Upstreams(timeout_s=2.0)
        options = HttpOptions(routes=load_routes(path), upstreams=upstreams)
        app = build_http(gate, AuthzKeys(), metrics, ops_app(registry, Probes()), options)
        try:
            async with serving(app) as api:
                yield api
        finally:
            await upstreams.close()


CALLERS: tuple[tuple[tuple[str, str], ...], ...] = (
    (),
    (("Authorization", "Bearer good"),),
    (("Authorization", "Bearer admin"),),
)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.raw)
async def test_every_path_variant_is_judged_and_sent_upstream_in_one_form(
    variants_api: str, variant: Variant
) -> None:
    """A11: the path matched is the path the upstream gets, whichever way it was written."""
    answers = [await raw_http(variants_api, "GET", variant.raw, who) for who in CALLERS]

    assert tuple(a.status for a in answers) == variant.status
    for answer in answers:
        if answer.status == 200:
            sent = answer.body.decode().partition("?")[0]
            assert sent == variant.judged
