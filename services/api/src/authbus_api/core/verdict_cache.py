"""The api's cache of authz verdicts (SPEC S3, A7): the hot path answers from here.

Key: a keyed BLAKE2b digest of the credential (kind, email, secret) under a random key made at
start, so the cache never holds a credential nor a hash that could be attacked offline.

Algorithm: a bounded LRU; an entry lives `ttl` (valid verdicts, capped by the credential's own
`valid_until`) or `negative_ttl` (denials, so a flood of bad tokens does not reach authz).
Invalidation: authz broadcasts changes on `auth.changes.v1`. A revoked token or key drops the
entries of that credential; an account change (password changed, 2FA on, disabled) drops every
entry of the account. Both are remembered for `ttl`, for the race: a request asks authz, the
change event arrives, then the reply "valid" (read before the change) arrives.
- A revoked credential never becomes valid again, so `admit` turns a "valid" reply for a
  credential revoked in the last `ttl` into `revoked`: neither cached nor honoured.
- For an account change, `admit` compares the verdict's `checked_at` with the change's time
  (both authz clocks): a verdict read before the change is answered once (it was in flight
  with the change) but not cached; the next request asks authz again.
The TTL is the safety net if an event is missed, not the mechanism.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from authbus_shared.contracts.authz import (
    AuthMethod,
    CredentialVerified,
    Outcome,
    SealedCredential,
)


@dataclass(frozen=True, slots=True)
class Account:
    """An account as a verdict names it: `AccountView`'s fields in a slotted object (a
    pydantic model instance costs about 500 bytes more; issue #13)."""

    id: str
    email: str
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class CachedVerdict:
    """authz's `CredentialVerified` as the cache holds it: the same fields, slotted (about
    1,400 bytes less per cached credential than the pydantic model; `bench.cache_memory`)."""

    outcome: Outcome
    account: Account | None = None
    scopes: tuple[str, ...] = ()
    method: AuthMethod | None = None
    credential_id: str | None = None
    valid_until: datetime | None = None
    mfa: bool = False
    deprecated: bool = False
    retry_after_s: int | None = None
    checked_at: datetime | None = None

    @classmethod
    def of(cls, reply: CredentialVerified) -> CachedVerdict:
        account = reply.account
        return cls(
            reply.outcome,
            Account(account.id, account.email, account.locale) if account else None,
            reply.scopes,
            reply.method,
            reply.credential_id,
            reply.valid_until,
            reply.mfa,
            reply.deprecated,
            reply.retry_after_s,
            reply.checked_at,
        )


REVOKED = CachedVerdict(Outcome.REVOKED)
Digests = bytes | set[bytes]


class CredentialDigest:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def __call__(self, credential: SealedCredential) -> bytes:
        h = hashlib.blake2b(key=self._key, digest_size=20)
        for part in (credential.kind.value, (credential.email or "").lower(), credential.secret):
            h.update(part.encode())
            h.update(b"\0")
        return h.digest()


@dataclass(slots=True)
class _Entry:
    verdict: CachedVerdict
    expires: datetime


class VerdictCache:
    def __init__(self, *, max_entries: int, ttl: timedelta, negative_ttl: timedelta) -> None:
        self._max = max_entries
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        # credential id / account id -> its digests: one digest (the common case) is kept as
        # itself, more as a set (a set of one costs ~220 bytes per entry; issue #13)
        self._by_credential: dict[str, Digests] = {}
        self._by_account: dict[str, Digests] = {}
        self._revoked: dict[str, datetime] = {}  # credential id -> when the event arrived
        self._changed: dict[str, tuple[datetime, datetime]] = {}  # account -> (change at, seen)

    def get(self, digest: bytes, now: datetime) -> CachedVerdict | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.expires <= now:
            self._drop(digest)
            return None
        self._entries.move_to_end(digest)
        return entry.verdict

    def admit(
        self, digest: bytes, reply: CredentialVerified | CachedVerdict, now: datetime
    ) -> CachedVerdict:
        """Take a reply from authz; returns the verdict to act on (and caches it)."""
        verdict = reply if isinstance(reply, CachedVerdict) else CachedVerdict.of(reply)
        revoked_at = self._revoked.get(verdict.credential_id or "")
        if verdict.outcome is Outcome.VALID and revoked_at and revoked_at >= now - self._ttl:
            verdict = REVOKED
        if verdict.outcome is Outcome.VALID:
            expires = now + self._ttl
            if verdict.valid_until is not None:
                expires = min(expires, verdict.valid_until)
        else:
            expires = now + self._negative_ttl
        if expires > now and not self._stale(verdict):
            self._drop(digest)
            self._entries[digest] = _Entry(verdict, expires)
            if verdict.credential_id:
                _index(self._by_credential, verdict.credential_id, digest)
            if verdict.account:
                _index(self._by_account, verdict.account.id, digest)
            while len(self._entries) > self._max:
                self._drop(next(iter(self._entries)))
        return verdict

    def _stale(self, verdict: CachedVerdict) -> bool:
        """Read by authz before a change of its account that this instance has seen."""
        if verdict.account is None or verdict.account.id not in self._changed:
            return False
        changed_at, _ = self._changed[verdict.account.id]
        return verdict.checked_at is None or verdict.checked_at <= changed_at

    def revoke(self, credential_id: str, now: datetime) -> int:
        """A credential was revoked: forget its verdicts; returns how many were dropped."""
        self._revoked[credential_id] = now
        dropped = self._drop_all(_digests(self._by_credential.get(credential_id)))
        self._forget(now)
        return dropped

    def account_changed(self, account_id: str, changed_at: datetime, now: datetime) -> int:
        """An account changed (at `changed_at`, authz's clock): forget all its verdicts."""
        self._changed[account_id] = (changed_at, now)
        dropped = self._drop_all(_digests(self._by_account.get(account_id)))
        self._forget(now)
        return dropped

    def _forget(self, now: datetime) -> None:
        horizon = now - self._ttl
        for cid in [c for c, at in self._revoked.items() if at < horizon]:
            del self._revoked[cid]
        for aid in [a for a, (_, seen) in self._changed.items() if seen < horizon]:
            del self._changed[aid]

    def _drop_all(self, digests: set[bytes]) -> int:
        for digest in digests:
            self._drop(digest)
        return len(digests)

    def _drop(self, digest: bytes) -> None:
        entry = self._entries.pop(digest, None)
        if entry is None:
            return
        verdict = entry.verdict
        _unindex(self._by_credential, verdict.credential_id, digest)
        _unindex(self._by_account, verdict.account.id if verdict.account else None, digest)

    def __len__(self) -> int:
        return len(self._entries)


def _index(index: dict[str, Digests], key: str, digest: bytes) -> None:
    held = index.get(key)
    if held is None or held == digest:
        index[key] = digest
    elif isinstance(held, bytes):
        index[key] = {held, digest}
    else:
        held.add(digest)


def _digests(held: Digests | None) -> set[bytes]:
    if held is None:
        return set()
    return {held} if isinstance(held, bytes) else set(held)


def _unindex(index: dict[str, Digests], key: str | None, digest: bytes) -> None:
    if key is None or key not in index:
        return
    held = index[key]
    if isinstance(held, bytes):
        if held == digest:
            del index[key]
        return
    held.discard(digest)
    if len(held) == 1:
        index[key] = next(iter(held))
    elif not held:
        del index[key]
