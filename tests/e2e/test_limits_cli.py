"""Operators inspect and reset a subject's rate limits (SPEC G4, issue #12): `authbus-admin
limits show|reset`, over Kafka, asked of every owner of the leases topic, against the real
processes (four api, two ratelimit instances)."""

from __future__ import annotations

import time

import httpx

from tests.e2e.conftest import System, wait_for
from tests.e2e.test_rate_limits import bearer, fire


def test_an_operator_sees_a_lockout_and_a_reset_lifts_it_everywhere(system: System) -> None:
    email = system.new_account()
    token = system.new_token(email)["token"]
    fire([system.apis()[0]], bearer(token), 61)  # 60 admitted, the 61st locks for 60 s
    wait_for(lambda: all(a.status_code == 429 for a in fire(system.apis(), bearer(token), 4)))

    shown = system.admin("limits", "show", email)
    by_policy = {k["policy"]: k for k in shown["keys"]}
    started = time.monotonic()
    reset = system.admin("limits", "reset", email)
    wait_for(
        lambda: all(a.status_code == 200 for a in fire(system.apis(), bearer(token), 4)),
        timeout_s=10,
    )
    lifted_s = time.monotonic() - started
    after = system.admin("limits", "show", email)

    assert shown["subject"].startswith("acct:")
    assert by_policy["global"]["limit"] == 60 and by_policy["global"]["spent"] >= 60
    assert by_policy["global"]["blocked_until"] is not None
    assert by_policy["global"]["strikes"] == 1
    assert {k["key"] for k in reset["reset"]} == {k["key"] for k in shown["keys"]}
    assert all(k["blocked_until"] is None for k in after["keys"])
    print(f"\nlockout lifted on all four api instances {lifted_s:.1f}s after the reset")


def test_limits_of_an_address_and_of_nobody(system: System) -> None:
    address = "198.51.100.77"
    answers = [
        httpx.get(f"{system.apis()[0].url}/v0/me", headers={"X-Forwarded-For": address})
        for _ in range(3)
    ]
    assert {a.status_code for a in answers} == {401}

    counted = system.admin("limits", "show", address)
    untouched = system.admin("limits", "show", "203.0.113.9")

    (key,) = counted["keys"]
    assert (counted["subject"], key["policy"]) == (f"addr:{address}", "anonymous")
    assert untouched == {"subject": "addr:203.0.113.9", "keys": []}
