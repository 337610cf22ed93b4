"""Contracts between the api instances and ratelimit (internal): quota leases (ADR 0010).

An api instance asks the owner of a limit key for a slice of what is left in the key's window
(`AcquireLease`, on `ratelimit.leases.v1`, keyed by the limit key so one owner sees all of a
key's asks in order) and spends it locally; the owner answers `LeaseGranted` on the asker's
reply partition. Unused slices go back with `ReleaseLease`. When a waiting ask finds the window
allocated but units unspent at other instances, the owner broadcasts `RecallLease` on
`ratelimit.decisions.v1`: the instances it names give their unspent units back at once
(`ReleaseLease` with `recalled`), and the asker asks again (R9). When a key is exceeded and its
policy has a lockout, the owner broadcasts `SubjectLocked` on `ratelimit.decisions.v1`: every
api instance then refuses the subject (an account or a client address) on every route (R3),
and appends `StrikeRecorded` to the key's own partition of the leases topic, so a new owner
that replays only the last stretch still knows how many lockouts came in a row (R7).

Operators (`authbus-admin limits`, SPEC G4) ask every partition's owner what it holds of one
subject (`InspectSubject`, answered with `SubjectLimits`), or append `ResetSubject` to every
partition: the owner forgets the subject's windows, locks and strikes (a replay applies it
again) and broadcasts `SubjectUnlocked`.

The owner's clock is the broker's: the leases topic stamps each record with its append time,
so replaying the partition rebuilds exactly the state the previous owner had (recovery).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from authbus_shared.contracts.envelope import Contract, Frozen, register

MAX_WANT = 1_000_000


class LeasePolicy(Frozen):
    """One policy's counting parameters, carried in every ask: ratelimit needs no copy of the
    configuration, and the window opened by a key's first ask keeps that ask's parameters."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    limit: int = Field(ge=1, le=100_000_000)
    window_s: int = Field(ge=1, le=86_400)
    lockout_s: int = Field(default=0, ge=0, le=86_400, description="0: no lockout")
    # Fair use (R7): each lockout within `strike_memory_s` of the previous one doubles the
    # next, up to `lockout_cap_s` (0: the lockout never grows).
    lockout_cap_s: int = Field(default=0, ge=0, le=86_400)
    strike_memory_s: int = Field(default=0, ge=0, le=86_400)


@register
class AcquireLease(Contract):
    """Ask for up to `want` requests of `key`'s current window. `prefetch`: nobody is waiting
    (the instance tops up ahead of need), so an empty window is not a breach. `window_start`,
    `received` and `spent`: the window of the slice the instance holds for the key (None:
    none), how many units it received for it and how many requests it admitted from it, so
    the owner knows what is really out (a grant whose reply never arrived, units spent;
    ADR 0010)."""

    TYPE = "ratelimit.AcquireLease"

    key: str = Field(min_length=1, max_length=300)
    subject: str = Field(min_length=1, max_length=200)
    policy: LeasePolicy
    instance: str = Field(min_length=1, max_length=200)
    want: int = Field(ge=1, le=MAX_WANT)
    prefetch: bool = False
    window_start: datetime | None = None
    received: int | None = Field(default=None, ge=0, le=100_000_000)  # None: not told
    spent: int = Field(default=0, ge=0, le=100_000_000)


@register
class ReleaseLease(Contract):
    """Give back `unused` requests of a slice of the window that started at `window_start`
    (ignored once that window is over); `spent`: what the instance admitted in it. An answer to
    a `RecallLease` (`recalled`) gives back everything unspent (`unused` may be 0) and says what
    the instance `received` of the window, so a grant whose reply it never used goes back too;
    the instance spends nothing more of what it held before it sent this."""

    TYPE = "ratelimit.ReleaseLease"

    key: str = Field(min_length=1, max_length=300)
    instance: str = Field(min_length=1, max_length=200)
    window_start: datetime
    unused: int = Field(ge=0, le=100_000_000)
    spent: int = Field(default=0, ge=0, le=100_000_000)
    received: int | None = Field(default=None, ge=0, le=100_000_000)  # None: not told
    recalled: bool = False


