"""The api's own routes go through the one access decision too (SPEC A11, E1, E5, G1): 405
with a complete `Allow` on every known path, `HEAD` as `GET`, the credential before the body,
the rate headers on every answer, bodies and duplicates refused at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.manage_twins import ADMIN, JSON, TOKEN, CommandsTwin, build


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with build(CommandsTwin()) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v0/tokens", "GET, HEAD, POST"),
        ("PATCH", "/v0/tokens", "GET, HEAD, POST"),
        ("PROPFIND", "/v0/tokens", "GET, HEAD, POST"),
        ("PUT", "/v0/keys", "GET, HEAD, POST"),
        ("GET", "/v0/accounts", "POST"),
        ("PATCH", "/v0/accounts", "POST"),
        ("GET", "/v0/tokens/t1", "DELETE"),
        ("POST", "/v0/me", "GET, HEAD"),
        ("DELETE", "/.well-known/jwks.json", "GET, HEAD"),
        ("POST", "/v0/forward-auth/x", None),  # nginx dialect: only /v0/forward-auth is its
    ],
)
async def test_405_with_every_method_of_a_known_path(
    client: httpx.AsyncClient, method: str, path: str, allow: str | None
) -> None:
    response = await client.request(method, path, headers=TOKEN)

    if allow is None:
        assert response.status_code == 404
        return
    assert (response.status_code, response.json()["code"]) == (405, "405")
    assert response.headers["allow"] == allow


async def test_variants_of_an_own_path_reach_the_same_route(client: httpx.AsyncClient) -> None:
    paths = ["/v0/me", "/v0/me/", "/v0//me", "/v0/%6De", "/v0/x/../me"]
    answers = [await client.get(p, headers=TOKEN) for p in paths]

    assert [a.status_code for a in answers] == [200] * len(paths)


async def test_head_is_answered_as_get_without_a_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/v0/me", headers=TOKEN)

    assert response.status_code == 200
    assert response.headers["ratelimit-policy"] == '"global";q=60;w=60'


async def test_the_credential_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    """401 (then 403) comes before a 400 for a malformed body: the order is the access one."""
    missing = await client.post("/v0/keys", headers=JSON, content=b"{not json")
    narrow = await client.put("/v0/accounts/a1/scopes", headers=TOKEN, content=b"{not json")
    admin = await client.put("/v0/accounts/a1/scopes", headers=ADMIN, content=b"{not json")

    assert [missing.status_code, narrow.status_code, admin.status_code] == [401, 403, 400]


async def test_every_answer_of_an_own_route_carries_the_rate_headers(
    client: httpx.AsyncClient,
) -> None:
    listed = await client.get("/v0/tokens", headers=TOKEN)
    login = await client.post("/v0/tokens", headers=JSON, content=b"{not json")

    assert listed.headers["ratelimit"].startswith('"global";r=')
    assert login.status_code == 400  # a login counts per address (R6), even a bad one
    assert login.headers["ratelimit-policy"].startswith('"anonymous"')


async def test_a_v0_body_over_its_limit_is_a_413_before_it_is_read(
    client: httpx.AsyncClient,
) -> None:
    big = b"{" + b" " * (1024 * 1024) + b"}"
    response = await client.post("/v0/keys", headers=TOKEN, content=big)

    assert (response.status_code, response.json()["code"]) == (413, "413")
    assert response.headers["connection"] == "close"


async def test_open_routes_need_nothing(client: httpx.AsyncClient) -> None:
    answers = [
        await client.get(path)
        for path in ("/.well-known/jwks.json", "/v0/openapi.json", "/v0/docs")
    ]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all("ratelimit" not in a.headers for a in answers)
