"""Fixed-window counting with lockout: the walking skeleton's rate algorithm (SPEC R1, R3).

Algorithm: time is cut into windows of `policy.window` aligned on the epoch; a key's count in
the window of a hit's time (event time, so replaying the log rebuilds the same counts) grows by
the hits. When the count passes `policy.limit`, the key is blocked until `lockout` after that
hit (R3); a block outlives window changes.

Consistency: exact for the hits this owner has counted; the api instances decide from the
owner's broadcast decisions plus their own hits since, so several instances can together admit
more than the limit until the decision reaches them. Issue #4 replaces this with quota leases
and a stated bound; this module keeps the same inputs and outputs.

Errors: none; a hit with a time older than the key's window is counted in the current one.
Memory: one small state per active key; `sweep` drops keys with no window or block left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    limit: int
    window: timedelta
    lockout: timedelta | None


@dataclass(frozen=True, slots=True)
class Decision:
    key: str
    policy: Policy
    count: int
    remaining: int
    reset_at: datetime
    blocked_until: datetime | None


@dataclass(slots=True)
class _State:
    window_start: datetime
    count: int
    blocked_until: datetime | None


def window_start(at: datetime, window: timedelta) -> datetime:
    seconds = window.total_seconds()
    return datetime.fromtimestamp(at.timestamp() // seconds * seconds, tz=UTC)


class FixedWindow:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._states: dict[str, _State] = {}

    def record(self, key: str, hits: int, at: datetime) -> Decision:
        start = window_start(at, self.policy.window)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State(start, 0, None)
        elif start > state.window_start:
            state.window_start, state.count = start, 0
        state.count += hits
        lockout = self.policy.lockout
        if state.count > self.policy.limit and lockout is not None:
            until = at + lockout
            if state.blocked_until is None or until > state.blocked_until:
                state.blocked_until = until
        return self._decision(key, state, at)

    def _decision(self, key: str, state: _State, at: datetime) -> Decision:
        blocked = state.blocked_until if state.blocked_until and state.blocked_until > at else None
        return Decision(
            key=key,
            policy=self.policy,
            count=state.count,
            remaining=max(0, self.policy.limit - state.count),
            reset_at=state.window_start + self.policy.window,
            blocked_until=blocked,
        )

    def sweep(self, now: datetime) -> int:
        """Forget keys whose window ended and which are not blocked; returns how many."""
        stale = [
            key
            for key, s in self._states.items()
            if s.window_start + self.policy.window <= now
            and (s.blocked_until is None or s.blocked_until <= now)
        ]
        for key in stale:
            del self._states[key]
        return len(stale)

    def __len__(self) -> int:
        return len(self._states)
