"""Quota leases, the holder's side: spend local slices of each limit key's window (ADR 0010).

Algorithm: per limit key (`<policy>:<subject>`) this instance holds a slice of the key's
current window granted by the key's owner (`core/slices.py`). A request takes one unit from the
slice of every policy that applies to it (R2): a dict lookup and a decrement, no round trip. A
request that finds a slice empty, unknown or past its usable end (the window's end minus
`margin`) gets `Ask`: the orchestrator sends the blocking asks (one per key in flight at a
time; others wait for it) and decides again. It never refuses on its own view of an empty
slice: only the owner knows whether the window is spent. The owner answers with units; or
that it is recalling units unspent at other instances (`retry_after_ms`: the request asks again
then, as long as it has been waiting less than `ask_budget`, after which it is refused with a
short `Retry-After`); or that the window is spent (refused until the window's end, without
asking again: nothing can come back); or that the subject is locked. A slice down to a quarter
of its last grant is topped up in the background, an idle one goes back after
`release_idle`, and an owner's recall (`recalled`, from the decisions broadcast) gives back
everything unspent at once: the answers wait in `answers()` for the orchestrator, which
`on_answer` wakes. A reply to an ask sent before such an answer is void: its units were taken
back. A refused request takes nothing from any key. Headers (R5) come from the local view.

Locks (R3): the owner's `SubjectLocked` broadcast, or a reply's `blocked_until`, refuses the
subject on every policy until the lock's end, before any slice is looked at; the refusal says
the lock's true end.

Fail-over (R8): an ask unanswered in time puts its key in fallback (`core/fallback.py`): a
"closed" policy answers `Unavailable`, an "open" one admits from a local window.

Consistency (ADR 0010, "Exact both ways"): while the owner answers, every admitted request
spent a unit granted for the window it was admitted in, a unit given back is never spent, and a
slice is never spent in its last `margin` (the clock skew allowed between this host and the
broker), so N instances together admit at most the limit (R4). A request is refused only when
the owner said the window is spent or the subject locked, or when units it recalled did not
come back within `ask_budget` (a holder paused or cut off: then at most what that holder
holds). In fallback the limit holds per instance only. `remaining` ignores what other
instances hold: it can be low, never high.

Errors: none. Every verdict is a value (Admit, Refuse, Ask, Unavailable); the core reads no
clock (`now` is an argument) and does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from authbus_api.core.fallback import Fallbacks
from authbus_api.core.rates import (
    Admit,
    Ask,
    Decision,
    Need,
    Outcome,
    RateState,
    Refuse,
    Unavailable,
    refused_state,
)
from authbus_api.core.slices import (
    Slice,
    apply_reply,
    ask_for,
    idle_release,
    next_try,
    recall_answer,
    recall_overdue,
    stranded_refusal,
    take,
    top_up,
)
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    RecallLease,
    ReleaseLease,
    SubjectLocked,
)


class Quota:
    """The leases of one api instance; not thread-safe (one event loop)."""

    def __init__(
        self,
        instance: str,
        *,
        margin: timedelta = timedelta(milliseconds=250),
        release_idle: timedelta = timedelta(seconds=1),
        fallback_for: timedelta = timedelta(seconds=2),
        ask_budget: timedelta = timedelta(milliseconds=200),
    ) -> None:
        self.instance = instance
        self.margin = margin
        self.release_idle = release_idle
        self.ask_budget = ask_budget
        self.on_answer: Callable[[], None] | None = None  # a recall answer waits in answers()
        self._leases: dict[str, Slice] = {}
        self._locks: dict[str, datetime] = {}  # subject -> blocked until
        self._fallbacks = Fallbacks(fallback_for)
        self._flying: dict[str, AcquireLease] = {}  # key -> the one ask in flight
        self._waiting: dict[str, int] = {}  # key -> requests that waited on that ask
        self._void: dict[str, tuple[AcquireLease, datetime]] = {}  # key -> (ask, window)
        self._answers: list[ReleaseLease] = []

    # --- deciding ----------------------------------------------------------------------

    def decide(
        self, needs: Sequence[Need], now: datetime, since: datetime | None = None
    ) -> Decision:
        """Admit (taking one unit of every need), refuse, ask first, or give up (503).
        `since`: when the request began waiting for the owner (None: its first look)."""
        if self._locks:
            locked = self._refuse_locked(needs, now)
            if locked is not None:
                return locked
        leases, fallbacks = self._leases, self._fallbacks
        for need in needs:
            lease = leases.get(need.key)
            if lease is None or lease.units <= 0 or now >= lease.usable_until:
                return self._decide_slow(needs, now, since)
            if fallbacks and fallbacks.active(need.key, now):
                return self._decide_slow(needs, now, since)
        # The hot path: every need has units.
        if len(needs) == 1:
            return Admit((take(leases[needs[0].key], now),))
        return Admit(tuple([take(leases[need.key], now) for need in needs]))

    def refuse_waiting(self, needs: Sequence[Need], now: datetime) -> Refuse:
        """A request that waited as long as it may without getting units (its rounds ran
        out): refused for now, on the needs that are not ready."""
        waiting = [n for n in needs if not self._ready(n.key, now)] or list(needs)
        return stranded_refusal(waiting, self._leases, now)

    def _refuse_locked(self, needs: Sequence[Need], now: datetime) -> Refuse | None:
        states: list[RateState] = []
        latest: datetime | None = None
        for need in needs:
            until = self._locks.get(need.subject)
            if until is not None and until > now:
                states.append(refused_state(need.policy.lease, until))
                latest = until if latest is None or until > latest else latest
        return None if latest is None else Refuse(latest, tuple(states), locked=True)

    def _decide_slow(
        self, needs: Sequence[Need], now: datetime, since: datetime | None
    ) -> Decision:
        refused: list[RateState] = []
        retry_at: datetime | None = None
        unavailable: str | None = None
        asking: list[Need] = []
        stranded: list[Need] = []
        not_before: datetime | None = None
        for need in needs:
            end = self._refused_until(need, now)
            if end is not None:
                refused.append(refused_state(need.policy.lease, end))
                retry_at = end if retry_at is None or end > retry_at else retry_at
            elif self._fallbacks.active(need.key, now):
                if need.policy.fail_mode == "closed" and unavailable is None:
                    unavailable = need.policy.lease.name
            elif not self._ready(need.key, now):
                lease = self._leases.get(need.key)
                wait = next_try(lease, now)
                if since is not None and recall_overdue(lease, since, wait, self.ask_budget):
                    stranded.append(need)  # recalled units did not come back in time
                    continue
                asking.append(need)
                if wait is not None and (not_before is None or wait > not_before):
                    not_before = wait
        if stranded:
            late = stranded_refusal(stranded, self._leases, now)
            refused.extend(late.states)
            retry_at = late.retry_at if retry_at is None or late.retry_at > retry_at else retry_at
        if retry_at is not None:
            return Refuse(retry_at, tuple(refused), locked=False)
        if unavailable is not None:
            return Unavailable(unavailable)
        if asking:
            return Ask(tuple([self._ask(need) for need in asking]), not_before)
        return self._admit_mixed(needs, now)

    def _refused_until(self, need: Need, now: datetime) -> datetime | None:
        """The end of the window that refuses `need`, if one does: a full local window in
        fallback, or the owner's window it said is spent."""
        if self._fallbacks.active(need.key, now):
            return self._fallbacks.refused_until(need, now)
        lease = self._leases.get(need.key)
        if (
            lease is not None
            and lease.refused_until is not None
            and now < lease.refused_until
            and lease.units <= 0
        ):
            return lease.refused_until
        return None

    def _ready(self, key: str, now: datetime) -> bool:
        lease = self._leases.get(key)
        return lease is not None and lease.units > 0 and now < lease.usable_until

    def _ask(self, need: Need) -> AcquireLease:
        """The blocking ask for `need`'s key: the one in flight, or a new one now in flight
        that wants at least one unit for each request that waited on the last one."""
        key = need.key
        ask = self._flying.get(key)
        if ask is not None:
            self._waiting[key] = self._waiting.get(key, 0) + 1
            return ask
        lease, policy = self._leases.get(key), need.policy.lease
        waited = self._waiting.get(key, 0)
        ask = ask_for(
            key, need.subject, policy, self.instance, lease, prefetch=False, waiting=waited
        )
        self._flying[key] = ask
        self._waiting[key] = 1
        return ask

    def _admit_mixed(self, needs: Sequence[Need], now: datetime) -> Admit:
        """Every need is ready, some from the fallback window: take one from each."""
        states: list[RateState] = []
        fallback: list[str] = []
        for need in needs:
            if self._fallbacks.active(need.key, now):
                states.append(self._fallbacks.take(need.key, need.policy.lease, now))
                fallback.append(need.policy.lease.name)
            else:
                states.append(take(self._leases[need.key], now))
        return Admit(tuple(states), tuple(fallback))

    # --- what the owner says -------------------------------------------------------------

    def granted(self, ask: AcquireLease, reply: LeaseGranted, now: datetime) -> Outcome:
        """The owner answered a blocking ask; what it means for the requests waiting on it."""
        self._flying.pop(ask.key, None)
        if self._voided(ask, reply, now):
            return "wait"  # its units went back to a recall before it came: ask again
        lease = self._apply(ask, reply, now)
        if lease is None:
            return "unusable"
        if reply.granted > 0:
            return "units" if now < lease.usable_until else "unusable"
        if reply.blocked_until is not None:
            return "none"  # locked: deciding again refuses until the lock's end
        if reply.retry_after_ms:
            # Units are out unspent at other instances and the owner recalled them.
            lease.retry_at = now + timedelta(milliseconds=reply.retry_after_ms)
            lease.recalling_since = lease.recalling_since or now
            return "wait"
        # Nothing allocated, nothing out: every unit of the window was admitted.
        lease.refused_until = lease.window_end
        return "none"

    def ask_failed(self, key: str, now: datetime) -> None:
        """No reply in time: the key goes to fallback until `now + fallback_for` (R8)."""
        self.abandon(key)
        self._fallbacks.failed(key, now)

    def abandon(self, key: str) -> None:
        """An ask that neither got a reply nor timed out (an error, a cancellation): it is no
        longer in flight, and the next decision asks again."""
        self._flying.pop(key, None)
        self._void.pop(key, None)

    def locked(self, event: SubjectLocked) -> None:
        """The broadcast lock (R3): refuse the subject on every policy until `event.until`."""
        self._lock(event.subject, event.until)

    def unlocked(self, subject: str) -> None:
        """An operator reset the subject (`SubjectUnlocked`): its lockout is lifted here, and
        its slices are dropped (the owner forgot their windows), so its next request asks."""
        self._locks.pop(subject, None)
        for key in [k for k, lease in self._leases.items() if lease.subject == subject]:
            del self._leases[key]

    def recalled(self, recall: RecallLease, now: datetime) -> bool:
        """The owner recalls this instance's unspent units of a window (the decisions
        broadcast): the answer goes to `answers()` at once (and `on_answer` is called), and the
        slice spends nothing more. Returns whether there was an answer to give."""
        if self.instance not in recall.holders:
            return False
        lease = self._leases.get(recall.key)
        answer = recall_answer(recall, lease, self.instance, now)
        if answer is None:
            return False
        flying = self._flying.get(recall.key)
        if flying is not None:  # its reply may bring units of that window: they went back too
            self._void[recall.key] = (flying, recall.window_start)
        self._answers.append(answer)
        if self.on_answer is not None:
            self.on_answer()
        return True

    def answers(self) -> list[ReleaseLease]:
        """Recall answers to send (each once)."""
        out, self._answers = self._answers, []
        return out

    def _voided(self, ask: AcquireLease, reply: LeaseGranted, now: datetime) -> bool:
        """Whether this reply came after this instance answered a recall of its window (then
        the owner took back whatever it brings): only its lock counts."""
        void = self._void.pop(ask.key, None)
        if void is None or void[0] is not ask or reply.window_start != void[1]:
            return False
        if reply.blocked_until is not None and reply.blocked_until > now:
            self._lock(ask.subject, reply.blocked_until)
        return True

    def _lock(self, subject: str, until: datetime) -> None:
        current = self._locks.get(subject)
        if current is None or until > current:
            self._locks[subject] = until

    def _apply(self, ask: AcquireLease, reply: LeaseGranted, now: datetime) -> Slice | None:
        """Take in a reply: its lock, and its grant into the key's slice (None: a reply about
        a window older than the slice's)."""
        if reply.blocked_until is not None and reply.blocked_until > now:
            self._lock(ask.subject, reply.blocked_until)
        lease = apply_reply(self._leases.get(ask.key), ask, reply, now, self.margin)
        if lease is not None:
            self._leases[ask.key] = lease
        return lease

    # --- background work -----------------------------------------------------------------

    def prefetches(self, now: datetime) -> list[AcquireLease]:
        """Top-ups due: slices in use, down to a quarter of their last grant, whose owner has
        more. They are in flight from now on (`prefetch_done` ends that)."""
        due: list[AcquireLease] = []
        for key, lease in self._leases.items():
            if (
                key in self._flying
                or self._fallbacks.active(key, now)
                or self._locks.get(lease.subject, now) > now
            ):
                continue
            ask = top_up(key, lease, self.instance, now, self.release_idle)
            if ask is not None:
                self._flying[key] = ask
                due.append(ask)
        return due

    def prefetch_done(self, ask: AcquireLease, reply: LeaseGranted | None, now: datetime) -> None:
        """A top-up's answer; None: it failed (the key is not put in fallback: nobody waited)."""
        self._flying.pop(ask.key, None)
        if reply is None:
            self._void.pop(ask.key, None)
        elif not self._voided(ask, reply, now):
            self._apply(ask, reply, now)

    def releases(self, now: datetime) -> list[ReleaseLease]:
        """Idle slices to give back; their units are dropped here and counted as the owner's."""
        out: list[ReleaseLease] = []
        for key, lease in self._leases.items():
            release = idle_release(key, lease, self.instance, now, self.release_idle)
            if release is not None:
                out.append(release)
        return out

    def sweep(self, now: datetime) -> int:
        """Forget ended windows, expired locks and fallbacks whose local window ended; returns
        how many entries were dropped."""
        leases = [k for k, lease in self._leases.items() if now >= lease.window_end]
        locks = [s for s, until in self._locks.items() if now >= until]
        for key in leases:
            del self._leases[key]
            self._waiting.pop(key, None)
        for subject in locks:
            del self._locks[subject]
        return len(leases) + len(locks) + self._fallbacks.sweep(now)
