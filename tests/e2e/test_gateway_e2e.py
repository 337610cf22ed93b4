"""The gateway and forward auth on the real processes (SPEC E4, G2, G3): declared routes
(`AUTHBUS_API_ROUTES_FILE`) proxied to an upstream with authz and ratelimit over Kafka."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import System


def test_a_declared_route_is_proxied_with_the_callers_identity(system: System) -> None:
    email = system.new_account()
    token = system.new_token(email, "read")["token"]
    api = system.apis()[2].url

    with httpx.Client(timeout=10) as http:
        echoed = http.get(f"{api}/v1/echo/5", headers={"Authorization": f"Bearer {token}"})
        me = http.get(f"{api}/v0/me", headers={"Authorization": f"Bearer {token}"}).json()

    assert echoed.status_code == 200, echoed.text
    seen = echoed.json()["headers"]
    assert (seen["x-authbus-account-id"], seen["x-authbus-account-email"]) == (me["id"], email)
    assert "authorization" not in seen
    assert echoed.headers["ratelimit-policy"] == '"global";q=60;w=60'


def test_the_catalog_answers_for_declared_routes(system: System) -> None:
    """E4: 418 for an unreleased route, 403 without the scope (in the route's own shape)."""
    token = system.new_token(system.new_account(), "read")["token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    api = system.apis()[0].url

    with httpx.Client(timeout=10) as http:
        preview = http.get(f"{api}/v2/preview", headers=headers)
        admin = http.get(f"{api}/v1/admin/users", headers=headers)
        wrong = http.delete(f"{api}/v1/echo/1", headers=headers)

    assert (preview.status_code, preview.json()["code"]) == (418, "418")
    assert admin.status_code == 403
    assert admin.json()["error"]["errorId"] == "action.forbidden"  # structured, per route
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET, HEAD, POST")


def test_forward_auth_answers_with_the_identity(system: System) -> None:
    """G3: as nginx asks (X-Original-*); the second ask is answered from the verdict cache."""
    email = system.new_account()
    token = system.new_token(email, "read")["token"]
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Original-Method": "GET",
        "X-Original-URI": "/v1/echo/9",
    }
    api = system.apis()[1].url

    with httpx.Client(timeout=10) as http:
        answers = [http.get(f"{api}/v0/forward-auth", headers=headers) for _ in range(3)]
        refused = http.get(
            f"{api}/v0/forward-auth",
            headers={"X-Original-Method": "GET", "X-Original-URI": "/v1/echo/9"},
        )

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.headers["x-authbus-account-email"] for a in answers} == {email}
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["59", "58", "57"]
    assert refused.status_code == 401
