"""Quota leases, the holder's side: spend local slices of each limit key's window (ADR 0010).

Algorithm: per limit key (`<policy>:<subject>`) this instance holds a lease, a slice of the
key's current window granted by the key's owner. A request takes one unit from the lease of
every policy that applies to it (R2): a dict lookup and a decrement, no round trip. A request
that finds a lease empty, unknown or past its usable end (the window's end minus `margin`)
gets `Ask`: the orchestrator sends the blocking asks (one per key in flight at a time; others
wait for it) and decides again. A lease down to a quarter of its last grant is topped up in
the background (`prefetches`). An ask wants a little at first, then twice the last grant
(slow start: a slice follows this instance's demand). A slice idle for `release_idle` goes
back (`releases`), so steady traffic never waits and a client that moved on strands nothing.
Every ask and release tells the owner what this instance received and admitted in the
window, so what it never received (a late reply) goes back. A refused request takes nothing
from any key. Headers (R5) come from the local view: `remaining` is the owner's unallocated
count at its last reply plus the local slice, the reset is the window's end.

Locks (R3): the owner's `SubjectLocked` broadcast, or a reply's `blocked_until`, refuses the
subject on every policy until the lock's end, before any lease is looked at.

Fail-over (R8): an ask unanswered in time puts its key in fallback for `fallback_for`; then a
policy with `fail_mode` "closed" answers `Unavailable`, one with "open" admits from a local
fixed window of the policy's limit that opens at first use. The local window outlives the
fallback period (a key that fails again keeps counting in it) and is swept once ended.

Consistency: while the owner answers, every admitted request spent a unit granted for the
window it was admitted in, and a lease is never spent in its last `margin` (the clock skew
allowed between this host and the broker), so N instances together admit at most the limit
(R4, "The bound"). A request that finds its lease in that margin waits for the window's end
(`Ask.not_before`) rather than asking for units it could not spend. In fallback the limit
holds per instance only. `remaining` ignores what other instances hold: it can be low, never
high.

Errors: none. Every verdict is a value (Admit, Refuse, Ask, Unavailable); the core reads no
clock (`now` is an argument) and does no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    ReleaseLease,
    SubjectLocked,
)

Scope = Literal["account", "address"]
FailMode = Literal["open", "closed"]


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """One configured limit. `scope` "account" counts authenticated requests per account
    (subject `acct:<id>`), "address" counts requests without valid credentials per client
    address (subject `addr:<ip>`). `routes` holds route ids ("GET /v0/me"); empty: all."""

    lease: LeasePolicy
    scope: Scope
    routes: frozenset[str] = frozenset()
    fail_mode: FailMode = "open"

    def applies(self, route: str, scope: Scope) -> bool:
        return scope == self.scope and (not self.routes or route in self.routes)

    def key(self, subject: str) -> str:
        return f"{self.lease.name}:{subject}"


@dataclass(frozen=True, slots=True)
class Need:
    """One policy that applies to one request; the limit key is built once, here."""

    policy: RatePolicy
    subject: str
    _key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", self.policy.key(self.subject))

    @property
    def key(self) -> str:
        return self._key


@dataclass(frozen=True, slots=True)
class RateState:
    """What the headers say for one policy (R5), from this instance's view."""

    policy: str
    limit: int
    window_s: int
    remaining: int
    reset_at: datetime


@dataclass(frozen=True, slots=True)
class Admit:
    """One unit is taken already from every need's key. `states` follow the needs' order;
    `fallback` names the policies admitted by the local fallback window (R8)."""

    states: tuple[RateState, ...]
    fallback: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Refuse:
    """429. `retry_at`: the latest lock end (`locked`) or window end among the refusing needs,
    whose states (remaining 0) are in `states`. Nothing was taken."""

    retry_at: datetime
    states: tuple[RateState, ...]
    locked: bool


@dataclass(frozen=True, slots=True)
class Ask:
    """Make these asks (or wait for the one already in flight for the key), then decide
    again. `not_before`: send them at that time, not earlier (a lease in its end margin: the
    owner's window is still open and a new one starts at its end)."""

    asks: tuple[AcquireLease, ...]
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Unavailable:
    """503: the owner of a fail-closed policy's key is unreachable (R8)."""

    policy: str


Decision = Admit | Refuse | Ask | Unavailable


