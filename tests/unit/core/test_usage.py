"""Credential uses reported by the api (SPEC A7, V1): last-used times written once per batch,
never lowered; each legacy key's use audited once per batch; times that cannot be written yet
wait, merged per credential, in a bounded buffer (issue #10 item 6)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from authbus_authz.core.ports import ApiKeyRecord, TokenRecord
from authbus_authz.core.usage import PendingUses, Usage
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts.authz import AuthMethod, password_credential_id
from authbus_shared.contracts.events import CredentialsUsed, KeyUsed, Use

from .support import T0

M = timedelta(minutes=1)


def token(token_id: str, last_used_at: datetime | None = None) -> TokenRecord:
    return TokenRecord(
        id=token_id,
        account_id="acct-1",
        name="ci",
        scopes=(),
        created_at=T0,
        expires_at=None,
        last_used_at=last_used_at,
    )


def key(key_id: str, last_used_at: datetime | None = None) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key_id,
        account_id="acct-1",
        name="legacy",
        prefix="abk_123456",
        digest="0" * 64,
        scopes=(),
        created_at=T0,
        expires_at=None,
        last_used_at=last_used_at,
    )


def use(credential_id: str, method: AuthMethod, at: datetime, count: int = 1) -> Use:
    return Use(
        credential_id=credential_id,
        method=method,
        account_id="acct-1",
        last_used_at=at,
        count=count,
    )


async def record(store: MemoryStore, *uses: Use) -> list[object]:
    return list(await Usage(store).record(CredentialsUsed(uses=uses)))


async def test_token_use_sets_its_last_used_time(store: MemoryStore) -> None:
    store.tokens["tok-1"] = token("tok-1")

    audit = await record(store, use("tok-1", AuthMethod.TOKEN, T0 + M))

    assert store.tokens["tok-1"].last_used_at == T0 + M
    assert audit == []  # token uses are not audited one by one


async def test_the_latest_of_several_uses_in_a_batch_wins(store: MemoryStore) -> None:
    store.tokens["tok-1"] = token("tok-1")

    await record(
        store,
        use("tok-1", AuthMethod.TOKEN, T0 + 3 * M),
        use("tok-1", AuthMethod.TOKEN, T0 + 5 * M),
        use("tok-1", AuthMethod.TOKEN, T0 + 4 * M),
    )

    assert store.tokens["tok-1"].last_used_at == T0 + 5 * M


async def test_last_used_time_is_never_lowered(store: MemoryStore) -> None:
    """Reports from several api instances arrive in any order."""
    store.tokens["tok-1"] = token("tok-1", last_used_at=T0 + 10 * M)
    store.api_keys["key-1"] = key("key-1", last_used_at=T0 + 10 * M)

    await record(
        store,
        use("tok-1", AuthMethod.TOKEN, T0 + 2 * M),
        use("key-1", AuthMethod.KEY, T0 + 2 * M),
    )

    assert store.tokens["tok-1"].last_used_at == T0 + 10 * M
    assert store.api_keys["key-1"].last_used_at == T0 + 10 * M


async def test_several_uses_of_one_key_make_one_key_used_with_the_sum_and_the_latest_time(
    store: MemoryStore,
) -> None:
    store.api_keys["key-1"] = key("key-1")

    audit = await record(
        store,
        use("key-1", AuthMethod.KEY, T0 + 4 * M, count=3),
        use("key-1", AuthMethod.KEY, T0 + 2 * M, count=5),
        use("key-1", AuthMethod.KEY, T0 + 3 * M, count=1),
    )

    assert audit == [KeyUsed(key_id="key-1", account_id="acct-1", last_used_at=T0 + 4 * M, uses=9)]
    assert store.api_keys["key-1"].last_used_at == T0 + 4 * M


async def test_each_key_used_gets_its_own_event(store: MemoryStore) -> None:
    store.api_keys["key-1"] = key("key-1")
    store.api_keys["key-2"] = key("key-2")

    audit = await record(
        store, use("key-1", AuthMethod.KEY, T0 + M), use("key-2", AuthMethod.KEY, T0 + 2 * M)
    )

    assert sorted((e.key_id, e.uses) for e in audit if isinstance(e, KeyUsed)) == [
        ("key-1", 1),
        ("key-2", 1),
    ]
    assert len(audit) == 2


async def test_password_uses_touch_nothing_and_are_not_audited(store: MemoryStore) -> None:
    store.tokens["tok-1"] = token("tok-1")
    before = dataclasses.replace(store.tokens["tok-1"])

    audit = await record(
        store, use(password_credential_id("acct-1"), AuthMethod.PASSWORD, T0 + M, count=7)
    )

    assert audit == []
    assert store.tokens == {"tok-1": before}
    assert store.api_keys == {}


async def test_uses_of_unknown_credentials_are_ignored(store: MemoryStore) -> None:
    """A credential deleted since the request: nothing to touch, no crash."""
    await record(store, use("gone", AuthMethod.TOKEN, T0 + M))

    assert store.tokens == {}


# times waiting for the store ---------------------------------------------------------------
def test_waiting_times_merge_per_credential_keeping_the_latest() -> None:
    pending = PendingUses(limit=10)

    pending.add({"tok-1": T0 + 2 * M}, {"key-1": T0 + M})
    pending.add({"tok-1": T0 + M, "tok-2": T0}, {"key-1": T0 + 3 * M})

    assert len(pending) == 3
    assert pending.take() == ({"tok-1": T0 + 2 * M, "tok-2": T0}, {"key-1": T0 + 3 * M})
    assert len(pending) == 0 and pending.take() == ({}, {})


def test_a_full_buffer_drops_new_credentials_but_still_merges_waiting_ones() -> None:
    pending = PendingUses(limit=2)
    pending.add({"tok-1": T0}, {"key-1": T0})

    dropped = pending.add({"tok-1": T0 + M, "tok-2": T0 + M}, {"key-2": T0 + M})

    assert dropped == 2
    assert pending.take() == ({"tok-1": T0 + M}, {"key-1": T0})


async def test_waiting_times_written_late_never_lower_a_newer_one(store: MemoryStore) -> None:
    """A retry after the outage may come after newer reports were written: `$max` wins."""
    store.tokens["tok-1"] = token("tok-1", last_used_at=T0 + 10 * M)
    pending = PendingUses(limit=10)
    pending.add({"tok-1": T0 + 2 * M}, {})

    await Usage(store).write(*pending.take())

    assert store.tokens["tok-1"].last_used_at == T0 + 10 * M
