"""Access holds on the real processes (issue #8; SPEC A8, A11, E5, G2, G3): every way of
writing a path is judged as the route it names, through the gateway and forward auth, on every
api instance; identity headers carry any account data; a repeated credential is refused."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from tests.e2e.conftest import System
from tests.path_variants import VARIANTS
from tests.support import raw_http

JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def callers(system: System) -> tuple[tuple[tuple[str, str], ...], ...]:
    """No credential, a token without `admin`, a token with it (granted by an operator)."""
    narrow = system.new_token(system.new_account(), "read")["token"]
    admin = system.new_token(system.new_account(), "admin")["token"]
    return ((), (("Authorization", f"Bearer {narrow}"),), (("Authorization", f"Bearer {admin}"),))


async def test_every_path_variant_through_the_gateway_on_every_instance(
    system: System, callers: Any
) -> None:
    """42 ways of writing a path x 3 callers, spread over the api instances: the status of
    the route each names, and the upstream gets exactly the path that was judged."""
    apis = [i.url for i in system.apis()]
    failures = []
    for n, variant in enumerate(VARIANTS):
        for who, expected in zip(callers, variant.status, strict=True):
            answer = await raw_http(apis[n % len(apis)], "GET", variant.raw, who)
            seen = answer.body.decode().partition("?")[0] if answer.status == 200 else None
            if answer.status != expected or (seen is not None and seen != variant.judged):
                failures.append((variant.raw, dict(who), expected, answer.status, seen))
    assert not failures


def test_every_path_variant_through_forward_auth_on_every_instance(
    system: System, callers: Any
) -> None:
    apis = [i.url for i in system.apis()]
    failures = []
    with httpx.Client(timeout=10) as http:
        for n, variant in enumerate(VARIANTS):
            for who, expected in zip(callers, variant.status, strict=True):
                headers = {"X-Original-Method": "GET", "X-Original-URI": variant.raw, **dict(who)}
                answer = http.get(f"{apis[n % len(apis)]}/v0/forward-auth", headers=headers)
                if answer.status_code != expected:
                    failures.append((variant.raw, dict(who), expected, answer.status_code))
    assert not failures


async def test_two_authorization_headers_are_a_400_never_the_first_one(
    system: System, callers: Any
) -> None:
    (_, narrow), (_, admin) = callers[1][0], callers[2][0]
    api = system.apis()[0].url
    both = (("Authorization", admin), ("Authorization", narrow), *JSON.items())

    answers = [
        await raw_http(api, "GET", "/admin", both),
        await raw_http(api, "GET", "/v0/me", both),
        await raw_http(
            api,
            "GET",
            "/v0/forward-auth",
            (*both, ("X-Original-Method", "GET"), ("X-Original-URI", "/admin")),
        ),
    ]

    assert [(a.status, a.json()["code"]) for a in answers] == [(400, "400")] * 3


def test_non_ascii_account_data_reaches_the_upstream_encoded_never_a_500(system: System) -> None:
    """Item 5: an account with a non-ASCII email and locale, through the gateway."""
    email = f"jörg.{system.new_account().split('@')[0]}@exämple.com"
    system.admin(
        "account", "create", email, "--locale", "fr-ÇA", "--password-stdin", stdin="pw-" * 8 + "\n"
    )
    token = system.new_token(email, "read")["token"]
    basic = base64.b64encode(f"{email}/token:{token}".encode()).decode()

    with httpx.Client(timeout=10) as http:
        for i, api in enumerate(system.apis()):
            auth = f"Bearer {token}" if i % 2 else f"Basic {basic}"
            echoed = http.get(f"{api.url}/v1/echo/{i}", headers={"Authorization": auth})
            assert echoed.status_code == 200, echoed.text
            seen = echoed.json()["headers"]
            assert unquote(seen["x-authbus-account-email"]) == email
            assert unquote(seen["x-authbus-locale"]) == "fr-ÇA"
            allowed = http.get(
                f"{api.url}/v0/forward-auth",
                headers={
                    "Authorization": auth,
                    "X-Original-Method": "GET",
                    "X-Original-URI": "/v1/echo/1",
                },
            )
            assert allowed.status_code == 200
            assert unquote(allowed.headers["x-authbus-account-email"]) == email
