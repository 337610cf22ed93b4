"""One of two authz instances SIGKILLed under load, and started again only after the phase
(issue #10 item 5): a cold verification (a token its api has not cached) still succeeds through
the surviving authz within the verify budget, so no 503 while a healthy authz exists; cached
credentials are not affected at all."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import System
from tests.fault.report import Folders, select
from tests.fault.traffic import prepare
from tests.fault.trial import (
    AFTER_S,
    CACHED_BOUND_S,
    RECOVERY_S,
    VERIFY_BOUND_S,
    only,
    recovered,
    trial,
    within,
)

pytestmark = pytest.mark.fault

DOWN_S = 10.0  # longer than the group's session timeout: the survivor takes over meanwhile


def test_a_cold_verification_reaches_the_surviving_authz(system: System, reports: Folders) -> None:
    fleet = system.fleet
    victim = fleet.instances("authz")[-1]
    pool = prepare(system.apis(), fresh=24)
    title = f"{victim.name} SIGKILLed for {DOWN_S:.0f} s (of 2 authz), then restarted"
    with trial(system, pool, reports, "authz", title) as t:
        t.spared.add(victim.name)
        t.load.mark("during")
        fleet.kill(victim)
        time.sleep(DOWN_S)
        restart = t.load.now()
        fleet.start(victim)
        fleet.wait_ready(victim)
        back = t.load.mark("after")
        t.notes.append(f"{victim.name} restarted at {restart:.1f} s, ready at {back:.1f} s")
        time.sleep(AFTER_S)

    cached = select(t.records, t.marks, kind="cached")
    uncached = select(t.records, t.marks, kind="uncached")
    commands = [r for r in t.records if r.kind in ("create", "revoke")]
    problems = [
        *only(cached, {200}, "cached"),
        *within(cached, CACHED_BOUND_S, "cached"),
        *only(uncached, {200}, "uncached (a healthy authz was there throughout)"),
        *within(uncached, VERIFY_BOUND_S, "uncached"),
        *only(commands, {201, 204, 503}, "token creations and revocations"),
        *within(commands, VERIFY_BOUND_S, "token creations and revocations"),
        *recovered(t.records, back + RECOVERY_S, "every request"),
        *t.shared_problems(),
    ]
    assert not problems, "\n".join(problems)
