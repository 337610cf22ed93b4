"""Legacy API keys: create, list, revoke (SPEC A3, A7, A9, V1). Deprecated; stored only as a
SHA-256 digest; shown once, sealed to the asker."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands, Request
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared import apikeys
from authbus_shared.contracts.authz import AccountView, AuthMethod, Outcome
from authbus_shared.contracts.commands import AccountRef, CommandRejected, KeyList, NewKey
from authbus_shared.contracts.events import KeyIssued, KeyRevoked
from authbus_shared.sealing import SealingKey

from .support import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    BOB_PASSWORD,
    T0,
    FakeClock,
    api_key,
    create_account,
    create_key,
    grant,
    request,
    verdict_of,
)


@pytest.fixture
async def alice(accounts: AccountCommands) -> AccountView:
    return await create_account(accounts, ALICE, ALICE_PASSWORD)


async def test_created_key_opens_from_the_reply_and_is_well_formed(
    accounts: AccountCommands, issuing: CredentialCommands, alice: AccountView
) -> None:
    await grant(accounts, ALICE, "read", "admin")
    reply_key = SealingKey.generate()

    done = await issuing.create_key(
        AccountRef(account_id=alice.id), request(reply_key, scopes=("read", "read", "admin"))
    )

    assert isinstance(done.reply, NewKey)
    key = reply_key.open(done.reply.sealed_key).decode()
    assert apikeys.well_formed(key)
    issued = done.reply.key
    assert (issued.account_id, issued.name, issued.scopes) == (alice.id, "ci", ("admin", "read"))
    assert issued.prefix == apikeys.display_prefix(key)
    assert done.audit == (issued,)
    assert done.changes == ()
    assert key not in done.reply.model_dump_json()  # only sealed (A9)
    assert not {"key", "secret", "sealed_key"} & set(KeyIssued.model_fields)


async def test_created_key_verifies_as_a_valid_deprecated_key_of_its_account(
    accounts: AccountCommands, issuing: CredentialCommands, verifier: Verifier, alice: AccountView
) -> None:
    """A3: `EMAIL/key` with the key; marked deprecated for the api's Deprecation header."""
    await grant(accounts, ALICE, "read")
    issued, key = await create_key(issuing, ALICE, scopes=("read",))

    verdict = await verdict_of(verifier, api_key("alice@example.io", key))

    assert verdict.outcome is Outcome.VALID
    assert verdict.method is AuthMethod.KEY
    assert verdict.deprecated is True
    assert verdict.credential_id == issued.key_id
    assert verdict.account is not None
    assert verdict.account.id == alice.id
    assert verdict.scopes == ("read",)


@pytest.mark.parametrize("email", [BOB, "nobody@example.io", ""])
async def test_key_with_another_email_is_invalid(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    alice: AccountView,
    email: str,
) -> None:
    await create_account(accounts, BOB, BOB_PASSWORD)
    _, key = await create_key(issuing, ALICE)

    verdict = await verdict_of(verifier, api_key(email, key))

    assert (verdict.outcome, verdict.account) == (Outcome.INVALID, None)


async def test_key_is_stored_only_as_its_digest(
    issuing: CredentialCommands, store: MemoryStore, alice: AccountView
) -> None:
    """A9: no raw key anywhere in the store; only SHA-256 and a short display prefix."""
    issued, key = await create_key(issuing, ALICE)

    record = store.api_keys[issued.key_id]
    assert record.digest == apikeys.digest(key)
    assert record.prefix == key[: len(record.prefix)]
    assert len(record.prefix) <= 10
    for value in dataclasses.asdict(record).values():
        assert key not in str(value)
    assert key not in repr(store.api_keys)
    assert key[len(record.prefix) :] not in repr(store.api_keys)


async def test_key_creation_can_be_switched_off(
    issuing: CredentialCommands, store: MemoryStore, alice: AccountView
) -> None:
    no_keys = dataclasses.replace(issuing, keys_creation_enabled=False)

    done = await no_keys.create_key(AccountRef(email=ALICE), request())

    assert done.reply == CommandRejected(reason="keys_disabled")
    assert store.api_keys == {}


async def test_key_for_an_unknown_account_is_rejected(
    issuing: CredentialCommands, store: MemoryStore
) -> None:
    done = await issuing.create_key(AccountRef(email="nobody@example.io"), request())

    assert done.reply == CommandRejected(reason="unknown_account")
    assert store.api_keys == {}


