"""Units of work on MongoDB: one multi-document transaction, its session in a contextvar.

Algorithm: `atomically(work)` starts a session and a transaction and sets the session in a
context variable for the duration of `work`; every `MongoStore` operation reads it (`current`)
and passes it to motor, so whatever the core does through the store while `work` runs is part
of the transaction, without the core knowing. Concurrent units are separate asyncio tasks,
each with its own context, so they never share a session. After `work` returns, the
transaction commits; an exception out of `work` aborts it.

Retries: a unit the server aborted because a concurrent one wrote the same document first
(`WriteConflict`, labelled `TransientTransactionError`), or one a store method found it cannot
finish (`Conflict`: a unique key taken meanwhile, which aborts a transaction), runs again from
the start, up to `ATTEMPTS` times, after a random pause that grows with each attempt
(concurrent units on one document take turns). An unreachable server is not
retried here: the caller answers `unavailable` at once rather than after several server
selection timeouts. pymongo retries a commit whose outcome is unknown once by itself.

Needs a replica set (MongoDB has transactions only there; a single-node one will do, as in
docker-compose.yml) or SecantusDB, which reports itself as one. Uses only features real
MongoDB has. A session is used by one task at a time: no concurrent store calls inside a unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorClientSession
from pymongo.errors import ConnectionFailure, PyMongoError

T = TypeVar("T")
ATTEMPTS = 10
PAUSE_S = 0.01  # the most a pause before the second attempt lasts; then 2x, 3x...


class Conflict(Exception):
    """The unit cannot finish as it started (the server aborted it): run it again."""


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, Conflict):
        return True
    return (
        isinstance(exc, PyMongoError)
        and not isinstance(exc, ConnectionFailure)
        and exc.has_error_label("TransientTransactionError")
    )


class Sessions:
    """The session of the unit of work under way in this task, if any."""

    def __init__(self, client: AsyncIOMotorClient[Any]) -> None:
        self._client = client
        self._current: ContextVar[AsyncIOMotorClientSession | None] = ContextVar(
            "authbus_mongo_session", default=None
        )

    @property
    def current(self) -> AsyncIOMotorClientSession | None:
        return self._current.get()

    async def atomically(self, work: Callable[[], Awaitable[T]]) -> T:
        if self._current.get() is not None:
            return await work()  # nested: part of the outer unit
        async with await self._client.start_session() as session:
            for attempt in range(1, ATTEMPTS + 1):
                joined = self._current.set(session)
                try:
                    return await _transaction(session, work)
                except (PyMongoError, Conflict) as exc:
                    if attempt == ATTEMPTS or not retryable(exc):
                        raise
                finally:
                    self._current.reset(joined)
                await asyncio.sleep(random.uniform(0, PAUSE_S * attempt))  # noqa: S311 (jitter)
        raise AssertionError("unreachable: the last attempt returns or raises")


async def _transaction(session: AsyncIOMotorClientSession, work: Callable[[], Awaitable[T]]) -> T:
    session.start_transaction()
    try:
        result = await work()
    except BaseException:
        with contextlib.suppress(PyMongoError):  # InvalidOperation if the server ended it
            await session.abort_transaction()
        raise
    await session.commit_transaction()
    return result
