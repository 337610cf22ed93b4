"""How far back a new owner of a leases partition must replay (SPEC R4, R7; ADR 0010, 0014).

A ratelimit instance given a partition rebuilds its lease books by replaying the asks appended
since `now - horizon` (Kafka is the log). What it must rebuild at `now`, per key of a policy
with window `w`, longest lockout `L = max(lockout_cap_s, lockout_s)` and strike memory `m`:
- the open window: its asks came within the last `w`;
- a lock still in force: its breach came within the last `L`, at the end of a window (`w`
  before it), and the strike count of that breach comes from the checkpoint of the strike
  before it (`StrikeRecorded`, appended to the same partition at most `m` before the breach);
- a strike still remembered (a next breach within `m` escalates): it came within the last `m`,
  with its window and the checkpoint before it behind it.
So `horizon(policies) = max over policies of w + max(L, m) + m`, plus `MARGIN_S` (a checkpoint
is appended a moment after its breach; host and broker clocks differ a little). It is the
issue's rule `w + L + m` whenever `L >= m` (the built-in policies: 60 + 960 + 600 = 1,620 s,
1,680 s with the margin); a policy that remembers strikes longer than its cap needs `m` twice.
A policy without lockout needs `w` only. A replay older than the horizon is harmless (the
books are a pure function of the log); a shorter one forgets locks and escalation.

Both services check it at start: ratelimit refuses a `REPLAY_HORIZON_S` shorter than its
policies need (read from the same policies file as the api's, or the built-in ones), the api
refuses one shorter than its own policies need (operators keep the two settings equal).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError

from authbus_shared.contracts.ratelimit import LeasePolicy
from authbus_shared.settings import ConfigError

MARGIN_S = 60
# The built-in policies (the seeds' promise; the api's `policies.BUILT_IN`): 60 requests per
# 60 s per account and per client address, a 60 s lockout that doubles within 10 minutes of
# the last, up to 16 minutes.
SEED_POLICIES: tuple[LeasePolicy, ...] = tuple(
    LeasePolicy(
        name=name, limit=60, window_s=60, lockout_s=60, lockout_cap_s=960, strike_memory_s=600
    )
    for name in ("global", "anonymous")
)
_LEASE_FIELDS = frozenset(LeasePolicy.model_fields)


def needed_s(policy: LeasePolicy) -> int:
    """The replay one policy needs, in seconds, without the margin (see the module)."""
    if policy.lockout_s == 0:
        return policy.window_s
    longest_lock = max(policy.lockout_cap_s, policy.lockout_s)
    memory = policy.strike_memory_s
    return policy.window_s + max(longest_lock, memory) + memory


def horizon_s(policies: Iterable[LeasePolicy]) -> int:
    """The replay horizon `policies` need, in seconds, margin included."""
    return max((needed_s(p) for p in policies), default=0) + MARGIN_S


def policies_from_file(path: Path | None) -> tuple[LeasePolicy, ...]:
    """The counting parameters of the `[[policy]]` tables of an api policies file (the fields
    other than `LeasePolicy`'s are the api's business and ignored); None: `SEED_POLICIES`."""
    if path is None:
        return SEED_POLICIES
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8")).get("policy", [])
        if not isinstance(tables, list) or not tables:
            raise ValueError("no [[policy]] table")
        return tuple(
            LeasePolicy.model_validate({k: v for k, v in t.items() if k in _LEASE_FIELDS})
            for t in tables
        )
    except (OSError, tomllib.TOMLDecodeError, ValidationError, ValueError, AttributeError) as exc:
        raise ConfigError(f"rate policies file {path}: {exc}") from exc


def checked_horizon(
    configured_s: int | None, policies: Iterable[LeasePolicy], *, variable: str
) -> timedelta:
    """The horizon to use: `configured_s`, or what `policies` need when it is None. A
    configured one shorter than the need refuses the start, naming `variable`."""
    need = horizon_s(policies)
    if configured_s is None:
        return timedelta(seconds=need)
    if configured_s < need:
        raise ConfigError(
            f"invalid configuration:\n  {variable}: {configured_s} s is shorter than the "
            f"{need} s the rate policies need (longest window + lockout cap + strike memory, "
            f"+ {MARGIN_S} s); raise it or leave it unset"
        )
    return timedelta(seconds=configured_s)
