"""Account commands (SPEC A2, A5, A9, G4, V1): create, change password, disable. Everything that
can turn a valid credential invalid is broadcast (`AccountChanged`) and audited."""

from __future__ import annotations

from datetime import timedelta

import pytest

from authbus_authz.core.accounts import AccountCommands, valid_email
from authbus_authz.core.issuing import CredentialCommands
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts.authz import AccountView, CredentialKind, Outcome
from authbus_shared.contracts.commands import AccountRef, CommandRejected, SealedPasswordChange
from authbus_shared.contracts.events import AccountChanged, AccountCreated, LoginFailed

from .support import (
    ALICE,
    ALICE_PASSWORD,
    STEP,
    T0,
    FakeClock,
    api_key,
    basic_token,
    bearer,
    code_at,
    create_account,
    create_key,
    issue_token,
    password,
    turn_on_totp,
    verdict_of,
    wrong_code,
)

NEW_PASSWORD = "a brand new passphrase"
CLIENT = "198.51.100.7"


@pytest.fixture
async def alice(accounts: AccountCommands) -> AccountView:
    return await create_account(accounts, ALICE, ALICE_PASSWORD)


def change(
    current: str = ALICE_PASSWORD, new: str = NEW_PASSWORD, code: str | None = None
) -> SealedPasswordChange:
    return SealedPasswordChange(email=ALICE, current=current, new=new, totp_code=code)


# --- create account ---------------------------------------------------------------------------


async def test_create_account_stores_an_argon2id_hash_and_audits(
    accounts: AccountCommands, store: MemoryStore
) -> None:
    done = await accounts.create_account(ALICE, ALICE_PASSWORD, locale=None)

    assert isinstance(done.reply, AccountCreated)
    assert done.audit == (done.reply,)
    assert done.changes == ()
    stored = store.accounts[done.reply.account.id]
    assert (stored.email, stored.email_key, stored.locale) == (ALICE, "alice@example.io", "en")
    assert stored.password_hash.startswith("$argon2id$")
    assert ALICE_PASSWORD not in stored.password_hash
    assert stored.created_at == stored.credentials_changed_at == T0
    assert (stored.disabled, stored.totp_enabled, stored.totp_secret) == (False, False, None)


async def test_create_account_keeps_the_given_locale(accounts: AccountCommands) -> None:
    done = await accounts.create_account(ALICE, ALICE_PASSWORD, locale="fr")

    assert isinstance(done.reply, AccountCreated)
    assert done.reply.account.locale == "fr"


@pytest.mark.parametrize(
    ("first", "second"), [("A@x.io", "a@X.io"), ("a@x.io", "A@X.IO"), ("a@x.io", "a@x.io")]
)
async def test_email_uniqueness_is_case_insensitive(
    accounts: AccountCommands, store: MemoryStore, first: str, second: str
) -> None:
    await create_account(accounts, first, ALICE_PASSWORD)

    done = await accounts.create_account(second, "a different password", locale=None)

    assert done.reply == CommandRejected(reason="email_taken")
    assert done.audit == ()
    assert len(store.accounts) == 1


@pytest.mark.parametrize(
    "email", ["", "alice", "@example.io", "alice@", "alice@localhost", "al ice@example.io"]
)
async def test_invalid_email_is_rejected(
    accounts: AccountCommands, store: MemoryStore, email: str
) -> None:
    done = await accounts.create_account(email, ALICE_PASSWORD, locale=None)

    assert done.reply == CommandRejected(reason="invalid_input", detail="email")
    assert store.accounts == {}
    assert not valid_email(email)


@pytest.mark.parametrize(
    ("length", "accepted"), [(7, False), (8, True), (1024, True), (1025, False)]
)
async def test_password_must_be_8_to_1024_characters(
    accounts: AccountCommands, length: int, accepted: bool
) -> None:
    done = await accounts.create_account(ALICE, "p" * length, locale=None)

    if accepted:
        assert isinstance(done.reply, AccountCreated)
    else:
        assert done.reply == CommandRejected(reason="weak_password", detail="8 to 1024 characters")


# --- change password (A9) --------------------------------------------------------------------


async def test_change_password_broadcasts_and_audits_account_changed(
    accounts: AccountCommands, store: MemoryStore, clock: FakeClock, alice: AccountView
) -> None:
    clock.advance(timedelta(minutes=1))
    before = store.accounts[alice.id].password_hash

    done = await accounts.change_password(change(), CLIENT)

    expected = AccountChanged(
        account_id=alice.id, change="password_changed", at=T0 + timedelta(minutes=1)
    )
    assert done.reply == expected
    assert done.audit == done.changes == (expected,)
    stored = store.accounts[alice.id]
    assert stored.password_hash != before
    assert stored.credentials_changed_at == T0 + timedelta(minutes=1)
    assert NEW_PASSWORD not in done.reply.model_dump_json()


async def test_after_a_password_change_older_tokens_are_revoked_and_only_the_new_password_works(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    clock: FakeClock,
    alice: AccountView,
) -> None:
    _, old_token = await issue_token(issuing, ALICE)
    clock.advance(timedelta(seconds=1))
    await accounts.change_password(change(), CLIENT)
    clock.advance(timedelta(seconds=1))
    _, new_token = await issue_token(issuing, ALICE)

    assert (await verdict_of(verifier, bearer(old_token))).outcome is Outcome.REVOKED
    assert (await verdict_of(verifier, bearer(new_token))).outcome is Outcome.VALID
    assert (await verdict_of(verifier, password(ALICE, NEW_PASSWORD))).outcome is Outcome.VALID
    assert (await verdict_of(verifier, password(ALICE, ALICE_PASSWORD))).outcome is Outcome.INVALID


