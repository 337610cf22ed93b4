"""Quota leases, the owner's side: windows, grants, recalls, locks and strikes per limit key
(ADR 0010).

Algorithm: per key, a window opens at the first ask at or after the previous window's end and
lasts the opening ask's `window_s`; its limit and lockout are that ask's policy until it ends.
An ask gets `min(want, r, max(1, ceil(r / 2h)))`, where `r` is the limit minus what this window
has allocated and `h` counts the instances holding units of it unspent (the asker included),
so slices shrink geometrically as the window fills and the last 2h units go out one by one.
Every ask and release says which window's slice the instance holds, how much of it it received
and how much it admitted (`spent`): what the owner allocated to it beyond what it received
never reached it (a reply that came after it stopped waiting) and goes back to the window;
what is allocated and not reported spent is *outstanding* at that instance.

An ask with a request waiting (not a prefetch) that finds `r = 0`:
- with units outstanding at other instances, *recalls* them: a `RecallLease` names the holders
  not already recalled in the last `recall_repeat` (a holder's next message ends its recall),
  and the asker gets `granted=0, retry_after_ms`. Each holder answers with a `ReleaseLease` of
  everything unspent (and what it received and spent), so the asker's next ask finds the units
  back, or finds them spent. Nobody is locked: the limit is not spent yet.
- with nothing outstanding, every unit of the window was admitted: a breach. With a lockout the
  key is locked for `lockout_s`, doubled for each breach within `strike_memory_s` of the last,
  up to `lockout_cap_s` (R3, R7), and the answer carries a `StrikeRecorded` checkpoint to append
  to the key's partition: a replay that starts after the earlier strikes takes the chain from
  it (`strike_recorded`). Without a lockout, the answer says the window is spent.
A lock and the strikes outlive window changes; asks during a lock get 0. A release gives back
at most what the instance holds unspent in the window it names, while it lasts.

Consistency (ADR 0010, "Exact both ways"): the grants of a window sum to at most its limit, and
a unit goes back only when its holder said it will not spend it (a release) or never received
it, so no interleaving admits more than the limit (R4). A breach needs every unit of the window
reported spent, so nobody is locked out before having had the limit (R3, R9). The book is a
pure function of the sequence of (message, broker time) it is given: no clock, no randomness,
no iteration order in any decision (holders are sorted), so replaying a partition into a fresh
book rebuilds the same windows, grants, recalls, locks and strikes (recovery).

Errors: none; a denial is a reply with `granted=0`. A message with a time earlier than its
key's window is counted in that window; a release of an ended or unknown window is ignored.
Memory: one small state per key with an open window, a lock, or a remembered strike, plus one
entry per instance holding units or recalled; `sweep` drops the rest (call it with the latest
broker time seen, so a dropped key behaves as if it had been kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    KeyState,
    LeaseGranted,
    LeasePolicy,
    RecallLease,
    ReleaseLease,
    StrikeRecorded,
    SubjectLocked,
)

# `lockout_s` is at least 1 and the cap at most a day (< 2**17 s): doubling more often than
# this always reaches the cap, and bounding the shift keeps the arithmetic small.
_MAX_DOUBLINGS = 32
# A holder recalled and not heard from since is recalled again after this (a recall lost in an
# owner's crash, or sent while nobody waited, is not waited on for long).
RECALL_REPEAT = timedelta(milliseconds=50)
# What a recalling answer tells the asker: about one hop to the holders and one back.
RETRY_AFTER_MS = 10


@dataclass(slots=True)
class _Key:
    key: str
    policy: LeasePolicy  # of the ask that opened the current window
    window_start: datetime
    window_end: datetime
    allocated: int = 0
    held: dict[str, int] = field(default_factory=dict)  # instance -> allocated, only > 0
    spent: dict[str, int] = field(default_factory=dict)  # instance -> admitted, as it reported
    recalled: dict[str, datetime] = field(default_factory=dict)  # instance -> last recalled
    blocked_until: datetime | None = None
    strikes: int = 0
    last_strike_at: datetime | None = None
    strike_memory: timedelta = timedelta(0)  # of the policy that struck last


@dataclass(frozen=True, slots=True)
class Answer:
    """What an ask leads to: the reply, and what to publish when the ask is live (`locked` and
    `recall` on the decisions topic, `strike` on the key's own partition of the leases topic)."""

    reply: LeaseGranted
    locked: SubjectLocked | None = None
    strike: StrikeRecorded | None = None
    recall: RecallLease | None = None


def lockout_seconds(policy: LeasePolicy, strikes: int) -> int:
    """The lockout of the `strikes`-th breach in a row: doubled each time, up to the cap (a cap
    below `lockout_s`, 0 included, means the lockout never grows)."""
    cap = max(policy.lockout_cap_s, policy.lockout_s)
    return min(cap, policy.lockout_s << min(strikes - 1, _MAX_DOUBLINGS))


class LeaseBook:
    """The keys of one partition of ratelimit.leases.v1 that this instance owns."""

    def __init__(
        self,
        *,
        recall_repeat: timedelta = RECALL_REPEAT,
        retry_after_ms: int = RETRY_AFTER_MS,
    ) -> None:
        self._keys: dict[str, _Key] = {}
        self._repeat = recall_repeat
        self._retry_ms = retry_after_ms

    def acquire(self, ask: AcquireLease, at: datetime) -> Answer:
        """Answer an ask stamped `at` by the broker."""
        state = self._window(ask, at)
        _reconcile(state, ask.instance, ask.window_start, ask.spent, ask.received)
        state.recalled.pop(ask.instance, None)
        r = state.policy.limit - state.allocated
        if state.blocked_until is not None and at < state.blocked_until:
            return Answer(_reply(state, 0, r, state.blocked_until))
        out = _outstanding(state, but=ask.instance)
        outstanding = sum(out.values())
        if r > 0:
            grant = min(ask.want, r, max(1, -(-r // (2 * (1 + len(out))))))
            state.allocated += grant
            state.held[ask.instance] = state.held.get(ask.instance, 0) + grant
            return Answer(_reply(state, grant, r - grant, outstanding=outstanding))
        if ask.prefetch:  # nobody waits: nothing to recall, no breach
            return Answer(_reply(state, 0, 0, outstanding=outstanding))
        if outstanding:
            return self._recall(state, ask, at, out)
        if state.policy.lockout_s == 0:
            return Answer(_reply(state, 0, 0))  # the window is spent
        return self._lock(state, ask, at)

    def release(self, release: ReleaseLease, at: datetime) -> int:
        """Give back up to `unused` of what the instance holds unspent in the window it names
        (and what it never received, when it says what it received), if that window is still
        the key's current one; returns how many units went back."""
        state = self._keys.get(release.key)
        if state is None or state.window_start != release.window_start or at >= state.window_end:
            return 0
        state.recalled.pop(release.instance, None)
        back = _reconcile(
            state, release.instance, release.window_start, release.spent, release.received
        )
        held = state.held.get(release.instance, 0)
        n = min(release.unused, held - state.spent.get(release.instance, 0))
        if n > 0:
            state.allocated -= n
            state.held[release.instance] = held - n
            _forget_if_empty(state, release.instance)
            back += n
        return back

    def strike_recorded(self, record: StrikeRecorded) -> None:
        """Take in a strike checkpoint: the chain of lockouts in a row as the owner that locked
        saw it (its own record coming back changes nothing; an older one is ignored)."""
        state = self._keys.get(record.key)
        if state is None:  # no window since the horizon: one that has ended, for the lock
            placeholder = LeasePolicy(name=record.policy, limit=1, window_s=1)
            state = self._keys[record.key] = _Key(record.key, placeholder, record.at, record.at)
        last = state.last_strike_at
        if last is not None and record.at < last:
            return
        same = last is not None and record.at == last
        state.strikes = max(state.strikes, record.strikes) if same else record.strikes
        state.last_strike_at = record.at
        state.strike_memory = timedelta(seconds=record.strike_memory_s)
        if state.blocked_until is None or record.until > state.blocked_until:
            state.blocked_until = record.until

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

    def inspect(self, subject: str) -> tuple[KeyState, ...]:
        """The keys of `subject` held here (policy names hold no ':'), in key order."""
        return tuple(
            _state_of(state)
            for key, state in sorted(self._keys.items())
            if key.partition(":")[2] == subject
        )

    def reset(self, subject: str) -> tuple[KeyState, ...]:
        """Forget `subject`'s windows, lockouts and strikes; returns them as they were."""
        forgotten = self.inspect(subject)
        for state in forgotten:
            del self._keys[state.key]
        return forgotten

    def window_start(self, key: str) -> datetime | None:
        """When the key's current (or last) window opened; None for a key not held."""
        state = self._keys.get(key)
        return None if state is None else state.window_start

    def holdings(self, key: str) -> dict[str, tuple[int, int]]:
        """What each instance holds of the key's current (or last) window: (allocated, less
        what came back; reported spent). For inspection and tests."""
        state = self._keys.get(key)
        if state is None:
            return {}
        return {i: (n, state.spent.get(i, 0)) for i, n in sorted(state.held.items())}

    def _window(self, ask: AcquireLease, at: datetime) -> _Key:
        """The key's window at `at`, opened with the ask's policy when there is none open."""
        state = self._keys.get(ask.key)
        window = timedelta(seconds=ask.policy.window_s)
        if state is None:
            state = self._keys[ask.key] = _Key(ask.key, ask.policy, at, at + window)
        elif at >= state.window_end:
            state.policy, state.window_start, state.window_end = ask.policy, at, at + window
            state.allocated = 0
            state.held.clear()
            state.spent.clear()
            state.recalled.clear()
        return state

    def _recall(self, state: _Key, ask: AcquireLease, at: datetime, out: dict[str, int]) -> Answer:
        """Units are out unspent elsewhere: ask their holders for them (those not recalled
        lately), and tell the asker when to ask again."""
        due = tuple(
            i for i in out if (last := state.recalled.get(i)) is None or at - last >= self._repeat
        )
        for instance in due:
            state.recalled[instance] = at
        recall = (
            RecallLease(
                key=ask.key,
                subject=ask.subject,
                window_start=state.window_start,
                window_end=state.window_end,
                holders=due,
                at=at,
            )
            if due
            else None
        )
        reply = _reply(state, 0, 0, outstanding=sum(out.values()), retry_after_ms=self._retry_ms)
        return Answer(reply, recall=recall)

    def _lock(self, state: _Key, ask: AcquireLease, at: datetime) -> Answer:
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
        strike = StrikeRecorded(
            key=ask.key,
            subject=ask.subject,
            policy=policy.name,
            strikes=state.strikes,
            at=at,
            until=until,
            strike_memory_s=policy.strike_memory_s,
        )
        return Answer(_reply(state, 0, 0, until), locked=locked, strike=strike)


def _state_of(state: _Key) -> KeyState:
    return KeyState(
        key=state.key,
        policy=state.policy.name,
        limit=state.policy.limit,
        window_s=state.policy.window_s,
        window_start=state.window_start,
        window_end=state.window_end,
        allocated=state.allocated,
        spent=sum(state.spent.values()),
        blocked_until=state.blocked_until,
        strikes=state.strikes,
    )


def _reply(
    state: _Key,
    granted: int,
    remaining: int,
    blocked_until: datetime | None = None,
    *,
    outstanding: int = 0,
    retry_after_ms: int = 0,
) -> LeaseGranted:
    return LeaseGranted(
        key=state.key,
        granted=granted,
        window_start=state.window_start,
        window_end=state.window_end,
        remaining=remaining,
        blocked_until=blocked_until,
        outstanding=outstanding,
        retry_after_ms=retry_after_ms,
    )


def _reconcile(
    state: _Key,
    instance: str,
    window_start: datetime | None,
    spent: int,
    received: int | None = None,
) -> int:
    """Take in what an instance says of the key: it received `received` units of the slice of
    `window_start` it holds and admitted `spent` requests from them. What the owner allocated
    to it beyond what it received never reached it (the reply came after it stopped waiting,
    and a late reply is never used): that goes back to the window. An instance that holds no
    slice of the current window received none of it. Returns how many units went back."""
    held = state.held.get(instance, 0)
    if window_start == state.window_start:
        if held:
            state.spent[instance] = min(held, max(state.spent.get(instance, 0), spent))
        if received is None:
            return 0
        kept = max(received, state.spent.get(instance, 0))
    else:
        kept = state.spent.get(instance, 0)
    phantom = held - kept
    if phantom > 0:
        state.allocated -= phantom
        state.held[instance] = held - phantom
    _forget_if_empty(state, instance)
    return max(0, phantom)


def _outstanding(state: _Key, *, but: str | None) -> dict[str, int]:
    """Units allocated and not reported spent, per instance (`but` left out), in name order."""
    out = {}
    for instance in sorted(state.held):
        n = state.held[instance] - state.spent.get(instance, 0)
        if n > 0 and instance != but:
            out[instance] = n
    return out


def _forget_if_empty(state: _Key, instance: str) -> None:
    if state.held.get(instance, 0) == 0:
        state.held.pop(instance, None)
        state.spent.pop(instance, None)
