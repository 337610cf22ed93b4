"""Scope grants (SPEC A8, G4, V1): operators grant an account its scopes; a credential's scopes
apply only inside the account's current grant; a password carries the whole grant."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import pytest

from authbus_api.core.verdict_cache import CredentialDigest, VerdictCache
from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands
from authbus_authz.core.ports import Account, TokenRecord
from authbus_authz.core.scopes import effective, ungranted
from authbus_authz.core.tokens import sign
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts.authz import AccountView, Outcome
from authbus_shared.contracts.commands import (
    AccountInfo,
    AccountRef,
    AccountScopes,
    CommandRejected,
    GrantScopes,
)
from authbus_shared.contracts.events import AccountChanged

from .support import (
    ALICE,
    ALICE_PASSWORD,
    AUDIENCE,
    ISSUER,
    T0,
    FakeClock,
    api_key,
    bearer,
    create_account,
    create_key,
    grant,
    issue_token,
    password,
    verdict_of,
)

ME = AccountRef(email=ALICE)
T = TypeVar("T")


@pytest.fixture
async def alice(accounts: AccountCommands) -> AccountView:
    return await create_account(accounts, ALICE, ALICE_PASSWORD)


async def revoke(accounts: AccountCommands, *scopes: str) -> None:
    done = await accounts.grant_scopes(GrantScopes(account=ME, remove=scopes))
    assert isinstance(done.reply, AccountScopes), done.reply


# --- the operators' command ------------------------------------------------------------------


async def test_granting_replies_the_sorted_grant_and_broadcasts_and_audits_scopes_changed(
    accounts: AccountCommands, store: MemoryStore, alice: AccountView
) -> None:
    done = await accounts.grant_scopes(GrantScopes(account=ME, add=("write", "read", "read")))

    assert done.reply == AccountScopes(account_id=alice.id, scopes=("read", "write"))
    changed = AccountChanged(account_id=alice.id, change="scopes_changed", at=T0)
    assert done.changes == done.audit == (changed,)
    assert set(store.accounts[alice.id].scopes) == {"read", "write"}


async def test_revoking_removes_only_the_named_scopes_and_adding_keeps_the_others(
    accounts: AccountCommands, alice: AccountView
) -> None:
    await grant(accounts, ALICE, "read", "write", "admin")

    removed = await accounts.grant_scopes(GrantScopes(account=ME, remove=("admin", "never")))
    added = await accounts.grant_scopes(
        GrantScopes(account=AccountRef(account_id=alice.id), add=("billing",))
    )

    assert removed.reply == AccountScopes(account_id=alice.id, scopes=("read", "write"))
    assert added.reply == AccountScopes(account_id=alice.id, scopes=("billing", "read", "write"))


async def test_exactly_replaces_the_whole_grant(
    accounts: AccountCommands, alice: AccountView
) -> None:
    await grant(accounts, ALICE, "read", "write")

    done = await accounts.grant_scopes(GrantScopes(account=ME, exactly=("admin", "admin")))
    emptied = await accounts.grant_scopes(GrantScopes(account=ME, exactly=()))

    assert done.reply == AccountScopes(account_id=alice.id, scopes=("admin",))
    assert emptied.reply == AccountScopes(account_id=alice.id, scopes=())
    assert emptied.changes != ()  # an emptied grant is a change every api must hear of


async def test_an_order_that_changes_nothing_is_still_broadcast(
    accounts: AccountCommands, alice: AccountView
) -> None:
    """A concurrent order may have changed the grant between our read and our write: the
    event is what makes every api drop what it cached, so it is never skipped."""
    done = await accounts.grant_scopes(GrantScopes(account=ME, remove=("admin",)))

    assert [type(e) for e in done.changes] == [AccountChanged]


async def test_the_change_time_is_read_after_the_write(
    accounts: AccountCommands,
    store: MemoryStore,
    clock: FakeClock,
    alice: AccountView,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The api drops a verdict whose `checked_at` is not after the event's `at`: a verification
    that read the old grant just before the write must fall before `at`."""
    written = store.change_scopes

    async def slow_write(
        account_id: str, add: tuple[str, ...], remove: tuple[str, ...]
    ) -> Account | None:
        after = await written(account_id, add, remove)
        clock.advance(timedelta(milliseconds=7))
        return after

    monkeypatch.setattr(store, "change_scopes", slow_write)

    done = await accounts.grant_scopes(GrantScopes(account=ME, add=("read",)))

    (event,) = done.changes
    assert isinstance(event, AccountChanged)
    assert event.at == T0 + timedelta(milliseconds=7)