@dataclass(slots=True)
class _Lease:
    subject: str
    policy: LeasePolicy  # of the ask that got the slice
    window_start: datetime
    window_end: datetime
    usable_until: datetime  # window_end - margin
    units: int
    owner_remaining: int
    last_grant: int
    active_at: datetime  # the last take or grant: idle since then
    taken: int = 0  # requests admitted from this window's slices (told to the owner)
    received: int = 0  # units received for this window (told to the owner)
    refused_until: datetime | None = None  # a waiting ask got nothing: refuse until then


@dataclass(slots=True)
class _Fallback:
    until: datetime  # the owner is not asked before this
    window_end: datetime | None = None  # the local window; None: not opened
    count: int = 0


class Quota:
    """The leases of one api instance; not thread-safe (one event loop)."""

    def __init__(
        self,
        instance: str,
        *,
        margin: timedelta = timedelta(milliseconds=250),
        release_idle: timedelta = timedelta(seconds=1),
        fallback_for: timedelta = timedelta(seconds=2),
        retry_soon: timedelta = timedelta(milliseconds=100),
    ) -> None:
        self.instance = instance
        self.retry_soon = retry_soon
        self.margin = margin
        self.release_idle = release_idle
        self.fallback_for = fallback_for
        self._leases: dict[str, _Lease] = {}
        self._locks: dict[str, datetime] = {}  # subject -> blocked until
        self._fallbacks: dict[str, _Fallback] = {}
        self._flying: dict[str, AcquireLease] = {}  # key -> the one ask in flight

    # --- deciding ----------------------------------------------------------------------

    def decide(self, needs: Sequence[Need], now: datetime) -> Decision:
        """Admit (taking one unit of every need), refuse, ask first, or give up (503)."""
        if self._locks:
            locked = self._refuse_locked(needs, now)
            if locked is not None:
                return locked
        leases, fallbacks = self._leases, self._fallbacks
        for need in needs:
            lease = leases.get(need.key)
            if lease is None or lease.units <= 0 or now >= lease.usable_until:
                return self._decide_slow(needs, now)
            if fallbacks:
                fallback = fallbacks.get(need.key)
                if fallback is not None and now < fallback.until:
                    return self._decide_slow(needs, now)
        # The hot path: every need has units.
        if len(needs) == 1:
            return Admit((self._take(leases[needs[0].key], now),))
        return Admit(tuple([self._take(leases[need.key], now) for need in needs]))

    def _refuse_locked(self, needs: Sequence[Need], now: datetime) -> Refuse | None:
        states: list[RateState] = []
        latest: datetime | None = None
        for need in needs:
            until = self._locks.get(need.subject)
            if until is not None and until > now:
                states.append(_refused_state(need.policy.lease, until))
                latest = until if latest is None or until > latest else latest
        return None if latest is None else Refuse(latest, tuple(states), locked=True)

    def _decide_slow(self, needs: Sequence[Need], now: datetime) -> Decision:
        refused: list[RateState] = []
        retry_at: datetime | None = None
        unavailable: str | None = None
        asking: list[Need] = []
        not_before: datetime | None = None
        for need in needs:
            end = self._refused_until(need, now)
            if end is not None:
                refused.append(_refused_state(need.policy.lease, end))
                retry_at = end if retry_at is None or end > retry_at else retry_at
            elif self._in_fallback(need.key, now):
                if need.policy.fail_mode == "closed" and unavailable is None:
                    unavailable = need.policy.lease.name
            elif not self._ready(need.key, now):
                asking.append(need)
                lease = self._leases.get(need.key)
                if lease is not None and lease.usable_until <= now < lease.window_end:
                    wait = lease.window_end
                    not_before = wait if not_before is None or wait > not_before else not_before
        if retry_at is not None:
            return Refuse(retry_at, tuple(refused), locked=False)
        if unavailable is not None:
            return Unavailable(unavailable)
        if asking:
            return Ask(tuple([self._ask(need) for need in asking]), not_before)
        return self._admit_mixed(needs, now)

    def _refused_until(self, need: Need, now: datetime) -> datetime | None:
        """The end of the window that refuses `need`, if one does."""
        fallback = self._fallbacks.get(need.key)
        if fallback is not None and now < fallback.until:
            if need.policy.fail_mode == "closed":
                return None
            end = fallback.window_end
            if end is not None and now < end and fallback.count >= need.policy.lease.limit:
                return end
            return None
        lease = self._leases.get(need.key)
        if (
            lease is not None
            and lease.refused_until is not None
            and now < lease.refused_until
            and lease.units <= 0
        ):
            return lease.refused_until  # the owner had nothing for a waiting ask
        return None

    def _in_fallback(self, key: str, now: datetime) -> bool:
        fallback = self._fallbacks.get(key)
        return fallback is not None and now < fallback.until

    def _ready(self, key: str, now: datetime) -> bool:
        lease = self._leases.get(key)
        return lease is not None and lease.units > 0 and now < lease.usable_until

    def _ask(self, need: Need) -> AcquireLease:
        """The blocking ask for `need`'s key: the one in flight, or a new one now in flight."""
        ask = self._flying.get(need.key)
        if ask is None:
            policy = need.policy.lease
            lease = self._leases.get(need.key)
            ask = AcquireLease(
                key=need.key,
                subject=need.subject,
                policy=policy,
                instance=self.instance,
                want=_want(policy, lease),
                prefetch=False,
                window_start=None if lease is None else lease.window_start,
                received=0 if lease is None else lease.received,
                spent=0 if lease is None else lease.taken,
            )
            self._flying[need.key] = ask
        return ask

    def _admit_mixed(self, needs: Sequence[Need], now: datetime) -> Admit:
        """Every need is ready, some from the fallback window: take one from each."""
        states: list[RateState] = []
        fallback: list[str] = []
        for need in needs:
            local = self._fallbacks.get(need.key)
            if local is not None and now < local.until:
                states.append(self._take_local(local, need.policy.lease, now))
                fallback.append(need.policy.lease.name)
            else:
                states.append(self._take(self._leases[need.key], now))
        return Admit(tuple(states), tuple(fallback))

    @staticmethod
    def _take(lease: _Lease, now: datetime) -> RateState:
        lease.units -= 1
        lease.taken += 1
        lease.active_at = now
        policy = lease.policy
        return RateState(
            policy.name,
            policy.limit,
            policy.window_s,
            lease.owner_remaining + lease.units,
            lease.window_end,
        )

    @staticmethod
    def _take_local(local: _Fallback, policy: LeasePolicy, now: datetime) -> RateState:
        if local.window_end is None or now >= local.window_end:
            local.window_end = now + timedelta(seconds=policy.window_s)
            local.count = 0
        local.count += 1
        return RateState(
            policy.name, policy.limit, policy.window_s, policy.limit - local.count, local.window_end
        )

    # --- what the owner says -------------------------------------------------------------

    def granted(self, ask: AcquireLease, reply: LeaseGranted, now: datetime) -> bool:
        """The owner answered a blocking ask. Returns whether it gave units spendable now (the
        orchestrator counts rounds that did not)."""
        self._flying.pop(ask.key, None)
        lease = self._apply(ask, reply, now)
        if lease is None:
            return False
        if reply.granted == 0 and reply.blocked_until is None:
            # Nothing for a waiting request. With units still out at other instances the
            # owner may get some back (releases): ask again soon. Without, the window is spent
            # (a policy without lockout): refuse until it ends.
            lease.refused_until = (
                min(now + self.retry_soon, lease.window_end)
                if reply.outstanding
                else lease.window_end
            )
        return reply.granted > 0 and now < lease.usable_until

    def ask_failed(self, key: str, now: datetime) -> None:
        """No reply in time: the key goes to fallback until `now + fallback_for` (R8)."""
        self._flying.pop(key, None)
        until = now + self.fallback_for
        fallback = self._fallbacks.get(key)
        if fallback is None:
            self._fallbacks[key] = _Fallback(until)
        else:
            fallback.until = until

    def abandon(self, key: str) -> None:
        """An ask that neither got a reply nor timed out (an error, a cancellation): it is no
        longer in flight, and the next decision asks again."""
        self._flying.pop(key, None)

    def locked(self, event: SubjectLocked) -> None:
        """The broadcast lock (R3): refuse the subject on every policy until `event.until`."""
        self._lock(event.subject, event.until)

    def _lock(self, subject: str, until: datetime) -> None:
        current = self._locks.get(subject)
        if current is None or until > current:
            self._locks[subject] = until

    def _apply(self, ask: AcquireLease, reply: LeaseGranted, now: datetime) -> _Lease | None:
        """Add a grant to the key's lease, or start the lease of a new window; None for a reply
        about a window older than the lease's."""
        if reply.blocked_until is not None and reply.blocked_until > now:
            self._lock(ask.subject, reply.blocked_until)
        lease = self._leases.get(ask.key)
        if lease is not None and reply.window_start < lease.window_start:
            return None
        if lease is not None and reply.window_start == lease.window_start:
            lease.units += reply.granted
            lease.received += reply.granted
            lease.owner_remaining = reply.remaining
            lease.last_grant = reply.granted
            if reply.granted > 0:
                lease.active_at = now
            return lease
        lease = _Lease(
            subject=ask.subject,
            policy=ask.policy,
            window_start=reply.window_start,
            window_end=reply.window_end,
            usable_until=reply.window_end - self.margin,
            units=reply.granted,
            owner_remaining=reply.remaining,
            last_grant=reply.granted,
            active_at=now,
            received=reply.granted,
        )
        self._leases[ask.key] = lease
        return lease

    # --- background work -----------------------------------------------------------------

    def prefetches(self, now: datetime) -> list[AcquireLease]:
        """Top-ups due: leases in use, down to a quarter of their last grant, whose owner has
        more. They are in flight from now on (`prefetch_done` ends that)."""
        due: list[AcquireLease] = []
        for key, lease in self._leases.items():
            if (
                key in self._flying
                or now >= lease.usable_until
                or lease.owner_remaining <= 0
                or lease.units > lease.last_grant // 4
                or now - lease.active_at >= self.release_idle
                or self._in_fallback(key, now)
                or self._locks.get(lease.subject, now) > now
            ):
                continue
            ask = AcquireLease(
                key=key,
                subject=lease.subject,
                policy=lease.policy,
                instance=self.instance,
                want=_want(lease.policy, lease),
                prefetch=True,
                window_start=lease.window_start,
                received=lease.received,
                spent=lease.taken,
            )
            self._flying[key] = ask
            due.append(ask)
        return due

    def prefetch_done(self, ask: AcquireLease, reply: LeaseGranted | None, now: datetime) -> None:
        """A top-up's answer; None: it failed (the key is not put in fallback: nobody waited)."""
        self._flying.pop(ask.key, None)
        if reply is not None:
            self._apply(ask, reply, now)

    def releases(self, now: datetime) -> list[ReleaseLease]:
        """Idle slices to give back; their units are dropped here and counted as the owner's."""
        out: list[ReleaseLease] = []
        for key, lease in self._leases.items():
            if (
                lease.units > 0
                and now < lease.usable_until
                and now - lease.active_at >= self.release_idle
            ):
                out.append(
                    ReleaseLease(
                        key=key,
                        instance=self.instance,
                        window_start=lease.window_start,
                        unused=lease.units,
                        spent=lease.taken,
                    )
                )
                lease.owner_remaining += lease.units
                lease.received -= lease.units  # what it holds of the window, as the owner sees
                lease.units = 0
        return out

    def sweep(self, now: datetime) -> int:
        """Forget ended windows, expired locks and fallbacks whose local window ended; returns
        how many entries were dropped."""
        leases = [k for k, lease in self._leases.items() if now >= lease.window_end]
        locks = [s for s, until in self._locks.items() if now >= until]
        fallbacks = [
            k
            for k, f in self._fallbacks.items()
            if now >= f.until and (f.window_end is None or now >= f.window_end)
        ]
        for key in leases:
            del self._leases[key]
        for subject in locks:
            del self._locks[subject]
        for key in fallbacks:
            del self._fallbacks[key]
        return len(leases) + len(locks) + len(fallbacks)


FIRST_WANT = 4  # a key's first ask in a window; then twice the last grant (slow start)


def _want(policy: LeasePolicy, lease: _Lease | None) -> int:
    """How much to ask for: a little at first, then twice the last grant as the slices get
    used, up to the limit. An instance asks in proportion to its own demand, so the first to
    ask does not walk off with half the window while the others' clients wait (the owner's
    rule caps every grant at its share of what is left as well)."""
    if lease is None or lease.last_grant == 0:
        return min(policy.limit, FIRST_WANT)
    return min(policy.limit, max(FIRST_WANT, 2 * lease.last_grant))


def _refused_state(policy: LeasePolicy, until: datetime) -> RateState:
    return RateState(policy.name, policy.limit, policy.window_s, 0, until)
