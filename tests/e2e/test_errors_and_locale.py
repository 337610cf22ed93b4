"""The seeds' error behaviour on the real processes (SPEC E1, E2, E3): the catalog's codes in
HTML by default, JSON on `Accept: application/json`, RFC 9457 on problem+json; messages in the
language the client asks for, else the account's, else the deployment's."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.conftest import PASSWORD, System


@pytest.mark.parametrize(
    ("method", "path", "status", "error_id"),
    [
        ("GET", "/v0/me", 401, "auth.missing"),
        ("GET", "/v0/nothing-here", 404, "operation.notFound"),
        ("DELETE", "/v0/me", 405, "method.notAllowed"),
        ("POST", "/v0/tokens", 400, "request.invalid"),  # no body
    ],
)
def test_each_code_in_html_json_and_problem_json(
    system: System, method: str, path: str, status: int, error_id: str
) -> None:
    url = f"{system.apis()[1].url}{path}"
    with httpx.Client(timeout=10) as http:
        page = http.request(method, url)
        simple = http.request(method, url, headers={"Accept": "application/json"})
        problem = http.request(method, url, headers={"Accept": "application/problem+json"})

    assert {page.status_code, simple.status_code, problem.status_code} == {status}
    assert page.headers["content-type"].startswith("text/html")
    assert f"<h1>{status} " in page.text
    assert simple.json()["code"] == str(status)
    assert problem.json()["type"] == f"urn:authbus:error:{error_id}"
    assert problem.headers["content-type"].startswith("application/problem+json")
    if status == 405:
        assert page.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("accept_language", "language", "message"),
    [
        ("en-US", "en", "Missing API token."),
        ("fr_ca", "fr", "Jeton d'API manquant."),
        ("FR", "fr", "Jeton d'API manquant."),
        ("tlh", "en", "Missing API token."),
        (None, "en", "Missing API token."),
    ],
)
def test_accept_language_picks_the_language(
    system: System, accept_language: str | None, language: str, message: str
) -> None:
    headers = {"Accept": "application/json"}
    if accept_language:
        headers["Accept-Language"] = accept_language

    answer = httpx.get(f"{system.apis()[0].url}/v0/me", headers=headers, timeout=10)

    assert answer.json()["error"] == message
    assert answer.headers["content-language"] == language


def test_without_accept_language_the_account_speaks_its_own_language(system: System) -> None:
    """E3: once the credential is known, its account's default locale is the fallback."""
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    system.admin(
        "account", "create", email, "--locale", "de", "--password-stdin", stdin=PASSWORD + "\n"
    )
    token = system.new_token(email)["token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    url = f"{system.apis()[0].url}/v0/2fa/confirm"

    german = httpx.post(url, json={"code": "000000"}, headers=headers, timeout=10)
    asked = httpx.post(
        url, json={"code": "000000"}, headers=headers | {"Accept-Language": "es"}, timeout=10
    )

    assert german.status_code == 400  # no 2FA enrolment pending
    assert german.headers["content-language"] == "de"
    assert german.json()["error"] == "Ungültige Anfrage oder ungültige Eingabe."
    assert asked.headers["content-language"] == "es"
