"""Credentials through their lives, with the real CLI and processes: a legacy key is used
(with deprecation headers) and revoked; an account is disabled and enabled; last-used times
arrive in batches (SPEC A3, A7, G4)."""

from __future__ import annotations

import base64

import httpx

from tests.e2e.conftest import System, wait_for


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def statuses(system: System, headers: dict[str, str]) -> list[int]:
    return [
        httpx.get(f"{api.url}/v0/me", headers=headers, timeout=10).status_code
        for api in system.apis()
    ]


def test_a_legacy_key_works_with_deprecation_headers_until_revoked(system: System) -> None:
    email = system.new_account()
    system.admin("account", "grant-scopes", email, "read")  # A8: an operator's grant first
    created = system.admin("key", "create", email, "--name", "old-integration", "--scope", "read")
    key = created["key"]
    headers = basic(f"{email}/key", key)

    answer = httpx.get(f"{system.apis()[1].url}/v0/me", headers=headers, timeout=10)
    listed = system.admin("key", "list", email)["keys"]
    system.admin("key", "revoke", created["key_id"])

    assert answer.status_code == 200
    assert answer.json()["auth_method"] == "key"
    assert answer.headers["deprecation"].startswith("@")
    assert 'rel="deprecation"' in answer.headers["link"]
    assert [k["prefix"] for k in listed] == [created["prefix"]]
    assert key not in str(listed)
    wait_for(lambda: statuses(system, headers) == [401] * len(system.apis()), 5)


def test_a_disabled_account_is_refused_everywhere_until_enabled(system: System) -> None:
    email = system.new_account()
    token = system.new_token(email)["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert statuses(system, bearer) == [200] * len(
        system.apis()
    )  # cached as valid on every instance

    system.admin("account", "disable", email)
    wait_for(lambda: statuses(system, bearer) == [401] * len(system.apis()), 5)
    system.admin("account", "enable", email)
    wait_for(lambda: statuses(system, bearer) == [200] * len(system.apis()), 5)


def test_last_used_times_arrive_in_batches(system: System) -> None:
    email = system.new_account()
    issued = system.new_token(email)
    assert system.admin("token", "list", email)["tokens"][0]["last_used_at"] is None

    assert statuses(system, {"Authorization": f"Bearer {issued['token']}"}) == [200] * len(
        system.apis()
    )

    wait_for(
        lambda: system.admin("token", "list", email)["tokens"][0]["last_used_at"] is not None, 15
    )
