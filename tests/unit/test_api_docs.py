"""`/v0/docs` works offline (issue #12): the page loads only what the api itself serves, from
the swagger-ui-bundle-v2 package, and its OAuth2 redirect stays under /v0/docs."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.manage_twins import CommandsTwin, build


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with build(CommandsTwin()) as c:
        yield c


async def test_the_docs_page_loads_only_assets_the_api_serves(client: httpx.AsyncClient) -> None:
    page = (await client.get("/v0/docs")).text
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page)

    assert not [u for u in urls if "//" in u], urls  # no CDN, no other host
    assets = [u for u in urls if u.startswith("/v0/docs/assets/")]
    assert len(assets) == 3
    for url in assets:
        answer = await client.get(url)
        assert answer.status_code == 200, url
        assert len(answer.content) > 500
    assert "oauth2RedirectUrl: window.location.origin + '/v0/docs/oauth2-redirect'" in page
    assert "/v0/openapi.json" in page


async def test_the_oauth2_redirect_page_is_under_v0(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v0/docs/oauth2-redirect")

    assert answer.status_code == 200
    assert "window.opener.swaggerUIRedirectOauth2" in answer.text


@pytest.mark.parametrize(
    "name", ["index.html", "swagger-ui-bundle.js.map", "..%2F..%2F__init__.py", "nope.js"]
)
async def test_nothing_else_of_the_package_is_served(client: httpx.AsyncClient, name: str) -> None:
    assert (await client.get(f"/v0/docs/assets/{name}")).status_code in (400, 404)


async def test_assets_have_their_types(client: httpx.AsyncClient) -> None:
    js = await client.get("/v0/docs/assets/swagger-ui-bundle.js")
    css = await client.get("/v0/docs/assets/swagger-ui.css")

    assert js.headers["content-type"].startswith("text/javascript")
    assert css.headers["content-type"].startswith("text/css")
