"""One contract, two stores (STYLE 2): the in-memory twin the unit tests use and MongoStore on
the real MongoDB-wire server must behave the same."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from authbus_authz.core.keys import new_sealing_key, new_signing_key
from authbus_authz.core.ports import Account, CredentialStore, EmailTaken, TokenRecord
from authbus_authz.stores.memory import MemoryStore
from authbus_authz.stores.mongo import MongoStore

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)  # whole milliseconds: MongoDB's precision
KEK = os.urandom(32)


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


def account(email_key: str, account_id: str = "a1") -> Account:
    return Account(
        id=account_id,
        email=email_key.upper(),
        email_key=email_key,
        password_hash="$argon2id$stub",
        locale="fr",
        created_at=NOW,
        credentials_changed_at=NOW,
    )


def token(token_id: str, account_id: str = "a1") -> TokenRecord:
    return TokenRecord(
        id=token_id,
        account_id=account_id,
        name="ci",
        scopes=("read", "write"),
        created_at=NOW,
        expires_at=NOW + timedelta(days=1),
    )


async def test_account_is_found_by_email_key_and_by_id(store: CredentialStore) -> None:
    await store.insert_account(account("ann@example.com"))

    by_email = await store.account_by_email("ann@example.com")
    by_id = await store.account_by_id("a1")

    assert by_email == by_id == account("ann@example.com")
    assert await store.account_by_email("bob@example.com") is None
    assert await store.account_by_id("nope") is None


async def test_a_second_account_with_the_same_email_key_is_refused(store: CredentialStore) -> None:
    await store.insert_account(account("ann@example.com", "a1"))

    with pytest.raises(EmailTaken):
        await store.insert_account(account("ann@example.com", "a2"))
    assert await store.account_by_id("a2") is None


async def test_token_round_trips_with_its_fields(store: CredentialStore) -> None:
    await store.insert_token(token("t1"))

    assert await store.token_by_id("t1") == token("t1")
    assert await store.token_by_id("t2") is None


async def test_revoking_keeps_the_first_revocation_time(store: CredentialStore) -> None:
    await store.insert_token(token("t1"))

    first = await store.revoke_token("t1", NOW + timedelta(minutes=1))
    again = await store.revoke_token("t1", NOW + timedelta(minutes=2))

    assert first is not None and first.revoked_at == NOW + timedelta(minutes=1)
    assert again is not None and again.revoked_at == NOW + timedelta(minutes=1)
    assert await store.revoke_token("unknown", NOW) is None


async def test_concurrent_instances_agree_on_one_active_key_per_use(
    store: CredentialStore,
) -> None:
    candidates = [new_signing_key(KEK, NOW) for _ in range(4)]

    chosen = await asyncio.gather(*(store.active_key("sig", c) for c in candidates))

    assert len({k.kid for k in chosen}) == 1
    assert chosen[0].kid in {c.kid for c in candidates}
    assert chosen[0].private_sealed in {c.private_sealed for c in candidates}


async def test_keys_lists_the_active_key_of_each_use(store: CredentialStore) -> None:
    sig = await store.active_key("sig", new_signing_key(KEK, NOW))
    seal = await store.active_key("seal", new_sealing_key(KEK, NOW))

    keys = {k.kid: k for k in await store.keys()}

    assert keys == {sig.kid: sig, seal.kid: seal}
    assert keys[seal.kid].use == "seal" and keys[sig.kid].public_jwk["alg"] == "ES256"
