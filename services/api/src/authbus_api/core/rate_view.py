"""The api's local view of rate decisions (SPEC R3, R4, R5): decides with no round trip.

Algorithm (walking skeleton): the owner of a key broadcasts its decision after counting
(`RateDecided`: count, remaining, window end, block). This instance admits a request unless
the key is blocked, or the owner's `remaining` minus the hits this instance has admitted since
that decision is spent. Every admitted hit is also shipped to the owner (`HitShipper`).

Consistency: instances learn of each other's hits only through the owner's decisions, so for a
short while several instances can together admit more than the limit; the owner's lockout then
holds everywhere. Issue #4 replaces this with quota leases and a proven bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from authbus_shared.contracts.ratelimit import RateDecided


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    limit: int | None = None
    remaining: int | None = None
    reset_at: datetime | None = None
    retry_after_s: int | None = None


@dataclass(slots=True)
class _View:
    decision: RateDecided
    local_since: int


class RateView:
    def __init__(self) -> None:
        self._views: dict[str, _View] = {}

    def on_decision(self, decision: RateDecided) -> None:
        self._views[decision.key] = _View(decision, 0)

    def check(self, key: str, now: datetime) -> Admission:
        view = self._views.get(key)
        if view is None:
            return Admission(allowed=True)
        d = view.decision
        if d.blocked_until is not None and d.blocked_until > now:
            return Admission(
                False, d.limit, 0, d.blocked_until, _seconds_until(d.blocked_until, now)
            )
        if d.reset_at <= now:
            return Admission(allowed=True, limit=d.limit)
        remaining = d.remaining - view.local_since
        if remaining <= 0:
            return Admission(False, d.limit, 0, d.reset_at, _seconds_until(d.reset_at, now))
        return Admission(True, d.limit, remaining - 1, d.reset_at)

    def admitted(self, key: str) -> None:
        view = self._views.get(key)
        if view is not None:
            view.local_since += 1

    def sweep(self, now: datetime) -> None:
        stale = [
            k
            for k, v in self._views.items()
            if v.decision.reset_at <= now
            and (v.decision.blocked_until is None or v.decision.blocked_until <= now)
        ]
        for key in stale:
            del self._views[key]


def _seconds_until(at: datetime, now: datetime) -> int:
    """Whole seconds to wait, rounded up: a client that obeys never comes back too early."""
    return max(1, math.ceil((at - now) / timedelta(seconds=1)))
