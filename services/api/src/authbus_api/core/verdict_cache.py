"""The api's cache of authz verdicts (SPEC S3, A7): the hot path answers from here.

Key: a keyed BLAKE2b digest of the credential (kind, email, secret) under a random key made at
start, so the cache never holds a credential nor a hash that could be attacked offline.

Algorithm: a bounded LRU; an entry lives `ttl` (valid verdicts, capped by the credential's own
`valid_until`) or `negative_ttl` (denials, so a flood of bad tokens does not reach authz).
Invalidation: authz broadcasts changes (token revoked, ...) on `auth.changes.v1`; each drops
the entries of that credential and is remembered for `ttl`. The race: a request asks authz, the
revocation event arrives, then the reply "valid" (read before the revocation) arrives. A
revoked credential never becomes valid again, so `admit` turns any "valid" reply for a
credential revoked in the last `ttl` into `revoked`: neither cached nor honoured. The TTL is
the safety net if an event is missed, not the mechanism.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from authbus_shared.contracts.authz import CredentialVerified, Outcome, SealedCredential

REVOKED = CredentialVerified(outcome=Outcome.REVOKED)


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
    verdict: CredentialVerified
    expires: datetime


class VerdictCache:
    def __init__(self, *, max_entries: int, ttl: timedelta, negative_ttl: timedelta) -> None:
        self._max = max_entries
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._by_credential: dict[str, set[bytes]] = {}
        self._revoked: dict[str, datetime] = {}  # credential id -> when the event arrived

    def get(self, digest: bytes, now: datetime) -> CredentialVerified | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.expires <= now:
            self._drop(digest)
            return None
        self._entries.move_to_end(digest)
        return entry.verdict

    def admit(
        self, digest: bytes, verdict: CredentialVerified, now: datetime
    ) -> CredentialVerified:
        """Take a reply from authz; returns the verdict to act on (and caches it)."""
        revoked_at = self._revoked.get(verdict.credential_id or "")
        if verdict.outcome is Outcome.VALID and revoked_at and revoked_at >= now - self._ttl:
            verdict = REVOKED
        if verdict.outcome is Outcome.VALID:
            expires = now + self._ttl
            if verdict.valid_until is not None:
                expires = min(expires, verdict.valid_until)
        else:
            expires = now + self._negative_ttl
        if expires > now:
            self._drop(digest)
            self._entries[digest] = _Entry(verdict, expires)
            if verdict.credential_id:
                self._by_credential.setdefault(verdict.credential_id, set()).add(digest)
            while len(self._entries) > self._max:
                self._drop(next(iter(self._entries)))
        return verdict

    def revoke(self, credential_id: str, now: datetime) -> int:
        """A change event: forget this credential's verdicts; returns how many were dropped."""
        self._revoked[credential_id] = now
        digests = self._by_credential.pop(credential_id, set())
        for digest in digests:
            self._entries.pop(digest, None)
        horizon = now - self._ttl
        for cid in [c for c, at in self._revoked.items() if at < horizon]:
            del self._revoked[cid]
        return len(digests)

    def _drop(self, digest: bytes) -> None:
        entry = self._entries.pop(digest, None)
        cid = entry.verdict.credential_id if entry else None
        if cid and cid in self._by_credential:
            self._by_credential[cid].discard(digest)
            if not self._by_credential[cid]:
                del self._by_credential[cid]

    def __len__(self) -> int:
        return len(self._entries)
