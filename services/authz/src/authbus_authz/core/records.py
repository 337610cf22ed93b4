"""authz's cache of the records a verification reads (token, API key, account; ADR 0019).

A cold verification used to read MongoDB twice (token and account, or key then account); on
this kind of machine each read costs a driver thread hop and a server round trip. Most
verifications are of credentials verified before (each api instance asks once per credential
per cache lifetime), so authz keeps the records it read, and answers from them while its view
of the changes feed is fresh.

Invalidation: everything that can turn a valid credential invalid is an event on
`auth.changes.v1` (`TokenRevoked`, `KeyRevoked`, `AccountChanged`), which authz reads like
the api does; the event drops the record. Expiry needs nothing: the verifier compares the
record's `expires_at` with its clock on every check.

Consistency, the same argument as the api's (`authbus_api.core.freshness`, ADR 0016): every
authz instance writes a heartbeat stamped `h` to each partition of the feed every 500 ms, and
a change is acknowledged only once its events are in the log. Once this instance has read, on
every partition, a heartbeat stamped `h` or later, it has read every change acknowledged
before `h - skew`. A cached record is used only while that is at most `bound` (1 s) old;
otherwise the store is read (and what it returns cached again). So a revocation acknowledged
at `t` is never answered "valid" from this cache for a check after `t + bound`, and the api's
bound (`t + 2 s + skew`, SPEC A12) holds unchanged when it re-verifies through authz.
- The race: a read under way when an invalidation arrives could put back what the event just
  dropped. Every invalidation bumps `generation`; a read records the generation it started
  under, and `put` refuses its record if any invalidation came meanwhile.
- `checked_at`: a verdict from cached records carries the time the oldest of them was read
  (stamped before the read), never the time of the answer, so the api's `VerdictCache` still
  sees it as read before any account change that came after.
- An event lost in spite of all this is covered by `ttl` (30 s): no record lives longer.

Memory: at most `max_entries` records (oldest inserted first out); 0 turns the cache off.
Pure: clocks are arguments; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from authbus_authz.core.ports import Account, ApiKeyRecord, TokenRecord

Kind = Literal["token", "key", "account"]
Record = TokenRecord | ApiKeyRecord | Account


@dataclass(frozen=True, slots=True)
class Cached:
    """A record and the time its read began: what it is known to be true as of."""

    record: Record
    read_at: datetime
    expires: datetime


@dataclass
class RecordCache:
    partitions: int
    max_entries: int = 100_000
    ttl: timedelta = timedelta(seconds=30)
    bound: timedelta = timedelta(seconds=1)
    skew: timedelta = timedelta(milliseconds=250)
    generation: int = 0
    _heard: dict[int, datetime] = field(default_factory=dict)
    _entries: dict[tuple[Kind, str], Cached] = field(default_factory=dict)
    _key_digests: dict[str, str] = field(default_factory=dict)  # key id -> digest

    # the feed ---------------------------------------------------------------------------
    def heard(self, partition: int, at: datetime) -> None:
        """A heartbeat stamped `at` was read on `partition`."""
        seen = self._heard.get(partition)
        if seen is None or at > seen:
            self._heard[partition] = at

    def fresh_as_of(self) -> datetime | None:
        """Every change acknowledged before this has been read (None: not on every partition
        yet)."""
        if self.partitions <= 0 or len(self._heard) < self.partitions:
            return None
        return min(self._heard.values()) - self.skew

    def usable(self, now: datetime) -> bool:
        as_of = self.fresh_as_of()
        return self.max_entries > 0 and as_of is not None and now - as_of <= self.bound

    def token_revoked(self, token_id: str) -> None:
        self._invalidate("token", token_id)

    def key_revoked(self, key_id: str) -> None:
        digest = self._key_digests.pop(key_id, None)
        self.generation += 1
        if digest is not None:
            self._entries.pop(("key", digest), None)

    def account_changed(self, account_id: str) -> None:
        self._invalidate("account", account_id)

    def _invalidate(self, kind: Kind, rid: str) -> None:
        self.generation += 1
        self._entries.pop((kind, rid), None)

    # the records ------------------------------------------------------------------------
    def get(self, kind: Kind, rid: str, now: datetime) -> Cached | None:
        """The record cached under (`kind`, `rid`), if the feed is fresh and it has not
        lived its `ttl`."""
        entry = self._entries.get((kind, rid))
        if entry is None or not self.usable(now):
            return None
        if entry.expires <= now:
            self._drop(kind, rid)
            return None
        return entry

    def put(self, kind: Kind, rid: str, record: Record, read_at: datetime, generation: int) -> None:
        """Keep `record`, read from the store from `read_at` under `generation`, unless an
        invalidation came meanwhile."""
        if self.max_entries <= 0 or generation != self.generation:
            return
        self._drop(kind, rid)
        self._entries[(kind, rid)] = Cached(record, read_at, read_at + self.ttl)
        if isinstance(record, ApiKeyRecord):
            self._key_digests[record.id] = record.digest
        while len(self._entries) > self.max_entries:
            old_kind, old_id = next(iter(self._entries))
            self._drop(old_kind, old_id)

    def _drop(self, kind: Kind, rid: str) -> None:
        entry = self._entries.pop((kind, rid), None)
        if entry is not None and isinstance(entry.record, ApiKeyRecord):
            self._key_digests.pop(entry.record.id, None)

    def __len__(self) -> int:
        return len(self._entries)