async def test_a_verdict_read_before_a_grant_change_is_not_kept_by_the_api_cache(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    clock: FakeClock,
    alice: AccountView,
) -> None:
    """End to end through the api's cache: cached before the change, dropped by the event;
    in flight across the change (read at the same instant as the write), answered but not
    cached."""
    await grant(accounts, ALICE, "admin")
    _, token = await issue_token(issuing, ALICE, scopes=("admin",))
    cache = VerdictCache(max_entries=10, ttl=timedelta(seconds=60), negative_ttl=timedelta(0))
    digest = CredentialDigest()(bearer(token))
    cache.admit(digest, await verdict_of(verifier, bearer(token)), clock())
    in_flight = await verdict_of(verifier, bearer(token))

    done = await accounts.grant_scopes(GrantScopes(account=ME, remove=("admin",)))
    (event,) = done.changes
    assert isinstance(event, AccountChanged)
    cache.account_changed(event.account_id, event.at, clock())

    assert cache.get(digest, clock()) is None
    assert cache.admit(digest, in_flight, clock()).scopes == ("admin",)  # answered once
    assert cache.get(digest, clock()) is None  # not kept
    assert (await verdict_of(verifier, bearer(token))).scopes == ()


@pytest.mark.parametrize(
    ("order", "detail"),
    [
        (GrantScopes(account=ME, add=("READ",)), "scopes"),
        (GrantScopes(account=ME, remove=("bad scope",)), "scopes"),
        (GrantScopes(account=ME, exactly=("",)), "scopes"),
        (GrantScopes(account=ME, add=("read",), exactly=("read",)), "exactly replaces"),
        (GrantScopes(account=ME, add=("read",), remove=("read",)), "both added and removed"),
        (GrantScopes(account=ME, add=tuple(f"s{i}" for i in range(100))), "at most 100"),
    ],
    ids=["upper", "space", "empty", "exactly-and-add", "add-and-remove", "over-100"],
)
async def test_an_order_that_cannot_be_done_as_asked_is_refused_and_changes_nothing(
    accounts: AccountCommands,
    store: MemoryStore,
    alice: AccountView,
    order: GrantScopes,
    detail: str,
) -> None:
    await grant(accounts, ALICE, "read")  # with the 100 added, 101 would be granted

    done = await accounts.grant_scopes(order)

    assert isinstance(done.reply, CommandRejected)
    assert (done.reply.reason, done.changes) == ("invalid_input", ())
    assert detail in done.reply.detail
    assert store.accounts[alice.id].scopes == ("read",)


async def test_granting_to_an_unknown_account_is_refused(accounts: AccountCommands) -> None:
    order = GrantScopes(account=AccountRef(email="nobody@example.io"), add=("read",))

    done = await accounts.grant_scopes(order)

    assert (done.reply, done.changes) == (CommandRejected(reason="unknown_account"), ())


async def test_show_gives_the_account_its_grant_and_its_state(
    accounts: AccountCommands, store: MemoryStore, alice: AccountView
) -> None:
    await grant(accounts, ALICE, "write", "read")

    done = await accounts.describe(ME)
    unknown = await accounts.describe(AccountRef(account_id="nope"))

    assert done.reply == AccountInfo(
        account=alice, scopes=("read", "write"), totp_enabled=False, disabled=False, created_at=T0
    )
    assert ALICE_PASSWORD not in done.reply.model_dump_json()
    assert store.accounts[alice.id].password_hash not in done.reply.model_dump_json()
    assert (done.changes, done.audit) == ((), ())
    assert unknown.reply == CommandRejected(reason="unknown_account")


# --- effective scopes at verification ----------------------------------------------------------


def test_effective_scopes_keep_the_credentials_order_inside_the_grant() -> None:
    assert effective(("write", "admin", "read"), ("read", "write")) == ("write", "read")
    assert effective(("admin",), ()) == ()


