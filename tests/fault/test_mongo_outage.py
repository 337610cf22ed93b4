"""MongoDB (SecantusDB here) down for 10 s under load, then started again on the same port and
data (issue #10, SPEC O4): cached credentials keep answering 200; what needs the database
(a cold verification, a login for a token, a revocation) may get 503 within the verify
budget, never a 500; every token answered 201 works afterwards and every revocation answered
204 holds. The database is stopped with SIGTERM (a crash of the beta server's storage would
take the rest of the suite with it)."""

from __future__ import annotations

import time

import pytest

from authbus_dev import infra
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

DOWN_S = 10.0


def test_a_database_outage_costs_only_what_needs_the_database(
    system: System, reports: Folders
) -> None:
    cfg = system.fleet.infra
    pool = prepare(system.apis(), fresh=14)
    title = f"MongoDB (SecantusDB) stopped for {DOWN_S:.0f} s, then restarted (same port, data)"
    with trial(system, pool, reports, "mongo", title) as t:
        t.load.mark("during")
        infra.mongo_process(cfg).stop()
        stopped = t.load.now()
        time.sleep(DOWN_S)
        infra.start_mongo(cfg)
        infra.wait_mongo(cfg)
        back = t.load.mark("after")
        t.notes.append(f"database gone at {stopped:.1f} s, answering again at {back:.1f} s")
        time.sleep(AFTER_S)

    cached = select(t.records, t.marks, kind="cached")
    others = [r for r in t.records if r.kind != "cached"]
    problems = [
        *only(cached, {200}, "cached"),
        *within(cached, CACHED_BOUND_S, "cached"),
        *only(select(others, t.marks, kind="uncached"), {200, 503}, "uncached"),
        *only(select(others, t.marks, kind="create"), {201, 503}, "token creations"),
        *only(select(others, t.marks, kind="revoke"), {204, 503}, "revocations"),
        *within(others, VERIFY_BOUND_S, "uncached, creations and revocations"),
        *recovered(t.records, back + RECOVERY_S, "every request"),
        *t.shared_problems(),
    ]
    assert not problems, "\n".join(problems)
