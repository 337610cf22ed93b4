"""What one api instance holds of a limit key's window, and what it gives back (ADR 0010).

A `Slice` is the instance's lease of a key's current window: the units left to spend, what it
received and admitted in the window (told to the owner in every ask and release), and what the
owner said last. The functions here are the rules about one slice: spending (`take`), taking a
reply in (`apply_reply`), when to ask again (`next_try`, `recall_overdue`), what to ask for
(`want`, `ask_for`), and what no request waits on: the top-up (`top_up`), the idle release
(`idle_release`) and the answer to an owner's recall (`recall_answer`). `Quota` (core/quota.py)
keeps the slices and calls these.

Invariant: `received == taken + units` for a slice (a release takes its units out of both), so
a recall answer that says `received` and gives back `units` leaves the owner holding exactly
what the instance admitted.

Errors: none; plain values, no clock of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from authbus_api.core.rates import Need, RateState, Refuse, refused_state
from authbus_shared.contracts.ratelimit import (
    MAX_WANT,
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    RecallLease,
    ReleaseLease,
)

FIRST_WANT = 4  # a key's first ask in a window; then twice the last grant (slow start)
STRANDED_RETRY = timedelta(seconds=1)  # Retry-After of a refusal while units stay stranded


@dataclass(slots=True)
class Slice:
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
    received: int = 0  # units received for this window, less those given back
    refused_until: datetime | None = None  # the owner said the window is spent
    retry_at: datetime | None = None  # the owner is recalling units: ask again then
    recalling_since: datetime | None = None  # the first recalling reply of this stretch


def take(lease: Slice, now: datetime) -> RateState:
    """One request admitted from the slice (the hot path): one unit less, one more taken."""
    lease.units -= 1
    lease.taken += 1
    lease.active_at = now
    policy = lease.policy
    remaining = lease.owner_remaining + lease.units
    return RateState(policy.name, policy.limit, policy.window_s, remaining, lease.window_end)


def apply_reply(
    lease: Slice | None, ask: AcquireLease, reply: LeaseGranted, now: datetime, margin: timedelta
) -> Slice | None:
    """A grant added to the slice of its window, or the slice of a new window; None for a
    reply about a window older than the slice's."""
    if lease is not None and reply.window_start < lease.window_start:
        return None
    if lease is not None and reply.window_start == lease.window_start:
        lease.units += reply.granted
        lease.received += reply.granted
        lease.owner_remaining = reply.remaining
        lease.last_grant = reply.granted
        lease.retry_at = None
        if reply.granted or not reply.retry_after_ms:  # the recall, if any, is over
            lease.recalling_since = None
        if reply.granted > 0:
            lease.active_at = now
        return lease
    return Slice(
        subject=ask.subject,
        policy=ask.policy,
        window_start=reply.window_start,
        window_end=reply.window_end,
        usable_until=reply.window_end - margin,
        units=reply.granted,
        owner_remaining=reply.remaining,
        last_grant=reply.granted,
        active_at=now,
        received=reply.granted,
    )


def next_try(lease: Slice | None, now: datetime) -> datetime | None:
    """When an ask for the slice's key may go: after the owner's recall delay, or at the
    window's end for a slice in its end margin (the owner's window is still open); None: now."""
    if lease is None:
        return None
    if lease.retry_at is not None and lease.retry_at > now:
        return lease.retry_at
    if lease.usable_until <= now < lease.window_end:
        return lease.window_end
    return None


def recall_overdue(
    lease: Slice | None, since: datetime, wait: datetime | None, budget: timedelta
) -> bool:
    """Whether the owner's next try would come later than `budget` after the request began
    waiting or the recall began, whichever is later (a request queued behind others has not
    waited on the recall all that time)."""
    if lease is None or lease.recalling_since is None or wait is None:
        return False
    return wait > max(since, lease.recalling_since) + budget