def test_ungranted_names_what_is_outside_the_grant_or_the_asking_credential() -> None:
    assert ungranted(("b", "a", "c"), ("a",)) == ("b", "c")
    assert ungranted(("a", "b"), ("a", "b"), within=("a",)) == ("b",)
    assert ungranted(("a",), ("a", "b"), within=None) == ()
    assert ungranted((), (), within=()) == ()


async def test_a_token_carries_only_the_scopes_its_account_is_still_granted(
    accounts: AccountCommands, issuing: CredentialCommands, verifier: Verifier, alice: AccountView
) -> None:
    await grant(accounts, ALICE, "read", "write")
    _, token = await issue_token(issuing, ALICE, scopes=("read", "write"))

    await revoke(accounts, "write")
    narrowed = await verdict_of(verifier, bearer(token))
    await grant(accounts, ALICE, "write")
    restored = await verdict_of(verifier, bearer(token))

    assert (narrowed.outcome, narrowed.scopes) == (Outcome.VALID, ("read",))
    assert restored.scopes == ("read", "write")


async def test_a_key_carries_only_the_scopes_its_account_is_still_granted(
    accounts: AccountCommands, issuing: CredentialCommands, verifier: Verifier, alice: AccountView
) -> None:
    await grant(accounts, ALICE, "read", "write")
    _, key = await create_key(issuing, ALICE, scopes=("read", "write"))

    await revoke(accounts, "read", "write")
    verdict = await verdict_of(verifier, api_key(ALICE, key))

    assert (verdict.outcome, verdict.scopes) == (Outcome.VALID, ())


async def test_a_token_that_gave_itself_scopes_before_grants_existed_loses_them(
    accounts: AccountCommands,
    verifier: Verifier,
    store: MemoryStore,
    issuing: CredentialCommands,
    alice: AccountView,
) -> None:
    """Migration (ADR 0011): a self-service token made with `admin` before this change (its
    record has no digest, only the hint) keeps authenticating, without `admin`, until an
    operator grants it."""
    token = sign(
        issuing.keys.ring,
        issuer=ISSUER,
        audience=AUDIENCE,
        token_id="old-self-made",
        account_id=alice.id,
        scopes=("admin", "read"),
        issued_at=T0,
        expires_at=None,
        amr=("pwd",),
    )
    await store.insert_token(
        TokenRecord(
            id="old-self-made",
            account_id=alice.id,
            name="mine",
            scopes=("admin", "read"),
            created_at=T0,
            expires_at=None,
            amr=("pwd",),
            hint=token[-6:],
        )
    )

    before = await verdict_of(verifier, bearer(token))
    await grant(accounts, ALICE, "read")
    granted_read = await verdict_of(verifier, bearer(token))

    assert (before.outcome, before.scopes) == (Outcome.VALID, ())
    assert granted_read.scopes == ("read",)


async def test_a_password_carries_the_accounts_whole_grant(
    accounts: AccountCommands, verifier: Verifier, alice: AccountView
) -> None:
    ungranted_verdict = await verdict_of(verifier, password(ALICE, ALICE_PASSWORD))
    await grant(accounts, ALICE, "write", "read")

    verdict = await verdict_of(verifier, password(ALICE, ALICE_PASSWORD))

    assert ungranted_verdict.scopes == ()
    assert (verdict.outcome, verdict.scopes) == (Outcome.VALID, ("read", "write"))


async def test_a_password_verdict_is_stamped_before_the_account_is_read(
    verifier: Verifier, clock: FakeClock, alice: AccountView
) -> None:
    """argon2 runs after the read: were the verdict stamped after it, one that saw the grant
    before a change could look newer than the change, and the api would cache it."""

    async def slow_argon2(fn: Callable[[], T], /) -> T:
        clock.advance(timedelta(milliseconds=40))
        return fn()

    slow = dataclasses.replace(verifier, run_blocking=slow_argon2)

    verdict = await verdict_of(slow, password(ALICE, ALICE_PASSWORD))

    assert (verdict.outcome, verdict.checked_at) == (Outcome.VALID, T0)
