"""The key ring's life: first keys, reloads, and rotation with an overlap (SPEC A1).

Algorithm:
- Start: `active_key` per use (the first instance ever creates the key; the others read it),
  then load every stored key (active and retired) into a `KeyRing`.
- Rotation (an operator's order, or automatic once the active key is older than the rotation
  age): a new key is made active by compare-and-set on the previous kid, so concurrent
  rotations by several instances make exactly one new key. The previous key stays, retired:
  tokens it signed verify until they expire or are revoked; requests sealed to it still open.
- Other instances learn of a rotation from `authz.keys.v1` (`KeyPublished`) and reload. A token
  or sealed request naming a kid this instance does not know also triggers a reload (the api
  may learn of a new sealing key a moment before this instance does): concurrent askers share
  one reload, and reloads for unknown kids happen at most every `min_reload_interval`. An
  asker arriving sooner waits out the rest of the interval and then reloads, rather than being
  refused: two rotations in quick succession (sig, then seal) must not fail the requests
  sealed to the second key. A flood of garbage kids so costs at most one small read per
  interval, and each garbage request waits at most that long before it is refused.

Errors: a store failure propagates (the caller answers RequestFailed).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from authbus_authz.core.keys import KeyRing, new_sealing_key, new_signing_key
from authbus_authz.core.ports import Clock, CryptoKeyStore, KeyUse, StoredKey

NEW_KEY = {"sig": new_signing_key, "seal": new_sealing_key}


@dataclass
class Rotated:
    new: StoredKey
    previous: StoredKey


@dataclass
class KeyService:
    store: CryptoKeyStore
    kek: bytes
    clock: Clock
    min_reload_interval: timedelta = timedelta(milliseconds=100)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ring: KeyRing = field(default_factory=KeyRing)
    _last_reload: datetime | None = None
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self) -> KeyRing:
        now = self.clock()
        for use in ("sig", "seal"):
            await self.store.active_key(use, NEW_KEY[use](self.kek, now))
        return await self.reload()

    async def reload(self) -> KeyRing:
        self.ring = KeyRing.load(self.kek, await self.store.crypto_keys())
        self._last_reload = self.clock()
        return self.ring

    async def knows(self, kid: str) -> bool:
        """Whether `kid` is in the ring, reloading once if it is not (shared, rate limited)."""
        if self._has(kid):
            return True
        async with self._reloading:  # askers arriving meanwhile share the reload under way
            if self._has(kid):
                return True
            if self._last_reload is not None:
                wait = self.min_reload_interval - (self.clock() - self._last_reload)
                if wait > timedelta(0):
                    await self.sleep(wait.total_seconds())
                if self._has(kid):  # a KeyPublished reload landed meanwhile
                    return True
            await self.reload()
        return self._has(kid)

    def _has(self, kid: str) -> bool:
        return kid in self.ring.verifying or kid in self.ring.sealing

    def knows_now(self, kid: str) -> bool:
        """Whether `kid` is in the ring, without reloading."""
        return self._has(kid)

    def is_active(self, kid: str) -> bool:
        return kid in (self.ring.signing_kid, self.ring.sealing_kid)

    async def rotate(self, use: KeyUse) -> Rotated | None:
        """Make a new active key for `use`; None if a concurrent rotation won (then reload)."""
        rotated = await self.swap(use)
        await self.reload()
        if rotated is None:
            return None
        return Rotated(
            new=self.ring.active(use), previous=_retired(self.ring, rotated.previous.kid)
        )

    async def swap(self, use: KeyUse) -> Rotated | None:
        """The store's half of `rotate`, the ring left as it is: for a caller inside a unit of
        work, which reloads once the unit has committed (a ring holding a key that is then
        undone would sign tokens nobody can verify). None if a concurrent rotation won."""
        previous = self.ring.active(use)
        new = NEW_KEY[use](self.kek, self.clock())
        if not await self.store.rotate_key(use, new, previous.kid):
            return None
        return Rotated(new=new, previous=dataclasses.replace(previous, active=False))

    async def rotate_if_older(self, max_age: timedelta) -> list[Rotated]:
        """Rotate each use whose active key is older than `max_age`."""
        now = self.clock()
        rotated = []
        for use in ("sig", "seal"):
            if now - self.ring.active(use).created_at >= max_age:
                done = await self.rotate(use)
                if done is not None:
                    rotated.append(done)
        return rotated


def _retired(ring: KeyRing, kid: str) -> StoredKey:
    return next(k for k in ring.published if k.kid == kid)
