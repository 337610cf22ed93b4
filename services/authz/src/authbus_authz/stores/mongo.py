"""The credential store on MongoDB (motor). Only authz opens MongoDB (SPEC S1, S3).

Collections (indexes are created at start; an empty database needs no migration, and fields
added later read as their defaults in older documents: `scopes` as none granted, a token's
`token_sha256` as not recorded):
- `accounts`: unique `email_key`; `scopes` the operators' grant (A8).
- `tokens`: `_id` = jti; by `account_id`; `token_sha256`, the issued token's digest.
- `api_keys`: `_id` = key id; unique `digest` (SHA-256 of the key: the only form stored).
- `crypto_keys`: `_id` = kid, the key pairs (private halves encrypted); `crypto_active`:
  `_id` = use, the kid in use (compare-and-set on rotation).
- `login_throttle`: failure counts and blocks per throttle key; a TTL index on `expires_at`
  forgets them.
- `outbox`: events staged with their change (`mongo_outbox.py`, ADR 0015).

Units of work (`atomically`, `mongo_session.py`): every operation here passes the session of
the unit under way in its task, if any, so a command's writes and its staged events commit
together. Exceptions: the login throttle (its counts must stick when a command is undone) and
`active_key` (start only) run outside it. Uses only features real MongoDB has.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bson.binary import Binary
from motor.motor_asyncio import (
    AsyncIOMotorClient,
    AsyncIOMotorClientSession,
    AsyncIOMotorCollection,
    AsyncIOMotorDatabase,
)
from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

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
from authbus_authz.settings import MongoSettings
from authbus_authz.stores.mongo_outbox import MongoOutbox
from authbus_authz.stores.mongo_session import Conflict, Sessions

Doc = dict[str, Any]
T = TypeVar("T")
Collection = AsyncIOMotorCollection[Doc]


def connect(settings: MongoSettings) -> AsyncIOMotorClient[Doc]:
    return AsyncIOMotorClient(
        settings.uri,
        tz_aware=True,
        serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
        appname="authbus-authz",
    )


def _bson(value: Any) -> Any:
    """A record's field as stored: bytes as Binary, tuples as arrays."""
    if isinstance(value, bytes):
        return Binary(value)
    return list(value) if isinstance(value, tuple) else value


def _doc(record: Any) -> Doc:
    doc = {k: _bson(v) for k, v in dataclasses.asdict(record).items()}
    doc["_id"] = doc.pop("id")
    return doc


def _record(cls: type[Any], doc: Doc | None) -> Any:
    if doc is None:
        return None
    values: Doc = {"id": doc["_id"]}
    for field in dataclasses.fields(cls):
        if field.name in doc:
            value = doc[field.name]
            values[field.name] = (
                tuple(value)
                if isinstance(value, list)
                else bytes(value)
                if isinstance(value, Binary)
                else value
            )
    return cls(**values)


