"""The api over HTTP with in-memory twins for authz and the hit sink (no Kafka): every answer
comes from the catalog in the representation asked for (SPEC A6, E1, E2, E5, R5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry

from authbus_api.app import HttpOptions, build_http
from authbus_api.core.quota import Quota
from authbus_api.metrics import ApiMetrics
from authbus_shared import apikeys
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.contracts.authz import (
    AuthMethod,
    CredentialVerified,
    Outcome,
    RequestFailed,
)
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.contracts.ratelimit import (
    SubjectLocked,
)
from authbus_shared.kafka.rpc import RpcTimeout
from authbus_shared.ops import Probes, ops_app
from tests.api_twins import ANN, VALID, OwnerTwin, ScriptedAuthz, Uses, twin_gate

JSON = {"Accept": "application/json"}
KEY = apikeys.generate()


@dataclass
class Api:
    client: httpx.AsyncClient
    authz: ScriptedAuthz
    quota: Quota
    owner: OwnerTwin
    uses: Uses


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    authz = ScriptedAuthz(
        {
            "good": VALID,
            "revoked": CredentialVerified(outcome=Outcome.REVOKED),
            "pw-2fa": CredentialVerified(outcome=Outcome.NEEDS_TOKEN),
            "slow": RpcTimeout("no reply"),
            "failing": RequestFailed(reason="unavailable"),
            "bug": RuntimeError("secret internals"),
            "pw-throttled": CredentialVerified(outcome=Outcome.THROTTLED, retry_after_s=17),
            KEY: CredentialVerified(
                outcome=Outcome.VALID,
                account=ANN,
                method=AuthMethod.KEY,
                credential_id="k1",
                deprecated=True,
            ),
        }
    )
    quota, owner, uses = Quota("api-test"), OwnerTwin(), Uses()
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    gate = twin_gate(
        metrics,
        authz=authz,
        quota=quota,
        owner=owner,
        uses=uses,
        deprecation={
            "Deprecation": "@1704067200",
            "Link": '</v0/deprecations/api-keys>; rel="deprecation"',
        },
    )
    app = build_http(gate, AuthzKeys(), metrics, ops_app(registry, Probes()), HttpOptions())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield Api(client, authz, quota, owner, uses)


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def test_200_answers_the_account_and_counts_the_hit(api: Api) -> None:
    response = await api.client.get("/v0/me", headers=bearer("good"))

    assert response.status_code == 200
    assert response.json() == {
        "id": "acc-1",
        "email": "ann@example.com",
        "locale": "fr",
        "scopes": ["read"],
        "auth_method": "token",
        "two_factor": False,
    }
    assert [a.key for a in api.owner.asks] == ["global:acct:acc-1"]
    assert api.uses.credentials == ["t1"]
    assert response.headers["ratelimit-policy"] == '"global";q=60;w=60'
    assert response.headers["ratelimit"].startswith('"global";r=59;t=')
    assert response.headers["x-ratelimit-limit"] == "60"
    assert response.headers["x-ratelimit-remaining"] == "59"
    assert "deprecation" not in response.headers


async def test_a_known_credential_is_answered_from_the_cache(api: Api) -> None:
    for _ in range(3):
        assert (await api.client.get("/v0/me", headers=bearer("good"))).status_code == 200

    assert api.authz.asked == ["good"]


async def test_concurrent_requests_with_a_new_credential_ask_authz_once(api: Api) -> None:
    api.authz.delay_s = 0.05

    responses = await asyncio.gather(
        *(api.client.get("/v0/me", headers=bearer("good")) for _ in range(10))
    )

    assert {r.status_code for r in responses} == {200}
    assert api.authz.asked == ["good"]


@pytest.mark.parametrize(
    ("headers", "message", "challenge_error"),
    [
        ({}, "Missing API token.", False),
        (bearer("unknown"), "API token invalid.", True),
        (bearer("revoked"), "API token invalid.", True),
        ({"Authorization": "Basic !!!not-base64"}, "API token invalid.", True),
        ({"Authorization": "Basic bm8tY29sb24="}, "API token invalid.", True),  # "no-colon"
        ({"Authorization": "Negotiate abc"}, "API token invalid.", True),
    ],
)
async def test_401_carries_the_catalog_message_and_a_challenge(
    api: Api, headers: dict[str, str], message: str, challenge_error: bool
) -> None:
    response = await api.client.get("/v0/me", headers={**headers, **JSON})

    assert response.status_code == 401
    assert response.json() == {"code": "401", "error": message}
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="authbus"')
    assert ('error="invalid_token"' in challenge) is challenge_error


async def test_401_for_password_auth_with_2fa_says_to_use_a_token(api: Api) -> None:
    basic = httpx.BasicAuth("ann@example.com", "pw-2fa")

    response = await api.client.get("/v0/me", auth=basic, headers=JSON)

    assert response.status_code == 401
    assert "use an API token" in response.json()["error"]


async def test_errors_are_html_by_default_and_problem_json_on_request(api: Api) -> None:
    html = await api.client.get("/v0/me")
    problem = await api.client.get("/v0/me", headers={"Accept": "application/problem+json"})

    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>401 Unauthorized</h1>" in html.text
    assert problem.headers["content-type"] == "application/problem+json"
    assert problem.json()["status"] == 401
    assert problem.json()["type"] == "urn:authbus:error:auth.missing"


@pytest.mark.parametrize("secret", ["slow", "failing"])
async def test_503_when_authz_cannot_answer_never_a_guessed_yes(api: Api, secret: str) -> None:
    response = await api.client.get("/v0/me", headers=bearer(secret, **JSON))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert api.owner.asks == []  # neither the account nor the address was counted


async def test_500_has_a_request_id_and_no_internals(api: Api) -> None:
    response = await api.client.get("/v0/me", headers=bearer("bug", **JSON))

    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "500"
    assert len(body["requestId"]) == 32
    assert "secret internals" not in response.text
    assert "RuntimeError" not in response.text


async def test_404_for_an_unknown_path_and_405_with_allow(api: Api) -> None:
    missing = await api.client.get("/v0/nothing-here", headers=JSON)
    wrong_method = await api.client.delete("/v0/me", headers=JSON)

    assert (missing.status_code, missing.json()["code"]) == (404, "404")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "405")
    assert wrong_method.headers["allow"] == "GET, HEAD"


async def test_429_with_retry_after_once_a_lockout_of_the_account_is_broadcast(api: Api) -> None:
    """R3: a lockout from the decisions topic refuses the account here without asking."""
    now = utcnow()
    api.quota.locked(
        SubjectLocked(
            subject="acct:acc-1",
            key="global:acct:acc-1",
            policy="global",
            until=now + timedelta(seconds=42),
            strikes=1,
            at=now,
        )
    )

    response = await api.client.get("/v0/me", headers=bearer("good", **JSON))

    assert response.status_code == 429
    # in the account's default language (fr), as the client asked for none (E3)
    assert response.json() == {
        "code": "429",
        "error": "Trop de requêtes. Veuillez réessayer plus tard.",
    }
    assert response.headers["content-language"] == "fr"
    assert 41 <= int(response.headers["retry-after"]) <= 42
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert api.owner.asks == []


async def test_the_61st_request_in_a_minute_is_refused_and_locks_the_account_out(api: Api) -> None:
    """R1, R3, R5: 60 per 60 s, then 429 with the lockout's Retry-After on every request."""
    answers = [await api.client.get("/v0/me", headers=bearer("good")) for _ in range(62)]

    assert [a.status_code for a in answers] == [200] * 60 + [429] * 2
    assert [a.headers["x-ratelimit-remaining"] for a in answers[:3]] == ["59", "58", "57"]
    assert answers[59].headers["x-ratelimit-remaining"] == "0"
    assert 59 <= int(answers[60].headers["retry-after"]) <= 60
    assert 59 <= int(answers[61].headers["retry-after"]) <= 60


