"""The verifier's reads: from the record cache while it may be used (`records.py`), else from
the store, whose answer is then cached. Each read comes back with the time it is true as of
(for a store read, the time stamped just before it), which the verdict's `checked_at` takes.
A token and its account are read together: from the cache when both are there, else the
missing ones from the store at once. Errors: a store failure propagates."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar, cast

from authbus_authz.core.ports import (
    Account,
    AccountStore,
    ApiKeyRecord,
    Clock,
    TokenRecord,
    TokenStore,
)
from authbus_authz.core.records import Kind, Record, RecordCache

R = TypeVar("R", bound=Record)
Read = tuple[R | None, datetime]


class ReadStore(AccountStore, TokenStore, Protocol):
    async def api_key_by_digest(self, digest: str) -> ApiKeyRecord | None: ...


def _uncounted(kind: Kind, result: str) -> None:
    """The default `counted`: nothing (the runner counts in metrics)."""


@dataclass
class Reads:
    store: ReadStore
    clock: Clock
    cache: RecordCache | None = None
    counted: Callable[[Kind, str], None] = _uncounted  # (kind, "hit" | "miss" | "stale")

    async def token_and_account(
        self, token_id: str, account_id: str
    ) -> tuple[Read[TokenRecord], Read[Account]]:
        token = self._hit("token", token_id, TokenRecord)
        account = self._hit("account", account_id, Account)
        if token is None and account is None:
            return await asyncio.gather(
                self._miss("token", token_id, self.store.token_by_id),
                self._miss("account", account_id, self.store.account_by_id),
            )
        if token is None:
            token = await self._miss("token", token_id, self.store.token_by_id)
        if account is None:
            account = await self._miss("account", account_id, self.store.account_by_id)
        return token, account

    async def key(self, digest: str) -> Read[ApiKeyRecord]:
        hit = self._hit("key", digest, ApiKeyRecord)
        return hit or await self._miss("key", digest, self.store.api_key_by_digest)

    async def account(self, account_id: str) -> Read[Account]:
        hit = self._hit("account", account_id, Account)
        return hit or await self._miss("account", account_id, self.store.account_by_id)

    def _hit(self, kind: Kind, rid: str, cls: type[R]) -> Read[R] | None:
        if self.cache is None:
            return None
        found = self.cache.get(kind, rid, self.clock())
        if found is None or not isinstance(found.record, cls):
            return None
        self.counted(kind, "hit")
        return cast(R, found.record), found.read_at

    async def _miss(
        self, kind: Kind, rid: str, read: Callable[[str], Awaitable[R | None]]
    ) -> Read[R]:
        cache = self.cache
        read_at = self.clock()
        generation = cache.generation if cache is not None else 0
        record = await read(rid)
        if cache is not None:
            self.counted(kind, "miss" if cache.usable(read_at) else "stale")
            if record is not None:
                cache.put(kind, rid, record, read_at, generation)
        return record, read_at
