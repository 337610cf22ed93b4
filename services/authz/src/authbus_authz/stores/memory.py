"""In-memory twin of the credential store, for unit tests (same contract as MongoStore)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from authbus_authz.core.ports import Account, EmailTaken, KeyUse, StoredKey, TokenRecord


class MemoryStore:
    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self._active: dict[KeyUse, StoredKey] = {}

    async def insert_account(self, account: Account) -> None:
        if any(a.email_key == account.email_key for a in self.accounts.values()):
            raise EmailTaken(account.email_key)
        self.accounts[account.id] = account

    async def account_by_email(self, email_key: str) -> Account | None:
        return next((a for a in self.accounts.values() if a.email_key == email_key), None)

    async def account_by_id(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)

    async def insert_token(self, token: TokenRecord) -> None:
        self.tokens[token.id] = token

    async def token_by_id(self, token_id: str) -> TokenRecord | None:
        return self.tokens.get(token_id)

    async def revoke_token(self, token_id: str, at: datetime) -> TokenRecord | None:
        token = self.tokens.get(token_id)
        if token is None:
            return None
        if token.revoked_at is None:
            token = dataclasses.replace(token, revoked_at=at)
            self.tokens[token_id] = token
        return token

    async def active_key(self, use: KeyUse, candidate: StoredKey) -> StoredKey:
        return self._active.setdefault(use, candidate)

    async def keys(self) -> list[StoredKey]:
        return list(self._active.values())