@pytest.mark.parametrize(
    ("after", "outcome"), [(59 * 60 + 59, Outcome.VALID), (3600, Outcome.EXPIRED)]
)
async def test_key_is_expired_from_its_expiry_on(
    issuing: CredentialCommands,
    verifier: Verifier,
    clock: FakeClock,
    alice: AccountView,
    after: int,
    outcome: Outcome,
) -> None:
    issued, key = await create_key(issuing, ALICE, expires_in=timedelta(hours=1))
    clock.advance(timedelta(seconds=after))

    assert issued.expires_at == T0 + timedelta(hours=1)
    assert (await verdict_of(verifier, api_key(ALICE, key))).outcome is outcome


async def test_key_list_shows_prefixes_never_keys(
    accounts: AccountCommands, issuing: CredentialCommands, alice: AccountView
) -> None:
    await create_account(accounts, BOB, BOB_PASSWORD)
    issued, key = await create_key(issuing, ALICE)
    await create_key(issuing, BOB)

    done = await issuing.list_keys(AccountRef(account_id=alice.id))

    assert isinstance(done.reply, KeyList)
    assert [(k.key_id, k.prefix, k.deprecated) for k in done.reply.keys] == [
        (issued.key_id, issued.prefix, True)
    ]
    assert key not in done.reply.model_dump_json()


async def test_revoke_key_broadcasts_and_the_key_verifies_as_revoked(
    issuing: CredentialCommands, verifier: Verifier, clock: FakeClock, alice: AccountView
) -> None:
    issued, key = await create_key(issuing, ALICE)
    clock.advance(timedelta(minutes=2))

    done = await issuing.revoke_key(issued.key_id, account_id=alice.id)

    expected = KeyRevoked(
        key_id=issued.key_id, account_id=alice.id, revoked_at=T0 + timedelta(minutes=2)
    )
    assert done.reply == expected
    assert done.audit == done.changes == (expected,)
    assert (await verdict_of(verifier, api_key(ALICE, key))).outcome is Outcome.REVOKED


@pytest.mark.parametrize("foreign", [True, False], ids=["another-accounts", "unknown"])
async def test_revoking_a_key_that_is_not_yours_is_rejected_as_unknown(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    alice: AccountView,
    foreign: bool,
) -> None:
    bob = await create_account(accounts, BOB, BOB_PASSWORD)
    issued, key = await create_key(issuing, ALICE)

    done = await issuing.revoke_key(issued.key_id if foreign else "no-such-key", account_id=bob.id)

    assert done.reply == CommandRejected(reason="unknown_key")
    assert (done.audit, done.changes) == ((), ())
    assert (await verdict_of(verifier, api_key(ALICE, key))).outcome is Outcome.VALID


# --- scopes only inside the grant, and inside the asking credential (A8) ---------------------


def made_by(within: tuple[str, ...] | None, *scopes: str) -> Request:
    """A key request as the api sends it: `within` the caller's token's or key's scopes."""
    return dataclasses.replace(request(scopes=scopes), within=within)


@pytest.mark.parametrize(
    ("within", "asked", "missing"),
    [
        (None, ("read", "write", "admin"), "admin"),  # an operator, or a password: the grant
        (("read",), ("read", "write"), "write"),  # a token with `read` cannot mint `write`
        ((), ("read",), "read"),  # a token without scopes mints keys without scopes
        (("read", "admin"), ("admin",), "admin"),  # nor can it pass on what is not granted
    ],
    ids=["grant", "caller", "caller-without-scopes", "caller-beyond-grant"],
)
async def test_a_key_beyond_the_grant_or_the_asking_credential_is_refused(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    store: MemoryStore,
    alice: AccountView,
    within: tuple[str, ...] | None,
    asked: tuple[str, ...],
    missing: str,
) -> None:
    await grant(accounts, ALICE, "read", "write")

    done = await issuing.create_key(AccountRef(email=ALICE), made_by(within, *asked))

    assert done.reply == CommandRejected(reason="scope_not_granted", detail=missing)
    assert (done.audit, store.api_keys) == ((), {})


@pytest.mark.parametrize(
    ("within", "asked"),
    [(None, ("read", "write")), (("read", "write", "admin"), ("write",)), ((), ())],
    ids=["password", "inside-both", "nothing-asked"],
)
async def test_a_key_inside_the_grant_and_the_asking_credential_is_created(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    alice: AccountView,
    within: tuple[str, ...] | None,
    asked: tuple[str, ...],
) -> None:
    await grant(accounts, ALICE, "read", "write")

    done = await issuing.create_key(AccountRef(account_id=alice.id), made_by(within, *asked))

    assert isinstance(done.reply, NewKey)
    assert done.reply.key.scopes == asked