class MongoStore:
    def __init__(self, db: AsyncIOMotorDatabase[Doc]) -> None:
        self._db = db
        self._accounts: Collection = db["accounts"]
        self._tokens: Collection = db["tokens"]
        self._api_keys: Collection = db["api_keys"]
        self._crypto: Collection = db["crypto_keys"]
        self._active: Collection = db["crypto_active"]
        self._throttle: Collection = db["login_throttle"]
        self._sessions = Sessions(db.client)
        self._outbox = MongoOutbox(db["outbox"], self._sessions)

    @property
    def _s(self) -> AsyncIOMotorClientSession | None:
        """The session of the unit of work under way in this task (None: outside any)."""
        return self._sessions.current

    async def atomically(self, work: Callable[[], Awaitable[T]]) -> T:
        return await self._sessions.atomically(work)

    async def ping(self) -> None:
        await self._db.command("ping")

    async def create_indexes(self) -> None:
        await self._accounts.create_index([("email_key", ASCENDING)], unique=True)
        await self._tokens.create_index([("account_id", ASCENDING)])
        await self._api_keys.create_index([("digest", ASCENDING)], unique=True)
        await self._api_keys.create_index([("account_id", ASCENDING)])
        await self._throttle.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)
        await self._outbox.create_indexes()

    # accounts ----------------------------------------------------------------------------
    async def insert_account(self, account: Account) -> None:
        session = self._s
        if session is not None and await self._accounts.find_one(
            {"email_key": account.email_key}, {"_id": 1}, session=session
        ):
            raise EmailTaken(account.email_key)  # a duplicate key would abort the transaction
        try:
            await self._accounts.insert_one(_doc(account), session=session)
        except DuplicateKeyError as exc:
            if session is not None:  # taken meanwhile: the transaction is aborted, run again
                raise Conflict(account.email_key) from exc
            raise EmailTaken(account.email_key) from exc

    async def account_by_email(self, email_key: str) -> Account | None:
        found: Account | None = _record(
            Account, await self._accounts.find_one({"email_key": email_key}, session=self._s)
        )
        return found

    async def account_by_id(self, account_id: str) -> Account | None:
        found: Account | None = _record(
            Account, await self._accounts.find_one({"_id": account_id}, session=self._s)
        )
        return found

    async def update_account(self, account_id: str, changes: AccountUpdate) -> Account | None:
        values = {k: _bson(v) for k, v in changes.items()}
        doc = await self._accounts.find_one_and_update(
            {"_id": account_id},
            {"$set": values},
            return_document=ReturnDocument.AFTER,
            session=self._s,
        )
        found: Account | None = _record(Account, doc)
        return found

    async def claim_totp_step(self, account_id: str, step: int) -> bool:
        result = await self._accounts.update_one(
            {"_id": account_id, "totp_last_step": {"$lt": step}},
            {"$set": {"totp_last_step": step}},
            session=self._s,
        )
        return result.modified_count == 1

    async def change_scopes(
        self, account_id: str, add: tuple[str, ...], remove: tuple[str, ...]
    ) -> Account | None:
        # Two single-document updates, each atomic: a concurrent grant or revocation of other
        # scopes is never overwritten (a read-modify-write could bring a revoked scope back).
        if remove:
            await self._accounts.update_one(
                {"_id": account_id},
                {"$pull": {"scopes": {"$in": list(remove)}}},
                session=self._s,
            )
        if add:
            await self._accounts.update_one(
                {"_id": account_id},
                {"$addToSet": {"scopes": {"$each": list(add)}}},
                session=self._s,
            )
        return await self.account_by_id(account_id)

    # tokens ------------------------------------------------------------------------------
    async def insert_token(self, token: TokenRecord) -> None:
        await self._tokens.insert_one(_doc(token), session=self._s)

    async def token_by_id(self, token_id: str) -> TokenRecord | None:
        found: TokenRecord | None = _record(
            TokenRecord, await self._tokens.find_one({"_id": token_id}, session=self._s)
        )
        return found

    async def tokens_of(self, account_id: str) -> list[TokenRecord]:
        cursor = self._tokens.find({"account_id": account_id}, session=self._s).sort(
            [("created_at", 1), ("_id", 1)]
        )
        return [_record(TokenRecord, doc) async for doc in cursor]

    async def revoke_token(self, token_id: str, at: datetime) -> TokenRecord | None:
        await self._tokens.update_one(
            {"_id": token_id, "revoked_at": None}, {"$set": {"revoked_at": at}}, session=self._s
        )
        return await self.token_by_id(token_id)

    async def touch_tokens(self, last_used: Mapping[str, datetime]) -> None:
        await _touch(self._tokens, last_used, self._s)

    # API keys ----------------------------------------------------------------------------
    async def insert_api_key(self, key: ApiKeyRecord) -> None:
        await self._api_keys.insert_one(_doc(key), session=self._s)

    async def api_key_by_digest(self, digest: str) -> ApiKeyRecord | None:
        found: ApiKeyRecord | None = _record(
            ApiKeyRecord, await self._api_keys.find_one({"digest": digest}, session=self._s)
        )
        return found

    async def api_key_by_id(self, key_id: str) -> ApiKeyRecord | None:
        found: ApiKeyRecord | None = _record(
            ApiKeyRecord, await self._api_keys.find_one({"_id": key_id}, session=self._s)
        )
        return found

    async def api_keys_of(self, account_id: str) -> list[ApiKeyRecord]:
        cursor = self._api_keys.find({"account_id": account_id}, session=self._s).sort(
            [("created_at", 1), ("_id", 1)]
        )
        return [_record(ApiKeyRecord, doc) async for doc in cursor]

    async def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        await self._api_keys.update_one(
            {"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": at}}, session=self._s
        )
        return await self.api_key_by_id(key_id)

    async def touch_api_keys(self, last_used: Mapping[str, datetime]) -> None:
        await _touch(self._api_keys, last_used, self._s)

    # crypto keys -------------------------------------------------------------------------
    async def active_key(self, use: KeyUse, candidate: StoredKey) -> StoredKey:
        # At start, never inside a unit of work (a lost race is a duplicate key, which would
        # abort a transaction): it uses no session.
        await self._crypto.insert_one(_key_doc(candidate))
        with contextlib.suppress(DuplicateKeyError):  # lost a concurrent upsert: winner stored
            await self._active.update_one(
                {"_id": use}, {"$setOnInsert": {"kid": candidate.kid}}, upsert=True
            )
        pointer = await self._active.find_one({"_id": use})
        if pointer is None:
            raise RuntimeError(f"no active {use} key after upsert")
        if pointer["kid"] != candidate.kid:
            await self._crypto.delete_one({"_id": candidate.kid})
        return _key(await self._crypto.find_one({"_id": pointer["kid"]}), active=True)

    async def rotate_key(self, use: KeyUse, new: StoredKey, previous_kid: str) -> bool:
        # Mark the previous key retired first: between the swap and a later write it would
        # otherwise be neither active nor retired, and so not listed (tokens it signed fail).
        session = self._s
        await self._crypto.update_one(
            {"_id": previous_kid, "retired_at": {"$exists": False}},
            {"$set": {"retired_at": new.created_at}},
            session=session,
        )
        await self._crypto.insert_one(_key_doc(new), session=session)
        swapped = await self._active.update_one(
            {"_id": use, "kid": previous_kid}, {"$set": {"kid": new.kid}}, session=session
        )
        if swapped.modified_count != 1:
            await self._crypto.delete_one({"_id": new.kid}, session=session)
            return False
        return True

    async def crypto_keys(self) -> list[StoredKey]:
        """Active and retired keys; not a candidate that lost the race to become active."""
        session = self._s
        active = {doc["kid"] async for doc in self._active.find({}, session=session)}
        listed = {"$or": [{"_id": {"$in": list(active)}}, {"retired_at": {"$exists": True}}]}
        found = self._crypto.find(listed, session=session)
        return [_key(doc, active=doc["_id"] in active) async for doc in found]

    # login throttle (outside any unit of work: no session) -----------------------------
    async def failures(self, keys: list[str], now: datetime) -> dict[str, Failures]:
        return {
            doc["_id"]: _failures(doc) async for doc in self._throttle.find({"_id": {"$in": keys}})
        }

    async def add_failure(self, key: str, now: datetime, window_s: float) -> Failures:
        window = timedelta(seconds=window_s)
        fresh = {"_id": key, "count": 0, "first_at": now, "expires_at": now + window}
        for _ in range(3):  # the TTL monitor may delete the document between the two steps
            # Create the counter if absent (no upsert: a concurrent upsert's loser is told
            # "None" by SecantusDB although its update applied, which would count twice).
            with contextlib.suppress(DuplicateKeyError):
                await self._throttle.insert_one(fresh)
            await self._throttle.update_one(  # a count older than the window starts again
                {"_id": key, "first_at": {"$lte": now - window}},
                {"$set": {"count": 0, "first_at": now}},
            )
            doc = await self._throttle.find_one_and_update(
                {"_id": key},
                {"$inc": {"count": 1}, "$max": {"expires_at": now + window}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return _failures(doc)
        raise RuntimeError(f"throttle key {key} keeps vanishing")

    async def block(self, key: str, until: datetime) -> None:
        await self._throttle.update_one(
            {"_id": key},
            {
                "$max": {"blocked_until": until, "expires_at": until},
                "$setOnInsert": {"count": 0, "first_at": until},
            },
            upsert=True,
        )

    async def clear(self, key: str) -> None:
        await self._throttle.delete_one({"_id": key})

    # outbox ------------------------------------------------------------------------------
    async def add_to_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        await self._outbox.add(entries)

    async def claim_due(self, now: datetime, until: datetime, limit: int) -> list[OutboxEntry]:
        return await self._outbox.claim_due(now, until, limit)

    async def remove_from_outbox(self, ids: Sequence[str]) -> None:
        await self._outbox.remove(ids)


async def _touch(collection: Collection, last_used: Mapping[str, datetime], session: Any) -> None:
    if last_used:
        await collection.bulk_write(
            [
                UpdateOne({"_id": rid}, {"$max": {"last_used_at": at}})
                for rid, at in last_used.items()
            ],
            ordered=False,
            session=session,
        )


def _key_doc(key: StoredKey) -> Doc:
    return {
        "_id": key.kid,
        "use": key.use,
        "public_jwk": key.public_jwk,
        "private_sealed": Binary(key.private_sealed),
        "created_at": key.created_at,
    }


def _key(doc: Doc | None, *, active: bool) -> StoredKey:
    if doc is None:
        raise RuntimeError("active key document missing")
    return StoredKey(
        kid=doc["_id"],
        use=doc["use"],
        public_jwk=dict(doc["public_jwk"]),
        private_sealed=bytes(doc["private_sealed"]),
        created_at=doc["created_at"],
        active=active,
    )


def _failures(doc: Doc) -> Failures:
    return Failures(
        count=doc.get("count", 0), first_at=doc["first_at"], blocked_until=doc.get("blocked_until")
    )
