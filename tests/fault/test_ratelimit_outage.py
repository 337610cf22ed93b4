"""Every ratelimit instance stopped for 10 s under load, then started again (SPEC R8, R9; issue
#10): the api instances go on with their local fallback (fail-open for these policies: 2xx,
counted in `api_rate_fallback_total`), within the lease timeout (cached answers stay fast),
never a 500; and once the owners are back, limits are exact again: a new account gets exactly
`PROBE_LIMIT` answers on the `probe` route, then 429s, spread over every api instance."""

from __future__ import annotations

import time

import httpx
import pytest

from authbus_dev.fleet import Instance
from tests.e2e.conftest import System
from tests.fault.conftest import PROBE_LIMIT
from tests.fault.load import client_address
from tests.fault.report import Folders, select
from tests.fault.traffic import issue, prepare
from tests.fault.trial import AFTER_S, CACHED_BOUND_S, SUCCESS, only, trial, within

pytestmark = pytest.mark.fault

DOWN_S = 10.0
EXACT_WITHIN_S = 20.0  # after the owners are ready, a new account's limit is exact by then


def probe(apis: list[Instance]) -> list[int]:
    """A new account's statuses for PROBE_LIMIT + 3 requests on the `probe` route (GET
    /v0/tokens), one after the other, round-robin over `apis`."""
    token = issue(apis[0])
    return [
        httpx.get(
            f"{apis[i % len(apis)].url}/v0/tokens",
            headers=token.bearer | {"X-Forwarded-For": client_address()},
            timeout=10,
        ).status_code
        for i in range(PROBE_LIMIT + 3)
    ]


def exact_again(apis: list[Instance], within_s: float) -> tuple[list[list[int]], float]:
    """Probes (each with a new account) until one is exact or `within_s` passed: the
    statuses of each, and the seconds it took."""
    exact = [200] * PROBE_LIMIT + [429] * 3
    started = time.monotonic()
    probes = [probe(apis)]
    while probes[-1] != exact and time.monotonic() - started < within_s:
        time.sleep(1.0)
        probes.append(probe(apis))
    return probes, time.monotonic() - started


def test_without_ratelimit_the_edge_falls_back_and_exactness_returns(
    system: System, reports: Folders
) -> None:
    fleet = system.fleet
    owners = fleet.instances("ratelimit")
    pool = prepare(system.apis(), fresh=18)
    title = f"every ratelimit instance stopped for {DOWN_S:.0f} s, then started again"
    with trial(system, pool, reports, "ratelimit", title) as t:
        t.spared |= {o.name for o in owners}
        t.load.mark("during")
        for owner in owners:
            fleet.stop(owner)
        time.sleep(DOWN_S)
        for owner in owners:
            fleet.start(owner)
        for owner in owners:
            fleet.wait_ready(owner)
        back = t.load.mark("after")
        time.sleep(AFTER_S)
        probes, took = exact_again(system.apis(), EXACT_WITHIN_S)
        t.notes.append(f"owners ready at {back:.1f} s; probes after: {probes} ({took:.1f} s)")

    cached = select(t.records, t.marks, kind="cached")
    problems = [
        *only(t.records, SUCCESS, "every request (fail-open policies)"),
        *within(cached, CACHED_BOUND_S, "cached"),
        *t.shared_problems(),
    ]
    if t.fell_back() <= 0:
        problems.append("no request went to the rate fallback (api_rate_fallback_total)")
    if probes[-1] != [200] * PROBE_LIMIT + [429] * 3:
        problems.append(f"limits not exact {EXACT_WITHIN_S} s after the owners were back")
    assert not problems, "\n".join(problems)
