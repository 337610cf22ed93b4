"""Which partition a hedged request goes to: one whose consumer answered lately (SPEC O4).

A request topic's partitions are shared out among the members of a consumer group (authz's
instances). When a member dies, its partitions stay assigned to it until the group notices
(the session timeout, several seconds): requests sent there get no answer in the meantime,
while other members answer theirs. A hedged request is sent to its usual partition first and,
with no answer after a short delay, again to another partition, chosen here: the one that
answered most recently (so, very likely, owned by a live member), else the next one in turn.

State: per partition, when it last answered and when it last failed to (monotonic seconds).
Pure: times are arguments.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field


@dataclass
class PartitionHealth:
    partitions: int
    remember_s: float = 60.0
    _answered: dict[int, float] = field(default_factory=dict)
    _failed: dict[int, float] = field(default_factory=dict)

    def home(self, key: bytes) -> int:
        """The partition a key goes to first (stable per key)."""
        return zlib.crc32(key) % self.partitions

    def answered(self, partition: int, now: float) -> None:
        self._answered[partition] = now

    def failed(self, partition: int, now: float) -> None:
        self._failed[partition] = now

    def pick(self, tried: set[int], now: float) -> int:
        """Where to send the next copy: the partition not tried yet that answered last (and
        has not failed since), within `remember_s`; else the next untried one after the
        last tried."""
        live = [
            (at, p)
            for p, at in self._answered.items()
            if p not in tried and now - at <= self.remember_s and self._failed.get(p, -1.0) < at
        ]
        if live:
            return max(live)[1]
        start = max(tried) if tried else -1
        for step in range(1, self.partitions + 1):
            candidate = (start + step) % self.partitions
            if candidate not in tried:
                return candidate
        return (start + 1) % self.partitions  # every partition tried: go round again
