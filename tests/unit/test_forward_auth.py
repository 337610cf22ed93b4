"""Forward auth (SPEC G3, A11) over HTTP with in-memory twins: one access decision for every
proxy dialect, only the configured dialect's headers, only from trusted proxies, unmatched
paths denied by default, every path variant judged as the route it names."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from prometheus_client import CollectorRegistry

from authbus_api.app import HttpOptions, build_http
from authbus_api.core.access import Unmatched
from authbus_api.http.forward_auth import Dialect
from authbus_api.metrics import ApiMetrics
from authbus_api.routes import load_routes
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.contracts.authz import AccountView, AuthMethod, CredentialVerified, Outcome
from authbus_shared.ops import Probes, ops_app
from tests.api_twins import VALID, ScriptedAuthz, twin_gate
from tests.path_variants import ROUTES_TOML, VARIANTS, Variant

FA = "/v0/forward-auth"
JSON = {"Accept": "application/json"}
ADMIN = VALID.model_copy(update={"scopes": ("admin",), "credential_id": "t-admin"})
UNICODE = VALID.model_copy(
    update={
        "account": AccountView(id="acc-u", email="jörg.ß@例え.jp", locale="fr-\u00c7A\r\nX: y"),
        "credential_id": "t-u",
    }
)
CALLERS: tuple[dict[str, str], ...] = (
    {},
    {"Authorization": "Bearer good"},
    {"Authorization": "Bearer admin"},
)
Client = Callable[..., AsyncIterator[httpx.AsyncClient]]


@asynccontextmanager
async def forward_auth(
    tmp_path: Path,
    dialect: Dialect = "nginx",
    unmatched: Unmatched = "deny",
    peer: str = "127.0.0.1",
) -> AsyncIterator[httpx.AsyncClient]:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES_TOML.format(upstream="http://upstream.invalid"))
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    authz = ScriptedAuthz(
        {
            "good": VALID,
            "admin": ADMIN,
            "unicode": UNICODE,
            "revoked": CredentialVerified(outcome=Outcome.REVOKED),
        }
    )
    gate = twin_gate(metrics, authz=authz)
    options = HttpOptions(routes=load_routes(routes), dialect=dialect, unmatched=unmatched)
    app = build_http(gate, AuthzKeys(), metrics, ops_app(registry, Probes()), options)
    transport = httpx.ASGITransport(app=app, client=(peer, 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def nginx(method: str, uri: str, **headers: str) -> dict[str, str]:
    return {"X-Original-Method": method, "X-Original-URI": uri, **headers}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.raw)
async def test_every_path_variant_gets_the_answer_of_the_route_it_names(
    tmp_path: Path, variant: Variant
) -> None:
    async with forward_auth(tmp_path) as client:
        statuses = [
            (await client.get(FA, headers=nginx("GET", variant.raw, **who))).status_code
            for who in CALLERS
        ]

    assert tuple(statuses) == variant.status


async def test_envoy_judges_its_own_method_and_the_raw_path_after_the_prefix(
    tmp_path: Path,
) -> None:
    async with forward_auth(tmp_path, dialect="envoy") as client:
        narrow = await client.post(FA + "/public/%2e%2e/admin", headers=CALLERS[1])
        admin = await client.post(FA + "/admin/x", headers=CALLERS[2])
        wrong = await client.delete(FA + "/admin", headers=CALLERS[2])
        ambiguous = await client.get(FA + "/public/..%2Fadmin", headers=CALLERS[2])

    assert narrow.status_code == 403
    assert admin.status_code == 200 and admin.headers["x-authbus-scopes"] == "admin"
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET, HEAD, POST")
    assert ambiguous.status_code == 400


async def test_traefik_believes_only_its_own_headers(tmp_path: Path) -> None:
    """A client-made X-Original-URI passed on by Traefik is not what is judged."""
    headers = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/admin",
        "X-Original-URI": "/public/x",
        "X-Original-Method": "GET",
        **CALLERS[1],
    }
    async with forward_auth(tmp_path, dialect="traefik") as client:
        response = await client.get(FA, headers=headers)

    assert response.status_code == 403


async def test_nginx_believes_only_its_own_headers(tmp_path: Path) -> None:
    headers = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/public/x", **CALLERS[2]}
    async with forward_auth(tmp_path, dialect="nginx") as client:
        response = await client.get(FA, headers=headers)

    assert response.status_code == 400  # nginx's headers are missing: nothing to judge


async def test_a_peer_that_is_not_a_trusted_proxy_gets_403(tmp_path: Path) -> None:
    async with forward_auth(tmp_path, peer="203.0.113.7") as client:
        response = await client.get(FA, headers=nginx("GET", "/public/x", **CALLERS[2]))

    assert response.status_code == 403
    assert "x-authbus-account-id" not in response.headers


@pytest.mark.parametrize(
    "duplicated", ["Authorization", "X-Original-URI", "X-Original-Method", "Host"]
)
async def test_a_repeated_single_header_is_a_400(tmp_path: Path, duplicated: str) -> None:
    values = {
        "Authorization": ("Bearer admin", "Bearer good"),
        "X-Original-URI": ("/admin", "/public/x"),
        "X-Original-Method": ("GET", "POST"),
        "Host": ("api", "other"),
    }[duplicated]
    headers = [(k, v) for k, v in nginx("GET", "/admin", **CALLERS[2]).items() if k != duplicated]
    headers += [(duplicated, value) for value in values] + list(JSON.items())
    async with forward_auth(tmp_path) as client:
        response = await client.get(FA, headers=httpx.Headers(headers))

    assert (response.status_code, response.json()["code"]) == (400, "400")


async def test_an_unmatched_path_is_denied_unless_the_deployment_authenticates_it(
    tmp_path: Path,
) -> None:
    async with forward_auth(tmp_path) as strict:
        denied = await strict.get(FA, headers=nginx("GET", "/elsewhere", **CALLERS[2]))
    async with forward_auth(tmp_path, unmatched="authenticate") as lenient:
        anyone = await lenient.get(FA, headers=nginx("GET", "/elsewhere", **CALLERS[1]))
        nobody = await lenient.get(FA, headers=nginx("GET", "/elsewhere"))

    assert denied.status_code == 404
    assert anyone.status_code == 200 and anyone.headers["x-authbus-account-id"] == "acc-1"
    assert nobody.status_code == 401


async def test_non_ascii_account_data_is_percent_encoded_never_a_500(tmp_path: Path) -> None:
    """Item 5 of issue #8: an identity header carries any account data by one rule."""
    async with forward_auth(tmp_path, unmatched="authenticate") as client:
        response = await client.get(
            FA, headers=nginx("GET", "/elsewhere", Authorization="Bearer unicode")
        )

    assert response.status_code == 200
    email = response.headers["x-authbus-account-email"]
    locale = response.headers["x-authbus-locale"]
    assert email.isascii() and locale.isascii() and "\r" not in locale
    assert unquote(email) == "jörg.ß@例え.jp"
    assert unquote(locale) == "fr-\u00c7A\r\nX: y"
    assert "x" not in {k.lower() for k in response.headers}


