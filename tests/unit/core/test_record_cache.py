"""authz's record cache (ADR 0019): a verification answered from cached records while the
changes feed is fresh, never past the revocation bound (SPEC A7, A12)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands
from authbus_authz.core.keyring import KeyService
from authbus_authz.core.passwords import Passwords
from authbus_authz.core.ports import Account
from authbus_authz.core.reads import Reads
from authbus_authz.core.records import RecordCache
from authbus_authz.core.throttle import Throttle
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts.authz import AccountView, Outcome
from authbus_shared.contracts.commands import AccountRef

from .support import (
    ALICE,
    ALICE_PASSWORD,
    AUDIENCE,
    ISSUER,
    FakeClock,
    api_key,
    bearer,
    create_account,
    create_key,
    issue_token,
    run_now,
)

PARTITIONS = 3
BOUND = timedelta(seconds=1)
SKEW = timedelta(milliseconds=250)
BEAT = timedelta(milliseconds=500)


class Reading:
    """Counts the store reads a verification makes."""

    def __init__(self, store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[str] = Counter()
        for name in ("token_by_id", "account_by_id", "api_key_by_digest"):
            monkeypatch.setattr(store, name, self._counted(name, getattr(store, name)))

    def _counted(
        self, name: str, read: Callable[[str], Awaitable[Any]]
    ) -> Callable[[str], Awaitable[Any]]:
        async def counted(rid: str) -> Any:
            self.counts[name] += 1
            return await read(rid)

        return counted

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def beat(cache: RecordCache, at: datetime) -> None:
    """Heartbeats stamped `at` read on every partition."""
    for partition in range(PARTITIONS):
        cache.heard(partition, at)


@pytest.fixture
def cache() -> RecordCache:
    return RecordCache(partitions=PARTITIONS, bound=BOUND, skew=SKEW)


@pytest.fixture
def reading(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> Reading:
    return Reading(store, monkeypatch)


@pytest.fixture
def cached(
    store: MemoryStore,
    key_service: KeyService,
    passwords: Passwords,
    throttle: Throttle,
    clock: FakeClock,
    cache: RecordCache,
    reading: Reading,
) -> Verifier:
    return Verifier(
        store=store,
        keys=key_service,
        passwords=passwords,
        throttle=throttle,
        run_blocking=run_now,
        clock=clock,
        issuer=ISSUER,
        audience=AUDIENCE,
        reads=Reads(store, clock, cache),
    )


@pytest.fixture
async def alice(accounts: AccountCommands) -> AccountView:
    return await create_account(accounts, ALICE, ALICE_PASSWORD)


async def outcome(verifier: Verifier, token: str) -> Outcome:
    return (await verifier.verify(bearer(token))).verdict.outcome


async def test_a_token_checked_again_reads_nothing_while_the_feed_is_fresh(
    cached: Verifier,
    issuing: CredentialCommands,
    alice: AccountView,
    clock: FakeClock,
    cache: RecordCache,
    reading: Reading,
) -> None:
    _, token = await issue_token(issuing, ALICE)
    beat(cache, clock())
    first = (await cached.verify(bearer(token))).verdict
    clock.advance(timedelta(milliseconds=300))
    again = (await cached.verify(bearer(token))).verdict

    assert first.outcome is again.outcome is Outcome.VALID
    assert reading.counts == {"token_by_id": 1, "account_by_id": 1}
    assert again.checked_at == first.checked_at  # as of the read, not of the answer


async def test_a_stale_feed_means_the_store_is_read(
    cached: Verifier,
    issuing: CredentialCommands,
    alice: AccountView,
    clock: FakeClock,
    cache: RecordCache,
    reading: Reading,
) -> None:
    _, token = await issue_token(issuing, ALICE)
    beat(cache, clock())
    await cached.verify(bearer(token))
    clock.advance(BOUND - SKEW + timedelta(milliseconds=1))  # no heartbeat read since
    await cached.verify(bearer(token))

    assert reading.total == 4


async def test_no_heartbeat_on_some_partition_means_no_cache(
    cached: Verifier,
    issuing: CredentialCommands,
    alice: AccountView,
    clock: FakeClock,
    cache: RecordCache,
    reading: Reading,
) -> None:
    _, token = await issue_token(issuing, ALICE)
    cache.heard(0, clock())
    cache.heard(1, clock())
    for _ in range(2):
        await cached.verify(bearer(token))

    assert reading.total == 4


@pytest.mark.parametrize("lag_ms", [0, 200, 600, 1100, 1600, 2500, 10_000])
async def test_a_revoked_token_is_refused_past_the_bound_however_far_the_feed_lags(
    cached: Verifier,
    issuing: CredentialCommands,
    alice: AccountView,
    clock: FakeClock,
    cache: RecordCache,
    store: MemoryStore,
    lag_ms: int,
) -> None:
    """The feed as Kafka holds it: heartbeats every 500 ms on every partition, the revocation
    appended before its acknowledgement at `t`. This authz reads it `lag_ms` behind. Every
    check after `t + bound + skew` must say revoked (SPEC A12)."""
    issued, token = await issue_token(issuing, ALICE)
    start = clock()
    feed: list[tuple[datetime, str]] = [(start + BEAT * i, "beat") for i in range(40)]
    t = start + timedelta(seconds=5, milliseconds=100)
    feed.append((t, "revoked"))
    feed.sort(key=lambda item: item[0])
    lag = timedelta(milliseconds=lag_ms)
    read, revoked = 0, False
    answers: list[tuple[datetime, Outcome]] = []
    while clock() < start + timedelta(seconds=15):
        while read < len(feed) and feed[read][0] <= clock() - lag:
            at, what = feed[read]
            if what == "beat":
                beat(cache, at)
            else:
                cache.token_revoked(issued.token_id)
            read += 1
        if clock() >= t and not revoked:
            await issuing.revoke_token(issued.token_id)  # acknowledged at `t`
            revoked = True
        answers.append((clock(), await outcome(cached, token)))
        clock.advance(timedelta(milliseconds=50))

    late = [(at, o) for at, o in answers if at > t + BOUND + SKEW]
    assert late and all(o is Outcome.REVOKED for _, o in late), late
    assert any(o is Outcome.VALID for _, o in answers)


async def test_a_revocation_during_a_store_read_is_not_undone_by_its_answer(
    cached: Verifier,
    issuing: CredentialCommands,
    alice: AccountView,
    clock: FakeClock,
    cache: RecordCache,
    store: MemoryStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued, token = await issue_token(issuing, ALICE)
    beat(cache, clock())
    read = store.token_by_id
    reading_now, go_on = asyncio.Event(), asyncio.Event()

    async def slow(token_id: str) -> Any:
        found = await read(token_id)  # read before the revocation...
        if not reading_now.is_set():  # (only the verification's read waits)
            reading_now.set()
            await go_on.wait()
        return found

    monkeypatch.setattr(store, "token_by_id", slow)
    first = asyncio.create_task(cached.verify(bearer(token)))
    await reading_now.wait()
    await issuing.revoke_token(issued.token_id)
    cache.token_revoked(issued.token_id)  # ...its event read before the answer
    go_on.set()
    assert (await first).verdict.outcome is Outcome.VALID  # in flight with the change
    monkeypatch.setattr(store, "token_by_id", read)

    assert await outcome(cached, token) is Outcome.REVOKED


async def test_an_account_change_drops_the_account(
    cached: Verifier,
    issuing: CredentialCommands,
    accounts: AccountCommands,
    alice: AccountView,
    clock: FakeClock,
    cache: RecordCache,
) -> None:
    _, token = await issue_token(issuing, ALICE)
    beat(cache, clock())
    assert await outcome(cached, token) is Outcome.VALID
    await accounts.set_disabled(AccountRef(email=ALICE), True)
    cache.account_changed(alice.id)

    assert await outcome(cached, token) is Outcome.DISABLED


async def test_a_revoked_key_is_dropped_by_its_id(
    cached: Verifier,
    issuing: CredentialCommands,
    alice: AccountView,
    clock: FakeClock,
    cache: RecordCache,
    reading: Reading,
) -> None:
    issued, key = await create_key(issuing, ALICE)
    beat(cache, clock())
    assert (await cached.verify(api_key(ALICE, key))).verdict.outcome is Outcome.VALID
    assert (await cached.verify(api_key(ALICE, key))).verdict.outcome is Outcome.VALID
    assert reading.counts["api_key_by_digest"] == 1
    await issuing.revoke_key(issued.key_id)
    cache.key_revoked(issued.key_id)

    assert (await cached.verify(api_key(ALICE, key))).verdict.outcome is Outcome.REVOKED


async def test_no_record_outlives_its_ttl(
    cached: Verifier,
    issuing: CredentialCommands,
    alice: AccountView,
    clock: FakeClock,
    cache: RecordCache,
    reading: Reading,
) -> None:
    _, token = await issue_token(issuing, ALICE)
    beat(cache, clock())
    await cached.verify(bearer(token))
    clock.advance(cache.ttl)
    beat(cache, clock())
    await cached.verify(bearer(token))

    assert reading.total == 4


def test_the_oldest_records_go_first_when_full() -> None:
    cache = RecordCache(partitions=1, max_entries=2)
    at = datetime(2030, 1, 1).astimezone()
    cache.heard(0, at)
    for n in range(3):
        cache.put("account", f"a{n}", _account(f"a{n}", at), at, cache.generation)

    assert len(cache) == 2
    assert cache.get("account", "a0", at) is None
    assert cache.get("account", "a2", at) is not None


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = RecordCache(partitions=1, max_entries=0)
    at = datetime(2030, 1, 1).astimezone()
    cache.heard(0, at)
    cache.put("account", "a", _account("a", at), at, cache.generation)

    assert len(cache) == 0
    assert not cache.usable(at)


def _account(account_id: str, at: datetime) -> Account:
    return Account(
        id=account_id,
        email=f"{account_id}@example.io",
        email_key=f"{account_id}@example.io",
        password_hash="x",
        locale=None,
        created_at=at,
        credentials_changed_at=at,
    )