async def test_a_token_issued_earlier_in_the_same_second_as_a_password_change_is_revoked(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    clock: FakeClock,
    alice: AccountView,
) -> None:
    """A JWT's `iat` has whole seconds, the change time does not: "issued before the change"
    must not round a token issued 300 ms before it into "after"."""
    clock.advance(timedelta(milliseconds=200))
    _, before = await issue_token(issuing, ALICE)
    clock.advance(timedelta(milliseconds=300))
    await accounts.change_password(change(), CLIENT)
    clock.advance(timedelta(milliseconds=300))
    _, after = await issue_token(issuing, ALICE)

    assert (await verdict_of(verifier, bearer(after))).outcome is Outcome.VALID
    assert (await verdict_of(verifier, bearer(before))).outcome is Outcome.REVOKED


async def test_change_password_with_the_wrong_current_one_is_refused_and_audited(
    accounts: AccountCommands, store: MemoryStore, alice: AccountView
) -> None:
    before = store.accounts[alice.id]

    done = await accounts.change_password(change(current="not the password"), CLIENT)

    assert done.reply == CommandRejected(reason="invalid_credentials")
    assert done.audit == (
        LoginFailed(
            kind=CredentialKind.PASSWORD, reason="invalid", account_id=alice.id, client=CLIENT
        ),
    )
    assert done.changes == ()
    assert store.accounts[alice.id] == before


async def test_change_to_a_too_short_password_is_refused(
    accounts: AccountCommands, store: MemoryStore, alice: AccountView
) -> None:
    """(A longer one than 1024 characters never gets here: the sealed contract refuses it.)"""
    before = store.accounts[alice.id]

    done = await accounts.change_password(change(new="p" * 7), CLIENT)

    assert done.reply == CommandRejected(reason="weak_password", detail="8 to 1024 characters")
    assert store.accounts[alice.id] == before


async def test_change_password_is_throttled_after_repeated_wrong_passwords(
    accounts: AccountCommands, store: MemoryStore, alice: AccountView
) -> None:
    """A10: every command that takes a password counts towards the same login throttle."""
    for _ in range(4):
        await accounts.change_password(change(current="not the password"), CLIENT)
    before = store.accounts[alice.id]

    done = await accounts.change_password(change(), CLIENT)

    assert done.reply == CommandRejected(reason="throttled", retry_after_s=1)
    assert store.accounts[alice.id] == before


async def test_change_password_with_2fa_on_needs_a_fresh_code(
    accounts: AccountCommands, store: MemoryStore, clock: FakeClock, alice: AccountView
) -> None:
    """A5: the second factor guards the password too."""
    secret = await turn_on_totp(accounts, alice.id, T0)
    clock.advance(STEP)
    before = store.accounts[alice.id].password_hash

    missing = await accounts.change_password(change(), CLIENT)
    wrong = await accounts.change_password(change(code=wrong_code(secret, clock())), CLIENT)
    reused = await accounts.change_password(change(code=code_at(secret, T0)), CLIENT)

    assert missing.reply == CommandRejected(reason="totp_required")
    assert wrong.reply == reused.reply == CommandRejected(reason="invalid_code")
    assert store.accounts[alice.id].password_hash == before

    done = await accounts.change_password(change(code=code_at(secret, clock())), CLIENT)

    assert isinstance(done.reply, AccountChanged)
    assert store.accounts[alice.id].password_hash != before


# --- disable / enable (G4) -------------------------------------------------------------------


async def test_disabling_an_account_broadcasts_and_every_credential_kind_is_disabled(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    clock: FakeClock,
    alice: AccountView,
) -> None:
    _, token = await issue_token(issuing, ALICE)
    _, key = await create_key(issuing, ALICE)
    clock.advance(timedelta(minutes=1))

    done = await accounts.set_disabled(AccountRef(email="ALICE@example.io"), disabled=True)

    expected = AccountChanged(account_id=alice.id, change="disabled", at=T0 + timedelta(minutes=1))
    assert done.reply == expected
    assert done.audit == done.changes == (expected,)
    for credential in (
        bearer(token),
        basic_token(ALICE, token),
        api_key(ALICE, key),
        password(ALICE, ALICE_PASSWORD),
    ):
        assert (await verdict_of(verifier, credential)).outcome is Outcome.DISABLED, credential.kind


async def test_enabling_an_account_again_makes_its_credentials_valid_again(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    alice: AccountView,
) -> None:
    _, token = await issue_token(issuing, ALICE)
    _, key = await create_key(issuing, ALICE)
    await accounts.set_disabled(AccountRef(account_id=alice.id), disabled=True)

    done = await accounts.set_disabled(AccountRef(account_id=alice.id), disabled=False)

    expected = AccountChanged(account_id=alice.id, change="enabled", at=T0)
    assert done.reply == expected
    assert done.changes == (expected,)
    for credential in (bearer(token), api_key(ALICE, key), password(ALICE, ALICE_PASSWORD)):
        assert (await verdict_of(verifier, credential)).outcome is Outcome.VALID, credential.kind


@pytest.mark.parametrize(
    "ref", [AccountRef(email="nobody@example.io"), AccountRef(account_id="no-such-id")], ids=str
)
async def test_disabling_an_unknown_account_is_rejected(
    accounts: AccountCommands, ref: AccountRef
) -> None:
    done = await accounts.set_disabled(ref, disabled=True)

    assert done.reply == CommandRejected(reason="unknown_account")
    assert (done.audit, done.changes) == ((), ())
