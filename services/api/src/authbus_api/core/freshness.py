"""How fresh this api instance's view of the changes feed is, and what that allows (SPEC A12).

Every authz instance writes a heartbeat to each partition of `auth.changes.v1` every
`heartbeat` (a few hundred ms), stamped with its clock. The api reads every partition in
order, so once it has read, on every partition, a heartbeat stamped `h` or later, it has also
read every change appended before `h - skew` (a record is appended after it is made, and
authz hosts' clocks differ by at most `skew`): its view is fresh as of `h - skew`.

`Freshness` keeps the latest heartbeat per partition; the view is fresh as of the oldest of
them. `verdict_use` turns that into the rule for a cached verdict:
- `fresh`: the view is at most `bound` old: the cached verdict may be used as is;
- `reverify`: older: ask authz again (a short budget), and use its answer;
- `grace`: when authz cannot answer either (a broker outage, authz down), the cached verdict
  may still be used while the view is at most `bound + grace` old: the deployment's trade of
  availability for staleness, visible in metrics;
- `refuse`: older still, or no heartbeat ever read: fail closed (503).

The guarantee (A12), in numbers with the defaults (`bound` 2 s, `grace` 30 s): a credential
revoked and acknowledged at `t` is refused by every api instance for every request after
`t + bound` (plus the clocks' skew) while the broker and an authz instance are reachable, and
after `t + bound + grace` in any case: a paused or lagging instance re-verifies instead of
trusting its cache, and an instance cut off from the broker serves only what it cached, only
within the grace, then refuses.

Pure: clocks are arguments; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class Use(StrEnum):
    FRESH = "fresh"
    REVERIFY = "reverify"
    GRACE = "grace"
    REFUSE = "refuse"


@dataclass
class Freshness:
    """The latest heartbeat read per partition of the changes feed."""

    partitions: int
    skew: timedelta = timedelta(milliseconds=250)
    _latest: dict[int, datetime] = field(default_factory=dict)

    def heard(self, partition: int, at: datetime) -> None:
        """A heartbeat stamped `at` was read on `partition` (older ones change nothing)."""
        seen = self._latest.get(partition)
        if seen is None or at > seen:
            self._latest[partition] = at

    def as_of(self) -> datetime | None:
        """Every change appended before this time has been read; None until every partition
        has given a heartbeat."""
        if len(self._latest) < self.partitions:
            return None
        return min(self._latest.values()) - self.skew

    def age(self, now: datetime) -> timedelta | None:
        """How old the view is (None: never fresh yet)."""
        as_of = self.as_of()
        return None if as_of is None else max(timedelta(0), now - as_of)


@dataclass(frozen=True)
class StalenessPolicy:
    bound: timedelta = timedelta(seconds=2)
    grace: timedelta = timedelta(seconds=30)

    def use(self, age: timedelta | None, *, authz_answered: bool | None = None) -> Use:
        """What a cached verdict is good for when the view is `age` old. `authz_answered`:
        None before re-verifying, False when authz could not answer."""
        if age is not None and age <= self.bound:
            return Use.FRESH
        if authz_answered is None:
            return Use.REVERIFY
        if age is not None and age <= self.bound + self.grace:
            return Use.GRACE
        return Use.REFUSE
