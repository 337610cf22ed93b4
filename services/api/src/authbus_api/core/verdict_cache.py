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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from authbus_shared.contracts.authz import (
    AuthMethod,
    CredentialVerified,
    Outcome,
    SealedCredential,
)

NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Account:
    """An account as a verdict names it: `AccountView`'s fields in a slotted object (a
    pydantic model instance costs about 500 bytes more; issue #13)."""

    id: str
    email: str
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class CachedVerdict:
    """authz's `CredentialVerified` as the cache holds it (issue #13: about 1,400 bytes less per
    cached credential than the pydantic model; `bench.cache_memory`): the fields a request
    reads, slotted, and when the entry expires. The two times the reply carries are read once,
    when it is admitted (`valid_until` caps `expires`; `checked_at` tells a verdict read
    before an account change), and not kept."""

    outcome: Outcome
    account: Account | None = None
    scopes: tuple[str, ...] = ()
    method: AuthMethod | None = None
    credential_id: str | None = None
    mfa: bool = False
    deprecated: bool = False
    retry_after_s: int | None = None
    expires: datetime = field(default=NEVER, compare=False)

    @classmethod
    def of(
        cls, reply: CredentialVerified, expires: datetime, scopes: tuple[str, ...] | None = None
    ) -> CachedVerdict:
        account = reply.account
        return cls(
            reply.outcome,
            Account(account.id, account.email, account.locale) if account else None,
            reply.scopes if scopes is None else scopes,
            reply.method,
            reply.credential_id,
            reply.mfa,
            reply.deprecated,
            reply.retry_after_s,
            expires,
        )


REVOKED = CredentialVerified(outcome=Outcome.REVOKED)
MAX_SHARED_SCOPES = 4096  # distinct scope sets kept as one tuple each (a handful in practice)
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


class VerdictCache:
    def __init__(self, *, max_entries: int, ttl: timedelta, negative_ttl: timedelta) -> None:
        self._max = max_entries
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._entries: OrderedDict[bytes, CachedVerdict] = OrderedDict()
        self._scopes: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per scope set
        # credential id / account id -> its digests: one digest (the common case) is kept as
        # itself, more as a set (a set of one costs ~220 bytes per entry; issue #13)
        self._by_credential: dict[str, Digests] = {}
        self._by_account: dict[str, Digests] = {}
        self._revoked: dict[str, datetime] = {}  # credential id -> when the event arrived
        self._changed: dict[str, tuple[datetime, datetime]] = {}  # account -> (change at, seen)

    def get(self, digest: bytes, now: datetime) -> CachedVerdict | None:
        verdict = self._entries.get(digest)
        if verdict is None:
            return None
        if verdict.expires <= now:
            self._drop(digest)
            return None
        self._entries.move_to_end(digest)
        return verdict

    def admit(self, digest: bytes, reply: CredentialVerified, now: datetime) -> CachedVerdict:
        """Take a reply from authz; returns the verdict to act on (and caches it)."""
        revoked_at = self._revoked.get(reply.credential_id or "")
        if reply.outcome is Outcome.VALID and revoked_at and revoked_at >= now - self._ttl:
            reply = REVOKED
        if reply.outcome is Outcome.VALID:
            expires = now + self._ttl
            if reply.valid_until is not None:
                expires = min(expires, reply.valid_until)
        else:
            expires = now + self._negative_ttl
        verdict = CachedVerdict.of(reply, expires, self._shared(reply.scopes))
        if expires > now and not self._stale(reply):
            self._drop(digest)
            self._entries[digest] = verdict
            if verdict.credential_id:
                _index(self._by_credential, verdict.credential_id, digest)
            if verdict.account:
                _index(self._by_account, verdict.account.id, digest)
            while len(self._entries) > self._max:
                self._drop(next(iter(self._entries)))
        return verdict

    def _shared(self, scopes: tuple[str, ...]) -> tuple[str, ...]:
        """One tuple per distinct scope set (most credentials share a few)."""
        shared = self._scopes.get(scopes)
        if shared is None and len(self._scopes) < MAX_SHARED_SCOPES:
            shared = self._scopes[scopes] = scopes
        return shared or scopes

    def _stale(self, reply: CredentialVerified) -> bool:
        """Read by authz before a change of its account that this instance has seen."""
        if reply.account is None or reply.account.id not in self._changed:
            return False
        changed_at, _ = self._changed[reply.account.id]
        return reply.checked_at is None or reply.checked_at <= changed_at

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
        verdict = self._entries.pop(digest, None)
        if verdict is None:
            return
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