async def test_requests_without_valid_credentials_are_limited_per_client_address(
    api: Api,
) -> None:
    """R6: 401s count against the address; past the limit the answer is 429, not 401."""
    answers = [await api.client.get("/v0/me", headers=JSON) for _ in range(61)]

    assert [a.status_code for a in answers] == [401] * 60 + [429]
    assert answers[0].headers["ratelimit-policy"] == '"anonymous";q=60;w=60'
    assert {a.key for a in api.owner.asks} == {"anonymous:addr:127.0.0.1"}


async def test_probes_and_metrics_are_served_beside_the_api(api: Api) -> None:
    await api.client.get("/v0/me", headers=bearer("good"))

    assert (await api.client.get("/healthz")).status_code == 200
    metrics = (await api.client.get("/metrics")).text
    assert 'api_http_requests_total{method="GET",route="/v0/me",status="200"} 1.0' in metrics
    assert 'api_verdict_cache_lookups_total{result="miss"} 1.0' in metrics


async def test_429_with_retry_after_for_a_throttled_login(api: Api) -> None:
    basic = httpx.BasicAuth("ann@example.com", "pw-throttled")

    response = await api.client.get("/v0/me", auth=basic, headers=JSON)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "17"
    assert "sign-in attempts" in response.json()["error"]


