"""Scopes cannot be self-granted, on the real processes (issue #8 items 3 and 7; SPEC A8,
A1): by login, by a key made with a narrow token, by the grant API, by admin-only sign-up;
a grant taken away stops applying on every instance; only the issued token text verifies."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from authbus_dev.fleet import Instance
from authbus_dev.paths import VENV_BIN
from tests.e2e.conftest import PASSWORD, System
from tests.unit.core.test_token_forms import padded, s_twin

JSON = {"Accept": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **JSON}


def login(api: str, email: str, *scopes: str) -> httpx.Response:
    """A login from a client address of its own (failed logins are throttled per client)."""
    body = {"email": email, "password": PASSWORD, "name": "mine", "scopes": list(scopes)}
    client = {"X-Forwarded-For": f"203.0.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"}
    return httpx.post(f"{api}/v0/tokens", json=body, headers=JSON | client, timeout=10)


def test_a_login_gets_only_granted_scopes(system: System) -> None:
    email = system.new_account()
    api = system.apis()[0].url
    system.admin("account", "grant-scopes", email, "read")

    beyond = login(api, email, "read", "admin")
    inside = login(api, email, "read")

    assert (beyond.status_code, beyond.json()["code"]) == (403, "403")
    assert "granted" in beyond.json()["error"]
    assert inside.status_code == 201 and inside.json()["scopes"] == ["read"]


def test_a_key_made_with_a_token_stays_inside_the_token(system: System) -> None:
    email = system.new_account()
    apis = system.apis()
    system.admin("account", "grant-scopes", email, "read", "write")
    narrow = login(apis[1].url, email, "read").json()["secret"]

    broader = httpx.post(
        f"{apis[2].url}/v0/keys",
        json={"name": "k", "scopes": ["read", "write"]},
        headers=bearer(narrow),
        timeout=10,
    )
    same = httpx.post(
        f"{apis[3].url}/v0/keys",
        json={"name": "k", "scopes": ["read"]},
        headers=bearer(narrow),
        timeout=10,
    )

    assert (broader.status_code, broader.json()["code"]) == (403, "403")
    assert same.status_code == 201 and same.json()["scopes"] == ["read"]


def test_only_an_operator_granted_admin_changes_a_grant(system: System) -> None:
    user = system.new_account()
    account_id = httpx.get(
        f"{system.apis()[0].url}/v0/me", headers=bearer(system.new_token(user, "read")["token"])
    ).json()["id"]
    narrow = system.new_token(user, "read")["token"]
    admin = system.new_token(system.new_account(), "admin")["token"]
    url = f"{system.apis()[1].url}/v0/accounts/{account_id}/scopes"

    refused = httpx.put(url, json={"scopes": ["admin"]}, headers=bearer(narrow), timeout=10)
    granted = httpx.put(
        url, json={"scopes": ["read", "reports"]}, headers=bearer(admin), timeout=10
    )

    assert refused.status_code == 403
    assert granted.status_code == 200 and granted.json()["scopes"] == ["read", "reports"]
    assert system.admin("account", "show", user)["scopes"] == ["read", "reports"]


def test_a_grant_taken_away_stops_applying_on_every_instance(system: System) -> None:
    email = system.new_account()
    token = system.new_token(email, "admin")["token"]
    apis = [a.url for a in system.apis()]
    before = [
        httpx.get(f"{api}/admin", headers=bearer(token), timeout=10).status_code for api in apis
    ]

    system.admin("account", "revoke-scopes", email, "admin")
    deadline, after = time.monotonic() + 5, []
    while time.monotonic() < deadline:
        after = [
            httpx.get(f"{api}/admin", headers=bearer(token), timeout=10).status_code for api in apis
        ]
        if after == [403] * len(apis):
            break
        time.sleep(0.1)

    assert before == [200] * len(apis)
    assert after == [403] * len(apis)


@pytest.fixture(scope="module")
def admin_signup_api(system: System) -> Iterator[str]:
    """One more api instance, whose sign-up is for admins only."""
    extra = Instance("api", len(system.apis()), system.fleet.ports.of("api", len(system.apis())))
    env = system.fleet.environment(extra) | {"AUTHBUS_API_SIGNUP": "admin"}
    process = system.fleet.process(extra)
    process.start([str(VENV_BIN / "authbus-api")], env={**os.environ, **env})
    try:
        system.fleet.wait_ready(extra)
        yield extra.url
    finally:
        system.fleet.stop(extra)


def test_admin_only_sign_up_needs_an_operator_granted_admin(
    system: System, admin_signup_api: str
) -> None:
    email = system.new_account()
    self_made = login(system.apis()[0].url, email, "admin")  # refused: never granted
    narrow = system.new_token(email, "read")["token"]
    admin = system.new_token(system.new_account(), "admin")["token"]
    body: dict[str, Any] = {"email": f"new-{email}", "password": PASSWORD}

    anonymous = httpx.post(f"{admin_signup_api}/v0/accounts", json=body, headers=JSON)
    by_narrow = httpx.post(f"{admin_signup_api}/v0/accounts", json=body, headers=bearer(narrow))
    by_admin = httpx.post(f"{admin_signup_api}/v0/accounts", json=body, headers=bearer(admin))

    assert self_made.status_code == 403
    assert anonymous.status_code == 401
    assert (by_narrow.status_code, by_narrow.json()["code"]) == (403, "403")
    assert by_admin.status_code == 201, by_admin.text


@pytest.mark.parametrize("spelling", [padded, s_twin, lambda t: t + "="])
def test_only_the_issued_token_text_verifies(system: System, spelling: Any) -> None:
    token = system.new_token(system.new_account(), "read")["token"]
    other = spelling(token)
    assert other != token

    for api in system.apis():
        assert httpx.get(f"{api.url}/v0/me", headers=bearer(token), timeout=10).status_code == 200
        answer = httpx.get(f"{api.url}/v0/me", headers=bearer(other), timeout=10)
        assert (answer.status_code, answer.json()) == (
            401,
            {"code": "401", "error": "API token invalid."},
        )
    basic = base64.b64encode(f"x@example.com/token:{other}".encode()).decode()
    answer = httpx.get(f"{system.apis()[0].url}/v0/me", headers={"Authorization": f"Basic {basic}"})
    assert answer.status_code == 401
