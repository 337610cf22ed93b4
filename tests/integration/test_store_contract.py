"""One contract, two stores (STYLE 2): the in-memory twin the unit tests use and MongoStore on
the real MongoDB-wire server must behave the same, method by method. Units of work and the
outbox (ADR 0015): test_store_units.py, on the same two stores."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase

from authbus_authz.core.keys import new_sealing_key, new_signing_key
from authbus_authz.core.ports import Account, ApiKeyRecord, CredentialStore, EmailTaken, TokenRecord
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


def token(token_id: str, account_id: str = "a1", minutes: int = 0) -> TokenRecord:
    return TokenRecord(
        id=token_id,
        account_id=account_id,
        name="ci",
        scopes=("read", "write"),
        created_at=NOW + timedelta(minutes=minutes),
        expires_at=NOW + timedelta(days=1),
        amr=("pwd", "otp", "mfa"),
        hint="abc123",
        token_sha256="5e" * 32,
    )


def api_key(key_id: str, digest: str, account_id: str = "a1") -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key_id,
        account_id=account_id,
        name="legacy",
        prefix="abk_123456",
        digest=digest,
        scopes=("read",),
        created_at=NOW,
        expires_at=None,
    )


# accounts -----------------------------------------------------------------------------------
async def test_account_is_found_by_email_key_and_by_id(store: CredentialStore) -> None:
    await store.insert_account(account("ann@example.com"))

    assert await store.account_by_email("ann@example.com") == account("ann@example.com")
    assert await store.account_by_id("a1") == account("ann@example.com")
    assert await store.account_by_email("bob@example.com") is None
    assert await store.account_by_id("nope") is None


async def test_a_second_account_with_the_same_email_key_is_refused(store: CredentialStore) -> None:
    await store.insert_account(account("ann@example.com", "a1"))

    with pytest.raises(EmailTaken):
        await store.insert_account(account("ann@example.com", "a2"))
    assert await store.account_by_id("a2") is None


async def test_an_account_update_sets_only_the_given_fields(store: CredentialStore) -> None:
    await store.insert_account(account("ann@example.com"))
    secret = b"\x00\x01sealed-totp"

    updated = await store.update_account(
        "a1", {"totp_pending": secret, "credentials_changed_at": NOW + timedelta(hours=1)}
    )

    assert updated is not None
    assert updated.totp_pending == secret
    assert updated.credentials_changed_at == NOW + timedelta(hours=1)
    assert updated.password_hash == "$argon2id$stub"
    assert await store.account_by_id("a1") == updated
    assert await store.update_account("nope", {"disabled": True}) is None


async def test_a_totp_step_is_claimed_once_and_only_forward(store: CredentialStore) -> None:
    await store.insert_account(account("ann@example.com"))

    claims = [await store.claim_totp_step("a1", step) for step in (100, 100, 99, 101)]

    assert claims == [True, False, False, True]
    assert await store.claim_totp_step("nope", 1) is False


async def test_racing_claims_of_one_step_give_it_to_exactly_one(store: CredentialStore) -> None:
    await store.insert_account(account("ann@example.com"))

    claims = await asyncio.gather(*(store.claim_totp_step("a1", 500) for _ in range(6)))

    assert claims.count(True) == 1


# scope grants (A8) --------------------------------------------------------------------------
async def test_scopes_are_added_and_removed_in_order_each_once(store: CredentialStore) -> None:
    await store.insert_account(dataclasses.replace(account("ann@example.com"), scopes=("read",)))

    first = await store.change_scopes("a1", ("write", "admin", "write"), ("read", "never"))
    again = await store.change_scopes("a1", ("read", "write"), ())

    assert first is not None and first.scopes == ("write", "admin")
    assert again is not None and again.scopes == ("write", "admin", "read")
    assert await store.account_by_id("a1") == again
    assert await store.change_scopes("nope", ("read",), ()) is None


async def test_an_account_update_replaces_the_grant(store: CredentialStore) -> None:
    await store.insert_account(dataclasses.replace(account("ann@example.com"), scopes=("read",)))

    replaced = await store.update_account("a1", {"scopes": ("admin", "billing")})
    emptied = await store.update_account("a1", {"scopes": ()})

    assert replaced is not None and replaced.scopes == ("admin", "billing")
    assert emptied is not None and emptied.scopes == ()
    assert await store.account_by_id("a1") == emptied


async def test_concurrent_grant_changes_are_all_kept(store: CredentialStore) -> None:
    """A revocation racing grants of other scopes is never undone (no read-modify-write)."""
    await store.insert_account(dataclasses.replace(account("ann@example.com"), scopes=("old",)))

    await asyncio.gather(
        store.change_scopes("a1", (), ("old",)),
        *(store.change_scopes("a1", (f"s{i}",), ()) for i in range(6)),
    )

    found = await store.account_by_id("a1")
    assert found is not None and sorted(found.scopes) == [f"s{i}" for i in range(6)]


async def test_documents_from_before_grants_and_digests_read_as_none_granted_and_no_digest(
    mongo_db: AsyncIOMotorDatabase[dict[str, Any]],
) -> None:
    """Migration (ADR 0011): no step needed; older documents lack the fields."""
    mongo = MongoStore(mongo_db)
    await mongo.insert_account(account("ann@example.com"))
    await mongo.insert_token(token("t1"))
    await mongo_db["accounts"].update_one({"_id": "a1"}, {"$unset": {"scopes": ""}})
    await mongo_db["tokens"].update_one({"_id": "t1"}, {"$unset": {"token_sha256": ""}})

    found, old_token = await mongo.account_by_id("a1"), await mongo.token_by_id("t1")
    granted = await mongo.change_scopes("a1", ("read",), ("never",))

    assert found is not None and found.scopes == ()
    assert old_token is not None and (old_token.token_sha256, old_token.hint) == ("", "abc123")
    assert granted is not None and granted.scopes == ("read",)


# tokens -------------------------------------------------------------------------------------
async def test_tokens_round_trip_and_are_listed_per_account_oldest_first(
    store: CredentialStore,
) -> None:
    for tid, minutes in (("t2", 5), ("t1", 0)):
        await store.insert_token(token(tid, minutes=minutes))
    await store.insert_token(token("other", account_id="a2"))

    assert await store.token_by_id("t1") == token("t1")
    assert [t.id for t in await store.tokens_of("a1")] == ["t1", "t2"]
    assert await store.token_by_id("t3") is None


async def test_revoking_keeps_the_first_revocation_time(store: CredentialStore) -> None:
    await store.insert_token(token("t1"))

    first = await store.revoke_token("t1", NOW + timedelta(minutes=1))
    again = await store.revoke_token("t1", NOW + timedelta(minutes=2))

    assert first is not None and first.revoked_at == NOW + timedelta(minutes=1)
    assert again is not None and again.revoked_at == NOW + timedelta(minutes=1)
    assert await store.revoke_token("unknown", NOW) is None


async def test_last_used_only_moves_forward(store: CredentialStore) -> None:
    await store.insert_token(token("t1"))
    await store.insert_api_key(api_key("k1", "d" * 64))

    await store.touch_tokens({"t1": NOW + timedelta(minutes=5), "ghost": NOW})
    await store.touch_tokens({"t1": NOW + timedelta(minutes=1)})
    await store.touch_api_keys({"k1": NOW + timedelta(minutes=3)})

    touched = await store.token_by_id("t1")
    key = await store.api_key_by_id("k1")
    assert touched is not None and touched.last_used_at == NOW + timedelta(minutes=5)
    assert key is not None and key.last_used_at == NOW + timedelta(minutes=3)


# legacy keys --------------------------------------------------------------------------------
async def test_keys_are_found_by_digest_and_id_and_listed_per_account(
    store: CredentialStore,
) -> None:
    await store.insert_api_key(api_key("k1", "a" * 64))
    await store.insert_api_key(api_key("k2", "b" * 64, account_id="a2"))

    assert await store.api_key_by_digest("a" * 64) == api_key("k1", "a" * 64)
    assert await store.api_key_by_id("k2") == api_key("k2", "b" * 64, account_id="a2")
    assert [k.id for k in await store.api_keys_of("a1")] == ["k1"]
    assert await store.api_key_by_digest("c" * 64) is None


async def test_a_revoked_key_keeps_its_first_revocation_time(store: CredentialStore) -> None:
    await store.insert_api_key(api_key("k1", "a" * 64))

    await store.revoke_api_key("k1", NOW)
    again = await store.revoke_api_key("k1", NOW + timedelta(hours=1))

    assert again is not None and again.revoked_at == NOW
    assert await store.revoke_api_key("nope", NOW) is None


# crypto keys --------------------------------------------------------------------------------
async def test_concurrent_instances_agree_on_one_active_key_per_use(store: CredentialStore) -> None:
    candidates = [new_signing_key(KEK, NOW) for _ in range(4)]

    chosen = await asyncio.gather(*(store.active_key("sig", c) for c in candidates))

    assert len({k.kid for k in chosen}) == 1
    assert chosen[0].kid in {c.kid for c in candidates}
    assert [k.kid for k in await store.crypto_keys() if k.use == "sig"] == [chosen[0].kid]


async def test_rotation_compares_and_sets_and_keeps_the_previous_key(
    store: CredentialStore,
) -> None:
    first = await store.active_key("sig", new_signing_key(KEK, NOW))
    seal = await store.active_key("seal", new_sealing_key(KEK, NOW))
    winner, loser = new_signing_key(KEK, NOW), new_signing_key(KEK, NOW)

    won = await store.rotate_key("sig", winner, first.kid)
    lost = await store.rotate_key("sig", loser, first.kid)  # a stale rotation

    keys = {k.kid: k for k in await store.crypto_keys()}
    assert (won, lost) == (True, False)
    assert set(keys) == {first.kid, winner.kid, seal.kid}
    assert keys[winner.kid].active and keys[seal.kid].active
    assert not keys[first.kid].active
    assert keys[first.kid].private_sealed == first.private_sealed


# login throttle -----------------------------------------------------------------------------
async def test_failures_are_counted_within_their_window(store: CredentialStore) -> None:
    counts = [
        (await store.add_failure("pair:x", NOW + timedelta(seconds=i), 60)).count for i in range(3)
    ]
    later = await store.add_failure("pair:x", NOW + timedelta(seconds=120), 60)

    assert counts == [1, 2, 3]
    assert later.count == 1  # the window passed: counting starts again
    found = await store.failures(["pair:x", "pair:y"], NOW)
    assert set(found) == {"pair:x"}


async def test_concurrent_failures_are_all_counted(store: CredentialStore) -> None:
    await asyncio.gather(*(store.add_failure("client:1.2.3.4", NOW, 3600) for _ in range(8)))

    found = await store.failures(["client:1.2.3.4"], NOW)

    assert found["client:1.2.3.4"].count == 8


async def test_a_block_is_never_shortened_and_clear_forgets_the_key(store: CredentialStore) -> None:
    await store.add_failure("account:a1", NOW, 900)
    await store.block("account:a1", NOW + timedelta(seconds=60))
    await store.block("account:a1", NOW + timedelta(seconds=10))

    found = await store.failures(["account:a1"], NOW)
    assert found["account:a1"].blocked_until == NOW + timedelta(seconds=60)

    await store.clear("account:a1")
    assert await store.failures(["account:a1"], NOW) == {}
