"""Which partition a hedged request goes to: one whose owner answered lately (SPEC O4).

A request topic's partitions are shared out among the members of a consumer group (authz's
instances). When a member dies, its partitions stay assigned to it until the group notices
(the session timeout, several seconds): requests sent there get no answer in the meantime,
while other members answer theirs. A hedged request is sent to its usual partition first and,
with no answer after a short delay, again to another partition, chosen here.

Each reply names the instance that sent it, so the health learns which instance owns which
partition. A partition that leaves a copy unanswered makes its owner **suspect** until that
owner answers again; the next copy goes to an untried partition, in this order of preference:
1. one whose owner is known and not suspect, the most recently answered first;
2. one whose owner is unknown, as far as possible from those tried (assignors give a member
   neighbouring partitions: range does, and round-robin over several topics may);
3. any untried one (every known owner is suspect).
Picking merely the partition that answered last would send the copy to the dead member's
other partitions, which answered until a moment ago.

State: per partition, its last known owner and when it last answered; per owner, when it last
answered and when it last failed to (monotonic seconds). Pure: times are arguments.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field


@dataclass
class PartitionHealth:
    partitions: int
    remember_s: float = 60.0
    _owner: dict[int, str] = field(default_factory=dict)
    _answered: dict[int, float] = field(default_factory=dict)
    _owner_answered: dict[str, float] = field(default_factory=dict)
    _owner_failed: dict[str, float] = field(default_factory=dict)

    def home(self, key: bytes) -> int:
        """The partition a key goes to first (stable per key)."""
        return zlib.crc32(key) % self.partitions

    def answered(self, partition: int, now: float, by: str | None = None) -> None:
        """A reply from `partition`, sent by instance `by` (None: unknown)."""
        self._answered[partition] = now
        if by is not None:
            self._owner[partition] = by
            self._owner_answered[by] = now

    def failed(self, partition: int, now: float) -> None:
        """A copy sent to `partition` went unanswered: its owner is suspect."""
        owner = self._owner.get(partition)
        if owner is not None:
            self._owner_failed[owner] = now

    def pick(self, tried: set[int], now: float) -> int:
        """Where to send the next copy (see the module docstring)."""
        untried = [p for p in range(self.partitions) if p not in tried]
        if not untried:
            return (max(tried) + 1) % self.partitions if tried else 0
        trusted = [(self._answered[p], p) for p in untried if self._trusted(p, now)]
        if trusted:
            return max(trusted)[1]
        unknown = [p for p in untried if p not in self._owner] or untried
        return max(unknown, key=lambda p: (self._distance(p, tried), -p))

    def _trusted(self, partition: int, now: float) -> bool:
        owner = self._owner.get(partition)
        if owner is None or now - self._answered.get(partition, -1e18) > self.remember_s:
            return False
        return self._owner_failed.get(owner, -1e18) < self._owner_answered.get(owner, -1e18)

    def _distance(self, partition: int, tried: set[int]) -> int:
        """How far `partition` is from the nearest tried one, around the ring."""
        if not tried:
            return self.partitions
        return min(min(abs(partition - t), self.partitions - abs(partition - t)) for t in tried)
