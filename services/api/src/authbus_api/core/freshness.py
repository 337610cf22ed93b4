"""How fresh this api instance's view of the changes feed is, and what that allows (SPEC A12,
ADR 0016).

Every authz instance writes a heartbeat to each partition of `auth.changes.v1` every
`AUTHBUS_AUTHZ_CHANGES_HEARTBEAT_MS` (500 ms), stamped with its clock just before the send.
A change acknowledged before that stamp was appended before the heartbeat (authz answers only
once its events are in the log), and the api reads every partition in order. So once it has
read, on every partition, a heartbeat stamped `h` or later, it has read every change
acknowledged before `h - skew` (authz and api hosts' clocks differ by at most `skew`): its view
is fresh as of `h - skew`. Stamps come from authz, never from when the api happened to read
them, so a paused api does not take what it reads on waking for news.

`Freshness` keeps the latest heartbeat per partition; the view is fresh as of the oldest of
them. `StalenessPolicy.use` turns the view's age into the rule for a cached verdict:
- `fresh`: the view is at most `bound` old: the cached verdict may be used as is;
- `reverify`: older: ask authz again (a short budget), and use its answer;
- `grace`: when authz cannot answer either (a broker outage, authz down), the cached verdict
  may still be used while the view is at most `bound + grace` old: the deployment's trade of
  availability for staleness, counted in metrics;
- `refuse`: older still, or no heartbeat ever read: fail closed (503).
`Trust` adds the memory that keeps an outage cheap: once authz could not answer, cached
verdicts go straight to grace (or refusal) for `probe_every` instead of each waiting out a
re-verification; the next request after that probes again.

The guarantee (A12), in numbers with the defaults (`bound` 2 s, `grace` 30 s, skew 250 ms): a
credential revoked and acknowledged at `t` gets no 2xx from any api instance for a request
decided after `t + bound + skew` while authz answers through the broker, and after
`t + bound + grace + skew` in any case: a paused or lagging instance re-verifies instead of
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


@dataclass
class Trust:
    """What a cached verdict is good for now: the view's age under the policy, and whether
    authz failed to answer a re-verification in the last `probe_every`."""

    freshness: Freshness
    policy: StalenessPolicy = field(default_factory=StalenessPolicy)
    probe_every: timedelta = timedelta(seconds=1)
    _failed_at: datetime | None = None

    def use(self, now: datetime) -> Use:
        """FRESH, REVERIFY, or (authz failed lately) GRACE or REFUSE without asking again."""
        age = self.freshness.age(now)
        use = self.policy.use(age)
        if use is Use.FRESH:
            return use
        failed = self._failed_at
        if failed is not None and timedelta(0) <= now - failed < self.probe_every:
            return self.policy.use(age, authz_answered=False)
        return Use.REVERIFY

    def unanswered(self, now: datetime) -> Use:
        """authz could not re-verify at `now`: GRACE or REFUSE (and so for `probe_every`)."""
        self._failed_at = now
        return self.policy.use(self.freshness.age(now), authz_answered=False)

    def answered(self) -> None:
        self._failed_at = None
