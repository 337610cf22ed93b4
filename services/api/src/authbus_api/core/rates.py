"""What a rate check is about and what it answers (SPEC R1-R8; ADR 0010): the configured
policies, the needs of one request, and the verdicts `Quota.decide` gives (`core/quota.py`).

Values only: a denial is a value (`Refuse`, `Unavailable`), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from authbus_shared.contracts.ratelimit import AcquireLease, LeasePolicy

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
    """429. `retry_at`: when asking again can help — the latest lock end (`locked`) or window
    end among the refusing needs, or soon for units stranded at an instance that did not give
    them back in time. `states` (remaining 0) say each refusing policy's reset time. Nothing was
    taken."""

    retry_at: datetime
    states: tuple[RateState, ...]
    locked: bool


@dataclass(frozen=True, slots=True)
class Ask:
    """Make these asks (or wait for the one already in flight for the key), then decide
    again. `not_before`: send them at that time, not earlier (a lease in its end margin waits
    for the owner's next window; an owner recalling units said when to ask again)."""

    asks: tuple[AcquireLease, ...]
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Unavailable:
    """503: the owner of a fail-closed policy's key is unreachable (R8)."""

    policy: str


Decision = Admit | Refuse | Ask | Unavailable

# What an owner's reply to a blocking ask did, for the orchestrator's rounds:
# units: spendable units came; wait: ask again (units are being recalled, or this reply's units
# were given back to a recall before it came); none: nothing to ask for (the window is spent or
# the subject locked: deciding again refuses); unusable: a window this host cannot spend in.
Outcome = Literal["units", "wait", "none", "unusable"]


def refused_state(policy: LeasePolicy, until: datetime) -> RateState:
    return RateState(policy.name, policy.limit, policy.window_s, 0, until)