async def test_a_200_carries_identity_and_rate_headers(tmp_path: Path) -> None:
    async with forward_auth(tmp_path) as client:
        response = await client.get(FA, headers=nginx("POST", "/admin?x=1", **CALLERS[2]))

    assert response.status_code == 200
    assert response.headers["x-authbus-auth-method"] == AuthMethod.TOKEN.value
    assert response.headers["ratelimit-policy"] == '"global";q=60;w=60'


async def test_a_denial_is_the_catalog_s_answer_in_the_negotiated_shape(tmp_path: Path) -> None:
    async with forward_auth(tmp_path) as client:
        missing = await client.get(FA, headers=nginx("GET", "/admin", **JSON))
        revoked = await client.get(
            FA, headers=nginx("GET", "/admin", Authorization="Bearer revoked", **JSON)
        )

    assert (missing.status_code, missing.json()["code"]) == (401, "401")
    assert "www-authenticate" in missing.headers
    assert (revoked.status_code, revoked.json()["code"]) == (401, "401")


@pytest.mark.parametrize(
    "header",
    [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X_Authbus_Account_Id", "acc-victim"),
        ("x_authbus-scopes", "admin"),
    ],
)
async def test_headers_that_would_change_what_was_judged_are_a_400(
    tmp_path: Path, header: tuple[str, str]
) -> None:
    async with forward_auth(tmp_path) as client:
        response = await client.get(
            FA, headers=[*nginx("POST", "/admin", **CALLERS[2]).items(), header]
        )

    assert response.status_code == 400


@pytest.mark.parametrize(
    ("uri", "status"),
    [("http://app.example/admin?x=1", 200), ("https://app.example", 404), ("//admin", 200)],
)
async def test_an_absolute_form_target_is_judged_by_its_path(
    tmp_path: Path, uri: str, status: int
) -> None:
    async with forward_auth(tmp_path) as client:
        response = await client.get(FA, headers=nginx("GET", uri, **CALLERS[2]))

    assert response.status_code == status
