"""One fault trial: the load running over the fleet, the fault injected by the test between
the phase marks, then the report (`report.publish`, with what the api instances counted
meanwhile: rate fallbacks, stale-cache uses, Kafka errors) and the checks every fault shares.

Each check returns the problems it found (empty: it holds), so a test gathers them all and
fails once with every one of them, after the report is out.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from authbus_api.settings import StalenessSettings
from authbus_authz.settings import AuthzSettings
from authbus_dev.fleet import Fleet, Instance
from tests.e2e.conftest import System
from tests.fault.load import Load, Record, Stream
from tests.fault.report import Folders, publish, statuses, worst
from tests.fault.traffic import Check, Pool, lost

BEFORE_S = 3.0  # load before the fault
AFTER_S = 8.0  # load after the fault ends
CACHED_BOUND_S = 1.0  # a cached credential's answer, whatever is down (issue #10 item 2)
VERIFY_BOUND_S = 3.0  # the verify budget (2 s) and a margin: an answer, 2xx or 503
RECOVERY_S = 5.0  # everything 2xx again this long after the fault ends
# the staleness rule's defaults (A12, ADR 0016), read from the settings the fleet runs with
_STALENESS = StalenessSettings()
STALENESS_BOUND_S = _STALENESS.bound_s
GRACE_S = _STALENESS.grace_s  # stale verdicts served this much longer, then 503
SKEW_S = _STALENESS.clock_skew_ms / 1000  # a view is that much older
# authz's heartbeat interval: the last heartbeat read may be that much older
HEARTBEAT_S = AuthzSettings.model_fields["changes_heartbeat_ms"].default / 1000
# How far behind the feed an api instance may be reading when the broker dies, on this loaded
# 2-core machine (its consumer's lag, a heartbeat's send delayed): the view is that much older.
READ_LAG_S = 2.0
SUCCESS = {200, 201, 204}
FALLBACK = "api_rate_fallback_total"
FEED_AGE = "api_changes_feed_age_seconds"
WATCHED = (FALLBACK, "api_stale_cache_uses_total", "api_kafka_errors_total")


def _samples(api: Instance) -> Iterator[Sample]:
    text = httpx.get(f"{api.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        yield from family.samples


def api_counters(system: System) -> dict[str, float]:
    """The WATCHED counters, by name and labels, summed over the api instances."""
    found: dict[str, float] = defaultdict(float)
    for api in system.apis():
        for sample in _samples(api):
            if sample.name in WATCHED:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}"] += sample.value
    return dict(found)


def feed_ages(system: System) -> str:
    """Each api instance's view of the changes feed: how old it is (A12; -1: no view yet)."""
    ages = [
        f"{api.name} {sample.value:.2f} s"
        for api in system.apis()
        for sample in _samples(api)
        if sample.name == FEED_AGE
    ]
    return f"{FEED_AGE}: " + ", ".join(ages)


def pids(fleet: Fleet) -> dict[str, int | None]:
    """Each instance's pid (None: not running)."""
    return {i.name: fleet.process(i).pid() for i in fleet.instances()}


def exited(fleet: Fleet, before: dict[str, int | None], spared: set[str]) -> dict[str, str]:
    """The instances (but `spared`, stopped on purpose) whose process is not the one that ran
    before: gone, or replaced; with their log's tail."""
    now = pids(fleet)
    return {
        i.name: fleet.process(i).tail(15)
        for i in fleet.instances()
        if i.name not in spared and (now[i.name] is None or now[i.name] != before[i.name])
    }


@dataclass
class Trial:
    system: System
    pool: Pool
    load: Load
    watched: dict[str, int | None]
    notes: list[str] = field(default_factory=list)
    counters_at_start: dict[str, float] = field(default_factory=dict)
    spared: set[str] = field(default_factory=set)  # instances the test stops on purpose

    @property
    def records(self) -> list[Record]:
        return self.load.records

    @property
    def marks(self) -> list[tuple[str, float]]:
        return self.load.marks

    def counted(self) -> dict[str, float]:
        """How much each of the WATCHED counters grew since the trial started (all apis)."""
        now, before = api_counters(self.system), self.counters_at_start
        return {k: v - before.get(k, 0.0) for k, v in now.items() if v > before.get(k, 0.0)}

    def fell_back(self) -> float:
        """Requests decided by the rate fallback since the trial started (R8)."""
        return sum(n for k, n in self.counted().items() if k.startswith(FALLBACK))

    def shared_problems(
        self, also: Iterable[Check] = (), excused: Iterable[Record] = ()
    ) -> list[str]:
        """What every fault must keep: no process exits, an answer to every request (but the
        `excused`), no 500 (nor any 5xx but 503), nothing acknowledged lost (`also`: the
        test's own acknowledged changes)."""
        gone = exited(self.system.fleet, self.watched, self.spared)
        problems = [f"{name} exited or was replaced:\n{tail}" for name, tail in gone.items()]
        skip = {id(r) for r in excused}
        answered = [r for r in self.records if id(r) not in skip]
        problems += only(answered, SUCCESS | {401, 403, 429, 503}, "any request")
        problems += [f"lost: {p}" for p in lost(self.system.apis(), self.records, self.pool, also)]
        return problems


@contextlib.contextmanager
def trial(
    system: System,
    pool: Pool,
    reports: Folders,
    name: str,
    title: str,
    extra: Iterable[Stream] = (),
) -> Iterator[Trial]:
    """The load (the pool's streams and `extra`) from BEFORE_S before the block's fault to the
    block's end; the report published however the block ends."""
    watched = pids(system.fleet)
    load = Load(system.apis(), [*pool.streams(), *extra])
    current = Trial(system, pool, load, watched, counters_at_start=api_counters(system))
    current.notes.append(f"at the start, {feed_ages(system)}")
    try:
        with load:
            time.sleep(BEFORE_S)
            yield current
    finally:
        with contextlib.suppress(httpx.HTTPError):
            grew = current.counted()
            current.notes += [f"{n:6.0f}  {key}" for key, n in sorted(grew.items())]
        publish(reports, name, title, load.records, load.marks, current.notes)


def only(records: Iterable[Record], allowed: set[int], what: str) -> list[str]:
    """Problems: answers outside `allowed` (a 0 is no answer at all)."""
    counted = statuses(records)
    bad = {status: n for status, n in counted.items() if status not in allowed}
    return [f"{what}: got {bad} (allowed: {sorted(allowed)})"] if bad else []


def within(records: list[Record], bound_s: float, what: str) -> list[str]:
    """Problems: answers slower than `bound_s` (a request with no answer: as long as it waited)."""
    slowest = worst(records)
    return [f"{what}: worst latency {slowest:.2f} s > {bound_s} s"] if slowest > bound_s else []


def recovered(records: list[Record], since_s: float, what: str) -> list[str]:
    """Problems: requests sent after `since_s` that did not succeed."""
    late = [r for r in records if r.sent_s >= since_s]
    return only(late, SUCCESS, f"{what} sent {since_s:.1f} s on")