def stranded_refusal(needs: Sequence[Need], leases: Mapping[str, Slice], now: datetime) -> Refuse:
    """Refused while units of the window are still out at an instance that did not give them
    back in time: ask again soon (`retry_at`); the states say when the windows end."""
    states = []
    retry_at = now + STRANDED_RETRY
    for need in needs:
        lease = leases.get(need.key)
        end = now + STRANDED_RETRY if lease is None else lease.window_end
        states.append(refused_state(need.policy.lease, end))
        retry_at = min(retry_at, end)
    return Refuse(retry_at, tuple(states), locked=False)


def want(policy: LeasePolicy, lease: Slice | None, waiting: int = 0) -> int:
    """How much to ask for: a little at first, then twice the last grant as the slices get
    used, and at least as many as there were requests waiting on the last ask, up to the
    limit. An instance asks in proportion to its own demand, so the first to ask does not walk
    off with half the window while the others' clients wait (the owner's rule caps every grant
    at its share of what is left as well)."""
    base = FIRST_WANT if lease is None or lease.last_grant == 0 else 2 * lease.last_grant
    return max(1, min(policy.limit, MAX_WANT, max(FIRST_WANT, base, waiting)))


def ask_for(
    key: str,
    subject: str,
    policy: LeasePolicy,
    instance: str,
    lease: Slice | None,
    *,
    prefetch: bool,
    waiting: int = 0,
) -> AcquireLease:
    """An ask that tells the owner what this instance holds of the key's window."""
    return AcquireLease(
        key=key,
        subject=subject,
        policy=policy,
        instance=instance,
        want=want(policy, lease, waiting),
        prefetch=prefetch,
        window_start=None if lease is None else lease.window_start,
        received=0 if lease is None else lease.received,
        spent=0 if lease is None else lease.taken,
    )


def top_up(
    key: str, lease: Slice, instance: str, now: datetime, idle: timedelta
) -> AcquireLease | None:
    """A background ask for a slice in use, down to a quarter of its last grant, whose owner
    has more; None when none is due (the caller checks flights, fallbacks and locks)."""
    if (
        now >= lease.usable_until
        or lease.owner_remaining <= 0
        or lease.units > lease.last_grant // 4
        or now - lease.active_at >= idle
    ):
        return None
    return ask_for(key, lease.subject, lease.policy, instance, lease, prefetch=True)


def idle_release(
    key: str, lease: Slice, instance: str, now: datetime, idle: timedelta
) -> ReleaseLease | None:
    """Give back a slice idle for `idle` (a client that moved on strands nothing); its units
    are dropped here and counted as the owner's. It does not say `received`: a top-up may be
    in flight, and its units must not be taken back."""
    if lease.units <= 0 or now >= lease.usable_until or now - lease.active_at < idle:
        return None
    release = ReleaseLease(
        key=key,
        instance=instance,
        window_start=lease.window_start,
        unused=lease.units,
        spent=lease.taken,
    )
    lease.owner_remaining += lease.units
    lease.received -= lease.units  # what it holds of the window, as the owner sees
    lease.units = 0
    return release


def recall_answer(
    recall: RecallLease, lease: Slice | None, instance: str, now: datetime
) -> ReleaseLease | None:
    """The answer to the owner's recall of this instance's units of a window: everything
    unspent goes back and nothing more of the slice is spent. None: nothing to say (the recall
    is about a window older than the slice, or one already over here). An instance without a
    slice of that window never received any of it: it says so, and what the owner allocated to
    it goes back. The caller voids the reply of an ask in flight for the window."""
    if lease is not None and lease.window_start > recall.window_start:
        return None
    if lease is None or lease.window_start < recall.window_start:
        if now >= recall.window_end:
            return None
        return ReleaseLease(
            key=recall.key,
            instance=instance,
            window_start=recall.window_start,
            unused=0,
            spent=0,
            received=0,
            recalled=True,
        )
    answer = ReleaseLease(
        key=recall.key,
        instance=instance,
        window_start=lease.window_start,
        unused=lease.units,
        spent=lease.taken,
        received=lease.received,
        recalled=True,
    )
    lease.received -= lease.units
    lease.units = 0
    lease.owner_remaining = 0  # the owner had nothing left: no top-up in this window
    return answer
