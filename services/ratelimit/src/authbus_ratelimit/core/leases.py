"""Quota leases, the owner's side: windows, grants, locks and strikes per limit key (ADR 0010).

Algorithm: per key, a window opens at the first ask at or after the previous window's end and
lasts the opening ask's `window_s`; its limit and lockout are that ask's policy until it ends.
An ask gets `min(want, r, max(1, ceil(r / 2h)))`, where `r` is the limit minus what this window
has allocated and `h` counts the instances holding a slice of it (the asker included), so
slices shrink geometrically as the window fills. Every ask and release says which window's
slice the instance holds and how much of it it admitted (`spent`): an instance that holds no
slice of the current window never received what it was allocated in it (a reply that came
after it stopped waiting), so that goes back to the window; and units allocated but not yet
spent elsewhere are `outstanding`. An ask that finds `r = 0` with a request waiting (not a
prefetch) and nothing outstanding at other instances is a breach (with units still out, the
request is refused but nobody is locked: the limit is not spent yet). With a lockout, a
breach locks the key for `lockout_s`,
doubled for each breach within `strike_memory_s` of the previous one, up to `lockout_cap_s`
(R3, R7). A lock and the strikes outlive window changes; asks during a lock get 0. A release
gives back at most what the instance was allocated in the window it names, while it lasts.

Consistency: the grants of a window sum to at most its limit (the bound of ADR 0010, R1, R4).
The book is a pure function of the sequence of (message, broker time) it is given: no clock,
no randomness, no iteration order in any decision, so replaying a partition into a fresh book
rebuilds the same windows, grants, locks and strikes (recovery).

Errors: none; a denial is a reply with `granted=0`. A message with a time earlier than its
key's window is counted in that window; a release of an ended or unknown window is ignored.
Memory: one small state per key with an open window, a lock, or a remembered strike, plus one
entry per instance holding a slice; `sweep` drops the rest (call it with the latest broker
time seen, so a dropped key behaves as if it had been kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    ReleaseLease,
    SubjectLocked,
)

# `lockout_s` is at least 1 and the cap at most a day (< 2**17 s): doubling more often than
# this always reaches the cap, and bounding the shift keeps the arithmetic small.
_MAX_DOUBLINGS = 32


@dataclass(slots=True)
class _Key:
    policy: LeasePolicy  # the policy of the ask that opened the current window
    window_start: datetime
    window_end: datetime
    allocated: int = 0
    held: dict[str, int] = field(default_factory=dict)  # instance -> allocated, only > 0
    spent: dict[str, int] = field(default_factory=dict)  # instance -> admitted, as it reported
    blocked_until: datetime | None = None
    strikes: int = 0
    last_strike_at: datetime | None = None
    strike_memory: timedelta = timedelta(0)  # of the policy that struck last


def lockout_seconds(policy: LeasePolicy, strikes: int) -> int:
    """The lockout of the `strikes`-th breach in a row: doubled each time, up to the cap (a cap
    below `lockout_s`, 0 included, means the lockout never grows)."""
    cap = max(policy.lockout_cap_s, policy.lockout_s)
    return min(cap, policy.lockout_s << min(strikes - 1, _MAX_DOUBLINGS))


class LeaseBook:
    """The keys of one partition of ratelimit.leases.v1 that this instance owns."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}

    def acquire(self, ask: AcquireLease, at: datetime) -> tuple[LeaseGranted, SubjectLocked | None]:
        """Answer an ask stamped `at` by the broker; the event is set when it locks the key."""
        state = self._window(ask, at)
        _reconcile(state, ask.instance, ask.window_start, ask.spent, ask.received)
        policy = state.policy
        r = policy.limit - state.allocated
        if state.blocked_until is not None and at < state.blocked_until:
            return self._reply(state, ask.key, 0, r, state.blocked_until), None
        out = {i: n - state.spent.get(i, 0) for i, n in state.held.items() if i != ask.instance}
        outstanding = sum(n for n in out.values() if n > 0)
        if r > 0:
            holders = 1 + sum(1 for n in out.values() if n > 0)
            grant = min(ask.want, r, max(1, -(-r // (2 * holders))))
            state.allocated += grant
            state.held[ask.instance] = state.held.get(ask.instance, 0) + grant
            return self._reply(
                state, ask.key, grant, r - grant, None, outstanding=outstanding
            ), None
        if ask.prefetch or policy.lockout_s == 0 or outstanding:
            # Units still out elsewhere: this request is refused, but the limit is not spent
            # yet, so it is no breach (no premature lockout).
            return self._reply(state, ask.key, 0, 0, None, outstanding=outstanding), None
        return self._lock(state, ask, at)

    def release(self, release: ReleaseLease, at: datetime) -> None:
        """Give back up to `unused` of what the instance holds in the window it names, if that
        window is still the key's current one; otherwise ignore it."""
        state = self._keys.get(release.key)
        if state is None or state.window_start != release.window_start or at >= state.window_end:
            return
        _reconcile(state, release.instance, release.window_start, release.spent)
        held = state.held.get(release.instance, 0)
        n = min(release.unused, held - state.spent.get(release.instance, 0))
        if n <= 0:
            return
        state.allocated -= n
        state.held[release.instance] = held - n
        _forget_if_empty(state, release.instance)

    def sweep(self, now: datetime) -> int:
        """Forget keys with no open window, no lock, and no strike still remembered; returns
        how many were dropped."""
        stale = [
            key
            for key, s in self._keys.items()
            if now >= s.window_end
            and (s.blocked_until is None or s.blocked_until <= now)
            and (s.last_strike_at is None or now - s.last_strike_at > s.strike_memory)
        ]
        for key in stale:
            del self._keys[key]
        return len(stale)

    def __len__(self) -> int:
        return len(self._keys)

    def window_start(self, key: str) -> datetime | None:
        """When the key's current (or last) window opened; None for a key not held."""
        state = self._keys.get(key)
        return None if state is None else state.window_start

    def _window(self, ask: AcquireLease, at: datetime) -> _Key:
        """The key's window at `at`, opened with the ask's policy when there is none open."""
        state = self._keys.get(ask.key)
        window = timedelta(seconds=ask.policy.window_s)
        if state is None:
            state = self._keys[ask.key] = _Key(ask.policy, at, at + window)
        elif at >= state.window_end:
            state.policy, state.window_start, state.window_end = ask.policy, at, at + window
            state.allocated = 0
            state.held.clear()
            state.spent.clear()
        return state

    def _lock(
        self, state: _Key, ask: AcquireLease, at: datetime
    ) -> tuple[LeaseGranted, SubjectLocked]:
        """A breach: lock the key, counting a strike in a row if the last is remembered."""
        policy = state.policy
        memory = timedelta(seconds=policy.strike_memory_s)
        last = state.last_strike_at
        in_a_row = last is not None and policy.strike_memory_s > 0 and at - last <= memory
        state.strikes = state.strikes + 1 if in_a_row else 1
        until = at + timedelta(seconds=lockout_seconds(policy, state.strikes))
        state.blocked_until, state.last_strike_at, state.strike_memory = until, at, memory
        locked = SubjectLocked(
            subject=ask.subject,
            key=ask.key,
            policy=policy.name,
            until=until,
            strikes=state.strikes,
            at=at,
        )
        return self._reply(state, ask.key, 0, 0, until), locked

    @staticmethod
    def _reply(
        state: _Key,
        key: str,
        granted: int,
        remaining: int,
        blocked_until: datetime | None,
        *,
        outstanding: int = 0,
    ) -> LeaseGranted:
        return LeaseGranted(
            key=key,
            granted=granted,
            window_start=state.window_start,
            window_end=state.window_end,
            remaining=remaining,
            blocked_until=blocked_until,
            outstanding=outstanding,
        )


def _reconcile(
    state: _Key,
    instance: str,
    window_start: datetime | None,
    spent: int,
    received: int | None = None,
) -> None:
    """Take in what an instance says of the key: it received `received` units of the slice of
    `window_start` it holds and admitted `spent` requests from them. What the owner allocated
    to it beyond what it received never reached it (the reply came after it stopped waiting,
    and a late reply is never used): that goes back to the window. An instance that holds no
    slice of the current window received none of it."""
    held = state.held.get(instance, 0)
    if window_start == state.window_start:
        if held:
            state.spent[instance] = min(held, max(state.spent.get(instance, 0), spent))
        if received is None:
            return
        kept = max(received, state.spent.get(instance, 0))
    else:
        kept = state.spent.get(instance, 0)
    phantom = held - kept
    if phantom > 0:
        state.allocated -= phantom
        state.held[instance] = held - phantom
    _forget_if_empty(state, instance)


def _forget_if_empty(state: _Key, instance: str) -> None:
    if state.held.get(instance, 0) == 0:
        state.held.pop(instance, None)
        state.spent.pop(instance, None)
