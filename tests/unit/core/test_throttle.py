"""Failed-login throttle (SPEC A10, A6): capped exponential backoff under three keys (the
client on the account, the client, the account), on the in-memory twin and a moved clock."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta
from typing import Any

import pytest

from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.throttle import RULES, Block, Rule, Throttle, subject
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts.authz import AccountView, CredentialVerified, Outcome
from authbus_shared.contracts.events import LoginThrottled

from .support import (
    ALICE,
    ALICE_PASSWORD,
    T0,
    CountingRunner,
    FakeClock,
    create_account,
    password,
    verdict_of,
)

RULE = {r.scope: r for r in RULES}
WHO = "acct-1"
CLIENT = "198.51.100.7"
S = timedelta(seconds=1)


def denied(outcome: Outcome, **fields: Any) -> CredentialVerified:
    return CredentialVerified(outcome=outcome, checked_at=T0, **fields)


@pytest.fixture
async def alice(accounts: AccountCommands) -> AccountView:
    return await create_account(accounts, ALICE, ALICE_PASSWORD)


async def fail(
    throttle: Throttle, times: int, who: str = WHO, client: str | None = CLIENT, now: datetime = T0
) -> list[Block]:
    """`times` failures at `now`; the blocks the last one started."""
    started: list[Block] = []
    for _ in range(times):
        started = await throttle.failed(who, client, now)
    return started


# --- the backoff rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "free", "cap"),
    [("pair", 3, 900), ("client", 20, 900), ("account", 10, 60)],
)
def test_backoff_is_free_up_to_free_then_doubles_from_one_second_up_to_the_cap(
    scope: str, free: int, cap: int
) -> None:
    rule = RULE[scope]

    assert [rule.block_for(n) for n in range(free + 1)] == [None] * (free + 1)
    assert [rule.block_for(free + n) for n in range(1, 6)] == [S, 2 * S, 4 * S, 8 * S, 16 * S]
    assert rule.block_for(free + 30) == cap * S
    assert rule.block_for(10**9) == cap * S  # no overflow however long an attack goes on


def test_block_reaches_the_cap_exactly_once_doubling_passes_it() -> None:
    rule = Rule("t", free=0, base=S, cap=timedelta(seconds=5), window=timedelta(hours=1))

    assert [rule.block_for(n) for n in range(1, 6)] == [S, 2 * S, 4 * S, 5 * S, 5 * S]


def test_an_attacker_can_lock_an_account_out_for_at_most_a_minute() -> None:
    """A10: the account-wide block (any client) is capped at 60 s."""
    assert RULE["account"].cap == timedelta(seconds=60)
    assert max(RULE["account"].block_for(n) or S for n in range(1000)) == timedelta(seconds=60)


@pytest.mark.parametrize(("left", "retry"), [(S / 1000, 1), (S, 1), (1.5 * S, 2), (60 * S, 60)])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(
    left: timedelta, retry: int
) -> None:
    assert Block("pair", T0 + left, 4).retry_after_s(T0) == retry


# --- counting -------------------------------------------------------------------------------


async def test_a_failure_counts_under_the_pair_the_client_and_the_account(
    store: MemoryStore, throttle: Throttle
) -> None:
    await fail(throttle, 2)

    counts = {key: f.count for key, f in store.throttle.items()}
    assert counts == {f"pair:{WHO}:{CLIENT}": 2, f"client:{CLIENT}": 2, f"account:{WHO}": 2}


async def test_failure_without_a_client_counts_only_under_the_account(
    store: MemoryStore, throttle: Throttle
) -> None:
    started = await fail(throttle, 11, client=None)

    assert list(store.throttle) == [f"account:{WHO}"]
    assert started == [Block("account", T0 + S, 11)]
    assert await throttle.blocked(WHO, None, T0) == Block("account", T0 + S, 11)


async def test_failed_returns_only_the_blocks_it_started(throttle: Throttle) -> None:
    assert await fail(throttle, 3) == []
    assert await fail(throttle, 1) == [Block("pair", T0 + S, 4)]
    assert await fail(throttle, 6) == [Block("pair", T0 + 64 * S, 10)]
    assert await fail(throttle, 1) == [
        Block("pair", T0 + 128 * S, 11),
        Block("account", T0 + S, 11),
    ]


# --- blocked --------------------------------------------------------------------------------


async def test_blocked_returns_the_longest_live_block(throttle: Throttle) -> None:
    await fail(throttle, 13)  # pair: 2^9 s; account: 4 s

    assert await throttle.blocked(WHO, CLIENT, T0) == Block("pair", T0 + 512 * S, 13)


async def test_block_ends_when_its_time_has_passed(throttle: Throttle) -> None:
    await fail(throttle, 5)  # the pair is blocked 2 s

    assert await throttle.blocked(WHO, CLIENT, T0 + 1.999 * S) == Block("pair", T0 + 2 * S, 5)
    assert await throttle.blocked(WHO, CLIENT, T0 + 2 * S) is None


async def test_a_pair_block_does_not_hold_back_another_client_or_another_account(
    throttle: Throttle,
) -> None:
    await fail(throttle, 5)

    assert await throttle.blocked(WHO, "203.0.113.9", T0) is None
    assert await throttle.blocked("acct-2", CLIENT, T0) is None


async def test_a_client_spraying_many_accounts_is_blocked_on_every_account(
    throttle: Throttle,
) -> None:
    for n in range(21):
        await throttle.failed(f"acct-{n}", CLIENT, T0)

    assert await throttle.blocked("acct-never-tried", CLIENT, T0) == Block("client", T0 + S, 21)
    assert await throttle.blocked("acct-never-tried", "203.0.113.9", T0) is None


async def test_many_clients_against_one_account_block_it_for_every_client(
    throttle: Throttle,
) -> None:
    for n in range(11):
        await throttle.failed(WHO, f"10.0.0.{n}", T0)

    assert await throttle.blocked(WHO, "203.0.113.9", T0) == Block("account", T0 + S, 11)
    assert await throttle.blocked(WHO, None, T0) == Block("account", T0 + S, 11)


# --- success and windows ------------------------------------------------------------------


async def test_success_clears_the_pair_only(store: MemoryStore, throttle: Throttle) -> None:
    await fail(throttle, 3)

    await throttle.succeeded(WHO, CLIENT)

    assert f"pair:{WHO}:{CLIENT}" not in store.throttle
    assert store.throttle[f"client:{CLIENT}"].count == 3
    assert store.throttle[f"account:{WHO}"].count == 3
    assert await fail(throttle, 3) == []  # the pair counts from zero again


async def test_success_without_a_client_clears_nothing(
    store: MemoryStore, throttle: Throttle
) -> None:
    await fail(throttle, 3, client=None)

    await throttle.succeeded(WHO, None)

    assert store.throttle[f"account:{WHO}"].count == 3


@pytest.mark.parametrize(("scope", "window"), [("pair", 3600), ("account", 900)])
async def test_failures_older_than_the_window_count_from_one_again(
    store: MemoryStore, throttle: Throttle, scope: str, window: int
) -> None:
    key = f"pair:{WHO}:{CLIENT}" if scope == "pair" else f"account:{WHO}"
    await fail(throttle, 3)

    await fail(throttle, 1, now=T0 + (window - 1) * S)
    within = store.throttle[key].count
    await fail(throttle, 1, now=T0 + window * S)

    assert (within, store.throttle[key].count) == (4, 1)


# --- unknown emails (A6) ------------------------------------------------------------------


def test_unknown_email_stands_as_a_hash_of_the_normalized_email() -> None:
    who = subject("nobody@example.io", None)

    assert who == "unknown-" + hashlib.sha256(b"nobody@example.io").hexdigest()[:32]
    assert "nobody" not in who
    assert who != subject("somebody@example.io", None)
    assert subject("nobody@example.io", "acct-1") == "acct-1"


async def test_unknown_emails_are_throttled_exactly_like_known_ones(throttle: Throttle) -> None:
    """A6: what the throttle does tells nothing about whether the account exists."""
    unknown = subject("nobody@example.io", None)
    for n in range(1, 16):
        known_started = await throttle.failed(WHO, CLIENT, T0 + n * S)
        unknown_started = await throttle.failed(unknown, CLIENT + "0", T0 + n * S)

        assert known_started == unknown_started
        known_block = await throttle.blocked(WHO, CLIENT, T0 + n * S)
        unknown_block = await throttle.blocked(unknown, CLIENT + "0", T0 + n * S)
        assert known_block == unknown_block


# --- as a login sees it (the verifier) ---------------------------------------------------


async def test_fourth_failure_from_one_client_starts_a_block_and_audits_it(
    verifier: Verifier, alice: AccountView
) -> None:
    for _ in range(3):
        assert (await verifier.verify(password(ALICE, "wrong!"), CLIENT)).audit[1:] == ()

    fourth = await verifier.verify(password(ALICE, "wrong!"), CLIENT)

    assert fourth.verdict == denied(Outcome.INVALID)
    assert fourth.audit[1:] == (
        LoginThrottled(
            scope="pair",
            until=T0 + timedelta(seconds=1),
            failures=4,
            account_id=alice.id,
            client=CLIENT,
        ),
    )


async def test_blocked_login_is_throttled_before_argon2_even_with_the_right_password(
    verifier: Verifier, clock: FakeClock, alice: AccountView
) -> None:
    for _ in range(4):  # the 4th failure blocks the pair for 1 s
        await verifier.verify(password(ALICE, "wrong!"), CLIENT)
    runner = CountingRunner()
    counted = dataclasses.replace(verifier, run_blocking=runner)

    throttled = await counted.verify(password(ALICE, ALICE_PASSWORD), CLIENT)
    clock.advance(timedelta(seconds=1))
    after = await verdict_of(counted, password(ALICE, ALICE_PASSWORD), CLIENT)

    assert throttled.verdict == denied(Outcome.THROTTLED, retry_after_s=1)
    assert throttled.audit == ()
    assert after.outcome is Outcome.VALID
    assert runner.calls == 1  # only the attempt after the block ran argon2


async def test_block_of_one_client_does_not_throttle_another(
    verifier: Verifier, alice: AccountView
) -> None:
    for _ in range(4):
        await verifier.verify(password(ALICE, "wrong!"), CLIENT)

    other = await verdict_of(verifier, password(ALICE, ALICE_PASSWORD), "203.0.113.9")

    assert other.outcome is Outcome.VALID


async def test_unknown_email_is_throttled_exactly_like_a_known_one(
    verifier: Verifier, alice: AccountView
) -> None:
    """A6: the throttle does not tell whether an email exists either."""
    known, unknown = [], []
    for _ in range(6):
        known.append(await verdict_of(verifier, password(ALICE, "wrong!"), CLIENT))
        unknown.append(await verdict_of(verifier, password("nobody@example.io", "wrong!"), CLIENT))

    assert known == unknown
    assert [v.outcome for v in known] == [Outcome.INVALID] * 4 + [Outcome.THROTTLED] * 2
