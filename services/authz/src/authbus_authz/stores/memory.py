"""In-memory twin of the credential store, for unit tests (same contract as MongoStore).

Unit of work: `atomically` runs one unit at a time (a lock) and journals the previous value of
every record the unit writes; an exception out of the unit restores them, in reverse. Writes
outside any unit, and the login throttle's always, are not journaled (as in MongoStore, where
they run outside the transaction).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any, TypeVar

from authbus_authz.core.ports import (
    Account,
    AccountUpdate,
    ApiKeyRecord,
    EmailTaken,
    Failures,
    KeyUse,
    OutboxEntry,
    StoredKey,
    TokenRecord,
)

R = TypeVar("R", TokenRecord, ApiKeyRecord)
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
Undo = list[Callable[[], None]]
_ABSENT: Any = object()


class MemoryStore:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.api_keys: dict[str, ApiKeyRecord] = {}
        self.crypto: dict[str, StoredKey] = {}
        self.active: dict[KeyUse, str] = {}
        self.throttle: dict[str, Failures] = {}
        self.outbox: dict[str, OutboxEntry] = {}
        self._journal: ContextVar[Undo | None] = ContextVar("memory_store_unit", default=None)
        self._one_unit = asyncio.Lock()

    # unit of work
    async def atomically(self, work: Callable[[], Awaitable[T]]) -> T:
        if self._journal.get() is not None:
            return await work()  # nested: part of the outer unit
        async with self._one_unit:
            undo: Undo = []
            joined = self._journal.set(undo)
            try:
                return await work()
            except BaseException:
                for step in reversed(undo):
                    step()
                raise
            finally:
                self._journal.reset(joined)

    def _put(self, table: dict[K, V], key: K, value: V) -> V:
        self._remember(table, key)
        table[key] = value
        return value

    def _pop(self, table: dict[K, V], key: K) -> None:
        if key in table:
            self._remember(table, key)
            del table[key]

    def _remember(self, table: dict[K, V], key: K) -> None:
        undo = self._journal.get()
        if undo is None:
            return
        before = table.get(key, _ABSENT)

        def restore() -> None:
            if before is _ABSENT:
                table.pop(key, None)
            else:
                table[key] = before

        undo.append(restore)

    def _touch(self, records: dict[str, R], last_used: Mapping[str, datetime]) -> None:
        for rid, at in last_used.items():
            record = records.get(rid)
            if record is not None and (record.last_used_at is None or record.last_used_at < at):
                self._put(records, rid, dataclasses.replace(record, last_used_at=at))

    def _revoke(self, records: dict[str, R], rid: str, at: datetime) -> R | None:
        record = records.get(rid)
        if record is not None and record.revoked_at is None:
            record = self._put(records, rid, dataclasses.replace(record, revoked_at=at))
        return record

    # accounts
    async def insert_account(self, account: Account) -> None:
        if any(a.email_key == account.email_key for a in self.accounts.values()):
            raise EmailTaken(account.email_key)
        self._put(self.accounts, account.id, account)

    async def account_by_email(self, email_key: str) -> Account | None:
        return next((a for a in self.accounts.values() if a.email_key == email_key), None)

    async def account_by_id(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)

    async def update_account(self, account_id: str, changes: AccountUpdate) -> Account | None:
        account = self.accounts.get(account_id)
        if account is None:
            return None
        fields: dict[str, Any] = dict(changes)
        return self._put(self.accounts, account_id, dataclasses.replace(account, **fields))

    async def claim_totp_step(self, account_id: str, step: int) -> bool:
        account = self.accounts.get(account_id)
        if account is None or step <= account.totp_last_step:
            return False
        self._put(self.accounts, account_id, dataclasses.replace(account, totp_last_step=step))
        return True

    async def change_scopes(
        self, account_id: str, add: tuple[str, ...], remove: tuple[str, ...]
    ) -> Account | None:
        account = self.accounts.get(account_id)
        if account is None:
            return None
        kept = [s for s in account.scopes if s not in remove]
        kept += [s for s in dict.fromkeys(add) if s not in kept]
        return self._put(
            self.accounts, account_id, dataclasses.replace(account, scopes=tuple(kept))
        )

    # tokens
    async def insert_token(self, token: TokenRecord) -> None:
        self._put(self.tokens, token.id, token)

    async def token_by_id(self, token_id: str) -> TokenRecord | None:
        return self.tokens.get(token_id)

    async def tokens_of(self, account_id: str) -> list[TokenRecord]:
        found = [t for t in self.tokens.values() if t.account_id == account_id]
        return sorted(found, key=lambda t: (t.created_at, t.id))

    async def revoke_token(self, token_id: str, at: datetime) -> TokenRecord | None:
        return self._revoke(self.tokens, token_id, at)

    async def touch_tokens(self, last_used: Mapping[str, datetime]) -> None:
        self._touch(self.tokens, last_used)

    # API keys
    async def insert_api_key(self, key: ApiKeyRecord) -> None:
        self._put(self.api_keys, key.id, key)

    async def api_key_by_digest(self, digest: str) -> ApiKeyRecord | None:
        return next((k for k in self.api_keys.values() if k.digest == digest), None)

    async def api_key_by_id(self, key_id: str) -> ApiKeyRecord | None:
        return self.api_keys.get(key_id)

    async def api_keys_of(self, account_id: str) -> list[ApiKeyRecord]:
        found = [k for k in self.api_keys.values() if k.account_id == account_id]
        return sorted(found, key=lambda k: (k.created_at, k.id))

    async def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        return self._revoke(self.api_keys, key_id, at)

    async def touch_api_keys(self, last_used: Mapping[str, datetime]) -> None:
        self._touch(self.api_keys, last_used)

    # crypto keys
    async def active_key(self, use: KeyUse, candidate: StoredKey) -> StoredKey:
        if use not in self.active:
            self._put(self.active, use, candidate.kid)
            self._put(self.crypto, candidate.kid, candidate)
        return self.crypto[self.active[use]]

    async def rotate_key(self, use: KeyUse, new: StoredKey, previous_kid: str) -> bool:
        if self.active.get(use) != previous_kid:
            return False
        retired = dataclasses.replace(self.crypto[previous_kid], active=False)
        self._put(self.crypto, previous_kid, retired)
        self._put(self.crypto, new.kid, new)
        self._put(self.active, use, new.kid)
        return True

    async def crypto_keys(self) -> list[StoredKey]:
        return list(self.crypto.values())

    # login throttle (never part of a unit of work: a failure counts even if it is undone)
    async def failures(self, keys: list[str], now: datetime) -> dict[str, Failures]:
        return {k: self.throttle[k] for k in keys if k in self.throttle}

    async def add_failure(self, key: str, now: datetime, window_s: float) -> Failures:
        current = self.throttle.get(key)
        if current is None or current.first_at <= now - timedelta(seconds=window_s):
            blocked = current.blocked_until if current else None
            current = Failures(count=0, first_at=now, blocked_until=blocked)
        current = self.throttle[key] = dataclasses.replace(current, count=current.count + 1)
        return current

    async def block(self, key: str, until: datetime) -> None:
        current = self.throttle.get(key) or Failures(count=0, first_at=until)
        if current.blocked_until is None or current.blocked_until < until:
            self.throttle[key] = dataclasses.replace(current, blocked_until=until)

    async def clear(self, key: str) -> None:
        self.throttle.pop(key, None)

    # outbox
    async def add_to_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        for entry in entries:
            self._put(self.outbox, entry.id, entry)

    async def claim_due(self, now: datetime, until: datetime, limit: int) -> list[OutboxEntry]:
        due = sorted(
            (e for e in self.outbox.values() if e.due_at <= now),
            key=lambda e: (e.created_at, e.position, e.id),
        )[:limit]
        return [self._put(self.outbox, e.id, dataclasses.replace(e, due_at=until)) for e in due]

    async def remove_from_outbox(self, ids: Sequence[str]) -> None:
        for entry_id in ids:
            self._pop(self.outbox, entry_id)
