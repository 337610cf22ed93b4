"""The management API on the real processes (SPEC G1, A3, A5, A7): sign up, log in for tokens,
list and revoke them, switch login 2FA on with an authenticator's code, and legacy keys —
over HTTP on different api instances, through authz over Kafka."""

from __future__ import annotations

import base64
import time
import uuid
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp

from tests.e2e.conftest import PASSWORD, System, wait_for

JSON = {"Accept": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} | JSON


def test_sign_up_log_in_2fa_and_revoke_over_http(system: System) -> None:
    first, second = system.apis()[0].url, system.apis()[1].url
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    login = {"email": email, "password": PASSWORD}

    with httpx.Client(timeout=15) as http:
        signed_up = http.post(f"{first}/v0/accounts", json=login | {"locale": "fr"}, headers=JSON)
        assert signed_up.status_code == 201, signed_up.text
        made = http.post(f"{second}/v0/tokens", json=login | {"name": "laptop"}, headers=JSON)
        assert made.status_code == 201, made.text
        token, token_id = made.json()["secret"], made.json()["id"]

        me = http.get(f"{first}/v0/me", headers=bearer(token))
        assert (me.status_code, me.json()["email"], me.json()["two_factor"]) == (200, email, False)
        listed = http.get(f"{second}/v0/tokens", headers=bearer(token)).json()["tokens"]
        assert [t["token_id"] for t in listed] == [token_id]
        assert token not in str(listed)

        # login 2FA: enrol, confirm with the authenticator's code
        enrolment = http.post(f"{first}/v0/2fa", headers=bearer(token)).json()
        assert enrolment["qr_svg"].startswith("<svg")
        secret = parse_qs(urlparse(enrolment["otpauth_uri"]).query)["secret"][0]
        totp = pyotp.TOTP(secret)
        confirmed = http.post(
            f"{first}/v0/2fa/confirm", json={"code": totp.now()}, headers=bearer(token)
        )
        assert confirmed.status_code == 204, confirmed.text

        no_code = http.post(f"{second}/v0/tokens", json=login | {"name": "x"}, headers=JSON)
        assert (no_code.status_code, no_code.json()["code"]) == (401, "401")
        # the next step's code (±1 step is accepted; the current one was used)
        code = totp.at(time.time() + 30)
        with_code = http.post(
            f"{second}/v0/tokens", json=login | {"name": "2fa", "code": code}, headers=JSON
        )
        assert with_code.status_code == 201, with_code.text
        assert with_code.json()["two_factor"] is True
        strong = with_code.json()["secret"]
        assert http.get(f"{second}/v0/me", headers=bearer(strong)).json()["two_factor"] is True

        revoked = http.delete(f"{first}/v0/tokens/{token_id}", headers=bearer(strong))
        assert revoked.status_code == 204
        for api in system.apis():
            wait_for(
                lambda api=api: (
                    http.get(f"{api.url}/v0/me", headers=bearer(token)).status_code == 401
                )
            )
        assert http.get(f"{first}/v0/me", headers=bearer(strong)).status_code == 200


def test_a_legacy_key_made_over_http_works_with_the_deprecation_headers(system: System) -> None:
    email = system.new_account()
    token = system.new_token(email)["token"]
    api = system.apis()[0].url

    with httpx.Client(timeout=15) as http:
        made = http.post(f"{api}/v0/keys", json={"name": "old-script"}, headers=bearer(token))
        assert made.status_code == 201, made.text
        assert made.headers["deprecation"].startswith("@")
        key = made.json()["secret"]
        basic = base64.b64encode(f"{email}/key:{key}".encode()).decode()
        me = http.get(f"{api}/v0/me", headers={"Authorization": f"Basic {basic}"} | JSON)
        keys = http.get(f"{api}/v0/keys", headers=bearer(token)).json()["keys"]

    assert (me.status_code, me.json()["auth_method"]) == (200, "key")
    assert 'rel="deprecation"' in me.headers["link"]
    assert [k["key_id"] for k in keys] == [made.json()["id"]]