async def test_a_legacy_key_answer_carries_the_deprecation_headers(api: Api) -> None:
    """SPEC A3: `Deprecation` (RFC 9745) and a `Link` with rel="deprecation"."""
    basic = httpx.BasicAuth("ann@example.com/key", KEY)

    response = await api.client.get("/v0/me", auth=basic)
    page = await api.client.get("/v0/deprecations/api-keys")

    assert response.status_code == 200
    assert response.json()["auth_method"] == "key"
    assert response.headers["deprecation"] == "@1704067200"
    assert 'rel="deprecation"' in response.headers["link"]
    assert page.status_code == 200
    assert "deprecated" in page.text


async def test_a_mistyped_key_is_refused_without_asking_authz(api: Api) -> None:
    typo = KEY[:-1] + ("A" if KEY[-1] != "A" else "B")
    basic = httpx.BasicAuth("ann@example.com/key", typo)

    response = await api.client.get("/v0/me", auth=basic, headers=JSON)

    assert response.status_code == 401
    assert api.authz.asked == []


@pytest.mark.parametrize(
    ("accept_language", "language", "message"),
    [
        (None, "en", "Missing API token."),
        ("en-US", "en", "Missing API token."),
        ("fr_ca", "fr", "Jeton d'API manquant."),
        ("FR", "fr", "Jeton d'API manquant."),
        ("de-DE,de;q=0.9,en;q=0.8", "de", "API-Token fehlt."),
        ("tlh, es;q=0.5", "es", "Falta el token de la API."),
        ("tlh", "en", "Missing API token."),  # unsupported: the deployment's language
    ],
)
async def test_errors_speak_the_negotiated_language(
    api: Api, accept_language: str | None, language: str, message: str
) -> None:
    """E3: Accept-Language (case-insensitive, - or _, q-values), else the deployment's."""
    headers = JSON | ({"Accept-Language": accept_language} if accept_language else {})

    response = await api.client.get("/v0/me", headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == message
    assert response.headers["content-language"] == language


async def test_the_client_language_beats_the_account_default(api: Api) -> None:
    """E3: the account's locale (fr) is only the fallback."""
    api.quota.locked(
        SubjectLocked(
            subject="acct:acc-1",
            key="global:acct:acc-1",
            policy="global",
            until=utcnow() + timedelta(seconds=30),
            strikes=1,
            at=utcnow(),
        )
    )

    response = await api.client.get(
        "/v0/me", headers=bearer("good", **JSON, **{"Accept-Language": "es"})
    )

    assert response.json()["error"] == "Demasiadas solicitudes. Inténtelo de nuevo más tarde."
    assert response.headers["content-language"] == "es"


async def test_an_html_error_page_is_translated_and_names_its_language(api: Api) -> None:
    response = await api.client.get("/v0/me", headers={"Accept-Language": "de"})

    assert response.headers["content-type"].startswith("text/html")
    assert '<html lang="de">' in response.text
    assert "401 Nicht autorisiert" in response.text
    assert "API-Token fehlt." in response.text
