"""The store contract, continued (STYLE 2; ADR 0015): units of work and the outbox, on the
in-memory twin and on MongoStore over the real MongoDB-wire server. A unit lands all its
writes or none; login-throttle counts stay outside; the outbox gives each due entry to one
claimer at a time."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from authbus_authz.core.keys import new_signing_key
from authbus_authz.core.ports import CredentialStore, EmailTaken, OutboxEntry
from authbus_authz.stores.memory import MemoryStore
from authbus_authz.stores.mongo import MongoStore
from tests.integration.test_store_contract import NOW, account, token

KEK = os.urandom(32)
S = timedelta(seconds=1)


@pytest.fixture(params=["memory", "mongo"])
async def store(
    request: pytest.FixtureRequest, mongo_db: AsyncIOMotorDatabase[dict[str, Any]]
) -> AsyncIterator[CredentialStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    mongo = MongoStore(mongo_db)
    await mongo.create_indexes()
    yield mongo


def entry(entry_id: str, created: int = 0, due: int = 5) -> OutboxEntry:
    return OutboxEntry(
        id=entry_id,
        topic="auth.changes.v1",
        key="a1",
        envelope=b'{"id":"' + entry_id.encode() + b'","bytes":"\x00\xff"}',
        created_at=NOW + created * S,
        due_at=NOW + due * S,
    )


class Undone(Exception):
    pass


# units of work -----------------------------------------------------------------------------
async def test_a_unit_lands_its_writes_and_its_events_together(store: CredentialStore) -> None:
    await store.insert_account(account("ann@example.com"))
    await store.insert_token(token("t1"))

    async def revoke() -> str | None:
        revoked = await store.revoke_token("t1", NOW)
        await store.update_account("a1", {"disabled": True})
        await store.add_to_outbox([entry("e1"), entry("e2", created=1)])
        return revoked.id if revoked else None

    assert await store.atomically(revoke) == "t1"

    found, holder = await store.token_by_id("t1"), await store.account_by_id("a1")
    assert found is not None and found.revoked_at == NOW
    assert holder is not None and holder.disabled
    assert [e.id for e in await store.claim_due(NOW + 5 * S, NOW + 15 * S, 10)] == ["e1", "e2"]


async def test_an_undone_unit_leaves_nothing_behind(store: CredentialStore) -> None:
    await store.insert_account(account("ann@example.com"))
    await store.insert_token(token("t1"))
    sig = await store.active_key("sig", new_signing_key(KEK, NOW))

    async def fail() -> None:
        await store.revoke_token("t1", NOW)
        await store.insert_token(token("t2"))
        await store.change_scopes("a1", ("admin",), ())
        await store.rotate_key("sig", new_signing_key(KEK, NOW), sig.kid)
        await store.add_to_outbox([entry("e1")])
        raise Undone

    with pytest.raises(Undone):
        await store.atomically(fail)

    kept = await store.token_by_id("t1")
    assert kept is not None and kept.revoked_at is None
    assert await store.token_by_id("t2") is None
    assert await store.account_by_id("a1") == account("ann@example.com")
    assert [(k.kid, k.active) for k in await store.crypto_keys()] == [(sig.kid, True)]
    assert await store.claim_due(NOW + 60 * S, NOW + 70 * S, 10) == []


async def test_a_unit_reads_its_own_writes(store: CredentialStore) -> None:
    await store.insert_account(account("ann@example.com"))

    async def grant_then_read() -> tuple[str, ...]:
        await store.change_scopes("a1", ("read",), ())
        await store.insert_token(token("t1"))
        seen = await store.account_by_id("a1")
        assert [t.id for t in await store.tokens_of("a1")] == ["t1"]
        return seen.scopes if seen else ()

    assert await store.atomically(grant_then_read) == ("read",)


async def test_throttle_counts_stick_when_the_unit_is_undone(store: CredentialStore) -> None:
    async def fail_a_login() -> None:
        await store.add_failure("pair:a1:203.0.113.7", NOW, 60)
        await store.block("pair:a1:203.0.113.7", NOW + 30 * S)
        raise Undone

    with pytest.raises(Undone):
        await store.atomically(fail_a_login)

    found = await store.failures(["pair:a1:203.0.113.7"], NOW)
    assert found["pair:a1:203.0.113.7"].count == 1
    assert found["pair:a1:203.0.113.7"].blocked_until == NOW + 30 * S


async def test_nested_units_are_one(store: CredentialStore) -> None:
    await store.insert_token(token("t1"))

    async def inner() -> None:
        await store.revoke_token("t1", NOW)

    async def outer() -> None:
        await store.atomically(inner)
        raise Undone

    with pytest.raises(Undone):
        await store.atomically(outer)
    kept = await store.token_by_id("t1")
    assert kept is not None and kept.revoked_at is None


async def test_concurrent_units_on_one_document_all_land(store: CredentialStore) -> None:
    """Units that write the same account conflict on MongoDB; each is run again until it
    lands, so none is lost (and each one's event is staged once)."""
    await store.insert_account(account("ann@example.com"))

    async def grant(i: int) -> None:
        await store.change_scopes("a1", (f"s{i}",), ())
        await store.add_to_outbox([entry(f"e{i}", created=i)])

    await asyncio.gather(*(store.atomically(functools.partial(grant, i)) for i in range(6)))

    found = await store.account_by_id("a1")
    assert found is not None and sorted(found.scopes) == [f"s{i}" for i in range(6)]
    staged = await store.claim_due(NOW + 60 * S, NOW + 70 * S, 10)
    assert sorted(e.id for e in staged) == [f"e{i}" for i in range(6)]


async def test_a_taken_email_in_a_unit_is_a_refusal_and_the_unit_goes_on(
    store: CredentialStore,
) -> None:
    await store.insert_account(account("ann@example.com", "a1"))

    async def sign_up() -> bool:
        try:
            await store.insert_account(account("ann@example.com", "a2"))
        except EmailTaken:
            await store.add_to_outbox([entry("refused")])
            return False
        return True

    assert await store.atomically(sign_up) is False
    assert await store.account_by_id("a2") is None
    assert [e.id for e in await store.claim_due(NOW + 60 * S, NOW + 70 * S, 10)] == ["refused"]


async def test_racing_sign_ups_in_units_give_the_email_to_exactly_one(
    store: CredentialStore,
) -> None:
    async def sign_up(i: int) -> bool:
        try:
            await store.insert_account(account("ann@example.com", f"a{i}"))
        except EmailTaken:
            return False
        return True

    won = await asyncio.gather(*(store.atomically(functools.partial(sign_up, i)) for i in range(4)))

    assert won.count(True) == 1
    winner = await store.account_by_email("ann@example.com")
    assert winner is not None and winner.id == f"a{won.index(True)}"


# outbox ------------------------------------------------------------------------------------
async def test_due_entries_are_claimed_oldest_first_once_per_claim(store: CredentialStore) -> None:
    await store.add_to_outbox([entry("late", created=2, due=7), entry("b", 1), entry("a", 0)])

    early = await store.claim_due(NOW + 4 * S, NOW + 14 * S, 10)
    first = await store.claim_due(NOW + 5 * S, NOW + 15 * S, 10)
    again = await store.claim_due(NOW + 6 * S, NOW + 16 * S, 10)
    expired = await store.claim_due(NOW + 15 * S, NOW + 25 * S, 1)

    assert early == []
    assert first == [
        dataclasses.replace(entry(i, c), due_at=NOW + 15 * S) for i, c in (("a", 0), ("b", 1))
    ]
    assert again == []  # claimed until 15 s; "late" is not due yet
    assert [e.id for e in expired] == ["a"]  # the claim ran out; oldest first, one asked for
    assert first[0].envelope == entry("a").envelope  # byte for byte


async def test_entries_staged_together_are_claimed_in_their_order(store: CredentialStore) -> None:
    together = [dataclasses.replace(entry(f"{9 - i}"), position=i) for i in range(5)]
    await store.add_to_outbox(together)

    claimed = await store.claim_due(NOW + 60 * S, NOW + 70 * S, 10)

    assert [e.id for e in claimed] == ["9", "8", "7", "6", "5"]


async def test_removed_entries_are_gone(store: CredentialStore) -> None:
    await store.add_to_outbox([entry("a"), entry("b"), entry("c")])

    await store.remove_from_outbox(["a", "c", "never-staged"])

    assert [e.id for e in await store.claim_due(NOW + 60 * S, NOW + 70 * S, 10)] == ["b"]


async def test_racing_relays_claim_each_entry_once(store: CredentialStore) -> None:
    await store.add_to_outbox([entry(f"e{i:02}", created=i) for i in range(24)])

    async def relay() -> list[str]:
        mine: list[str] = []
        while claimed := await store.claim_due(NOW + 60 * S, NOW + 120 * S, 3):
            mine += [e.id for e in claimed]
        return mine

    claims = await asyncio.gather(*(relay() for _ in range(4)))

    every = [i for mine in claims for i in mine]
    assert sorted(every) == [f"e{i:02}" for i in range(24)]  # each once, none lost