@register
class LeaseGranted(Contract):
    """The owner's answer: `granted` requests to spend until `window_end`, and what is left
    unallocated. `granted=0` to a waiting ask says why: `blocked_until` (the subject is locked
    out), `retry_after_ms` > 0 (units are out unspent at other instances, `outstanding` of
    them, and the owner recalled them: ask again after that many ms), or neither (the window is
    spent: every unit of it was admitted)."""

    TYPE = "ratelimit.LeaseGranted"

    key: str
    granted: int = Field(ge=0)
    window_start: datetime
    window_end: datetime
    remaining: int = Field(ge=0)
    blocked_until: datetime | None = None
    outstanding: int = Field(default=0, ge=0)
    retry_after_ms: int = Field(default=0, ge=0)


@register
class RecallLease(Contract):
    """Broadcast by a key's owner when a waiting ask finds nothing left to allocate while the
    named `holders` (api instance ids) hold units of the window that started at `window_start`
    that they have not reported spent: each of them answers at once with a `ReleaseLease`
    (`recalled`, everything unspent) and spends no more of that slice. Others ignore it."""

    TYPE = "ratelimit.RecallLease"

    key: str
    subject: str
    window_start: datetime
    window_end: datetime
    holders: tuple[str, ...] = Field(min_length=1)
    at: datetime


@register
class SubjectLocked(Contract):
    """A subject passed a policy with a lockout: refuse all its requests until `until` (R3).
    `strikes` counts lockouts in a row within the policy's memory (R7: the lockout grows)."""

    TYPE = "ratelimit.SubjectLocked"

    subject: str
    key: str
    policy: str
    until: datetime
    strikes: int = Field(ge=1)
    at: datetime


@register
class StrikeRecorded(Contract):
    """A checkpoint the owner appends to the key's own partition of `ratelimit.leases.v1` when
    it locks a key: the lockout in a row (`strikes`), when it struck, until when it holds and
    how long the strike is remembered. A new owner replaying only the last stretch of the
    partition takes the chain from it (R7); applying it twice changes nothing."""

    TYPE = "ratelimit.StrikeRecorded"

    key: str
    subject: str
    policy: str
    strikes: int = Field(ge=1)
    at: datetime
    until: datetime
    strike_memory_s: int = Field(default=0, ge=0, le=86_400)


class KeyState(Frozen):
    """What an owner holds of one limit key: the current (or last) window, what it allocated
    to the api instances and what they reported spent, and any lockout."""

    key: str
    policy: str
    limit: int = Field(ge=1)
    window_s: int = Field(ge=1)
    window_start: datetime
    window_end: datetime
    allocated: int = Field(ge=0)
    spent: int = Field(ge=0)
    blocked_until: datetime | None = None
    strikes: int = Field(default=0, ge=0)


@register
class InspectSubject(Contract):
    """An operator's question to the owner of one partition of `ratelimit.leases.v1` (sent to
    each partition): the keys of `subject` it holds. Changes nothing."""

    TYPE = "ratelimit.InspectSubject"

    subject: str = Field(min_length=1, max_length=200)


@register
class ResetSubject(Contract):
    """Appended by an operator to each partition of `ratelimit.leases.v1`: the owner forgets
    `subject`'s windows, lockouts and strikes there (a new window opens at its next request),
    and broadcasts `SubjectUnlocked`. Units the api instances held unspent of a forgotten
    window may still be spent until that window's end."""

    TYPE = "ratelimit.ResetSubject"

    subject: str = Field(min_length=1, max_length=200)


@register
class SubjectLimits(Contract):
    """An owner's answer to `InspectSubject` (the keys as they are) or to `ResetSubject` (the
    keys it forgot, as they were)."""

    TYPE = "ratelimit.SubjectLimits"

    partition: int = Field(ge=0)
    keys: tuple[KeyState, ...] = ()


@register
class SubjectUnlocked(Contract):
    """Broadcast on `ratelimit.decisions.v1` by an owner that forgot keys of `subject` in a
    reset: lift the subject's lockout and drop its slices (its next request asks)."""

    TYPE = "ratelimit.SubjectUnlocked"

    subject: str
    at: datetime
