"""The `outbox` collection (ADR 0015): events staged with the change they announce.

A document: `_id` = the envelope's id, `topic`, `key`, `envelope` (the encoded envelope, as
published), `created_at`, `position` (among the entries staged with it), `due_at` (when the
relay may take it). Staging joins the caller's transaction (`Sessions.current`); claiming and
removing never do (the relay runs on its own).

Claim: `find_one_and_update({due_at <= now}, {$set: {due_at: until}})`, oldest first, one
document at a time. Each call is atomic on its document, so two relays racing for an entry
both match it but only one update applies to it while it is due: the other finds the next
one (or none). An index on `due_at` keeps the scan to the due entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bson.binary import Binary
from motor.motor_asyncio import AsyncIOMotorCollection
from pymongo import ASCENDING, ReturnDocument

from authbus_authz.core.ports import OutboxEntry
from authbus_authz.stores.mongo_session import Sessions

Doc = dict[str, Any]


class MongoOutbox:
    def __init__(self, collection: AsyncIOMotorCollection[Doc], sessions: Sessions) -> None:
        self._outbox = collection
        self._sessions = sessions

    async def create_indexes(self) -> None:
        await self._outbox.create_index([("due_at", ASCENDING)])

    async def add(self, entries: Sequence[OutboxEntry]) -> None:
        if entries:
            await self._outbox.insert_many(
                [_doc(e) for e in entries], ordered=True, session=self._sessions.current
            )

    async def claim_due(self, now: datetime, until: datetime, limit: int) -> list[OutboxEntry]:
        claimed: list[OutboxEntry] = []
        while len(claimed) < limit:
            doc: Doc | None = await self._outbox.find_one_and_update(
                {"due_at": {"$lte": now}},
                {"$set": {"due_at": until}},
                sort=[("created_at", ASCENDING), ("position", ASCENDING), ("_id", ASCENDING)],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            claimed.append(_entry(doc))
        return claimed

    async def remove(self, ids: Sequence[str]) -> None:
        if ids:
            await self._outbox.delete_many({"_id": {"$in": list(ids)}})


def _doc(entry: OutboxEntry) -> Doc:
    return {
        "_id": entry.id,
        "topic": entry.topic,
        "key": entry.key,
        "envelope": Binary(entry.envelope),
        "created_at": entry.created_at,
        "due_at": entry.due_at,
        "position": entry.position,
    }


def _entry(doc: Doc) -> OutboxEntry:
    return OutboxEntry(
        id=doc["_id"],
        topic=doc["topic"],
        key=doc.get("key"),
        envelope=bytes(doc["envelope"]),
        created_at=doc["created_at"],
        due_at=doc["due_at"],
        position=doc.get("position", 0),
    )
