"""The credential store on MongoDB (motor). Only authz opens MongoDB (SPEC S1, S3).

Collections: `accounts` (unique `email_key`), `tokens` (by `_id` = jti, indexed by account),
`keys` (one document per active key use, `_id` = `active:<use>`). Indexes are created at
start; an empty database needs no migration. Uses only features real MongoDB has.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from bson.binary import Binary
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from authbus_authz.core.ports import Account, EmailTaken, KeyUse, StoredKey, TokenRecord
from authbus_authz.settings import MongoSettings

Doc = dict[str, Any]


def connect(settings: MongoSettings) -> AsyncIOMotorClient[Doc]:
    return AsyncIOMotorClient(
        settings.uri,
        tz_aware=True,
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        appname="authbus-authz",
    )


class MongoStore:
    def __init__(self, db: AsyncIOMotorDatabase[Doc]) -> None:
        self._db = db
        self._accounts = db["accounts"]
        self._tokens = db["tokens"]
        self._keys = db["keys"]

    async def ping(self) -> None:
        await self._db.command("ping")

    async def create_indexes(self) -> None:
        await self._accounts.create_index([("email_key", ASCENDING)], unique=True)
        await self._tokens.create_index([("account_id", ASCENDING)])

    async def insert_account(self, account: Account) -> None:
        doc = dataclasses.asdict(account)
        doc["_id"] = doc.pop("id")
        try:
            await self._accounts.insert_one(doc)
        except DuplicateKeyError as exc:
            raise EmailTaken(account.email_key) from exc

    async def account_by_email(self, email_key: str) -> Account | None:
        return _account(await self._accounts.find_one({"email_key": email_key}))

    async def account_by_id(self, account_id: str) -> Account | None:
        return _account(await self._accounts.find_one({"_id": account_id}))

    async def insert_token(self, token: TokenRecord) -> None:
        doc = dataclasses.asdict(token)
        doc["_id"] = doc.pop("id")
        doc["scopes"] = list(token.scopes)
        await self._tokens.insert_one(doc)

    async def token_by_id(self, token_id: str) -> TokenRecord | None:
        return _token(await self._tokens.find_one({"_id": token_id}))

    async def revoke_token(self, token_id: str, at: datetime) -> TokenRecord | None:
        await self._tokens.update_one(
            {"_id": token_id, "revoked_at": None}, {"$set": {"revoked_at": at}}
        )
        return await self.token_by_id(token_id)

    async def active_key(self, use: KeyUse, candidate: StoredKey) -> StoredKey:
        doc = {
            "kid": candidate.kid,
            "use": use,
            "public_jwk": candidate.public_jwk,
            "private_sealed": Binary(candidate.private_sealed),
            "created_at": candidate.created_at,
        }
        selector = {"_id": f"active:{use}"}
        try:
            stored = await self._keys.find_one_and_update(
                selector, {"$setOnInsert": doc}, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:  # lost a concurrent upsert: the winner's key is stored
            stored = None
        if stored is None:  # SecantusDB answers None to the loser of the race
            stored = await self._keys.find_one(selector)
        if stored is None:
            raise RuntimeError(f"no active {use} key after upsert")
        return _key(stored)

    async def keys(self) -> list[StoredKey]:
        return [_key(doc) async for doc in self._keys.find({})]


def _account(doc: Doc | None) -> Account | None:
    if doc is None:
        return None
    fields = {f.name for f in dataclasses.fields(Account)}
    return Account(id=doc["_id"], **{k: v for k, v in doc.items() if k in fields and k != "id"})


def _token(doc: Doc | None) -> TokenRecord | None:
    if doc is None:
        return None
    return TokenRecord(
        id=doc["_id"],
        account_id=doc["account_id"],
        name=doc["name"],
        scopes=tuple(doc.get("scopes", ())),
        created_at=doc["created_at"],
        expires_at=doc.get("expires_at"),
        revoked_at=doc.get("revoked_at"),
    )


def _key(doc: Doc) -> StoredKey:
    return StoredKey(
        kid=doc["kid"],
        use=doc["use"],
        public_jwk=dict(doc["public_jwk"]),
        private_sealed=bytes(doc["private_sealed"]),
        created_at=doc["created_at"],
    )
