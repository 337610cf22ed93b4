"""The local fallback of keys whose owner does not answer (SPEC R8, ADR 0010 "Fail-over").

An ask unanswered in time puts its key in fallback for `fallback_for`: the owner is not asked
again before that. Meanwhile a policy with `fail_mode` "closed" answers 503 (`Quota` checks
it), one with "open" admits from a local fixed window of the policy's limit on this instance
alone, which opens at first use and outlives the fallback period (a key that fails again keeps
counting in it); it is swept once ended.

Consistency: in fallback the limit holds per instance only (up to N x the limit over N
instances), and what was admitted is not counted against the owner's window afterwards.
Errors: none; values only, `now` is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from authbus_api.core.rates import Need, RateState
from authbus_shared.contracts.ratelimit import LeasePolicy


@dataclass(slots=True)
class LocalWindow:
    until: datetime  # the owner is not asked before this
    window_end: datetime | None = None  # the local window; None: not opened
    count: int = 0


class Fallbacks:
    """The keys in fallback on this instance, and their local windows."""

    def __init__(self, fallback_for: timedelta) -> None:
        self.fallback_for = fallback_for
        self._keys: dict[str, LocalWindow] = {}

    def __bool__(self) -> bool:
        return bool(self._keys)

    def active(self, key: str, now: datetime) -> bool:
        """Whether the key is in fallback now (its owner is not to be asked)."""
        local = self._keys.get(key)
        return local is not None and now < local.until

    def failed(self, key: str, now: datetime) -> None:
        """No reply in time: the key goes to fallback until `now + fallback_for`."""
        until = now + self.fallback_for
        local = self._keys.get(key)
        if local is None:
            self._keys[key] = LocalWindow(until)
        else:
            local.until = until

    def refused_until(self, need: Need, now: datetime) -> datetime | None:
        """For a fail-open key in fallback whose local window is full: that window's end."""
        local = self._keys.get(need.key)
        if local is None or now >= local.until or need.policy.fail_mode == "closed":
            return None
        end = local.window_end
        if end is not None and now < end and local.count >= need.policy.lease.limit:
            return end
        return None

    def take(self, key: str, policy: LeasePolicy, now: datetime) -> RateState:
        """Admit one request of a fail-open key in fallback from its local window."""
        local = self._keys[key]
        if local.window_end is None or now >= local.window_end:
            local.window_end = now + timedelta(seconds=policy.window_s)
            local.count = 0
        local.count += 1
        return RateState(
            policy.name, policy.limit, policy.window_s, policy.limit - local.count, local.window_end
        )

    def sweep(self, now: datetime) -> int:
        """Forget keys whose fallback is over and whose local window ended."""
        over = [
            k
            for k, f in self._keys.items()
            if now >= f.until and (f.window_end is None or now >= f.window_end)
        ]
        for key in over:
            del self._keys[key]
        return len(over)
