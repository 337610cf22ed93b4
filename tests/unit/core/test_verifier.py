"""Credential verdicts (SPEC A1-A6): a credential in, a verdict out; denials are values."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from authbus_authz.core.commands import Commands
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialKind,
    CredentialVerified,
    Outcome,
    SealedCredential,
)

from .support import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    BOB_PASSWORD,
    T0,
    FakeClock,
    create_account,
    issue_token,
)

T = TypeVar("T")


def bearer(token: str) -> SealedCredential:
    return SealedCredential(kind=CredentialKind.BEARER, secret=token)


def basic_token(email: str | None, token: str) -> SealedCredential:
    return SealedCredential(kind=CredentialKind.BASIC_TOKEN, secret=token, email=email)


def password(email: str, secret: str) -> SealedCredential:
    return SealedCredential(kind=CredentialKind.PASSWORD, secret=secret, email=email)


def set_account(store: MemoryStore, account_id: str, **changes: Any) -> None:
    store.accounts[account_id] = dataclasses.replace(store.accounts[account_id], **changes)


class CountingRunner:
    """`RunBlocking` that counts the blocking (argon2) jobs it runs."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, fn: Callable[[], T], /) -> T:
        self.calls += 1
        return fn()


@pytest.fixture
async def alice(commands: Commands) -> AccountView:
    return await create_account(commands, ALICE, ALICE_PASSWORD)


# --- tokens (A1, A4) -------------------------------------------------------------------------


async def test_bearer_token_is_valid_with_its_account_and_scopes(
    commands: Commands, verifier: Verifier, alice: AccountView
) -> None:
    issued, token = await issue_token(commands, ALICE, scopes=("read",))

    verdict = await verifier.verify(bearer(token))

    assert verdict == CredentialVerified(
        outcome=Outcome.VALID,
        account=AccountView(id=alice.id, email=ALICE, locale="en"),
        scopes=("read",),
        method=AuthMethod.TOKEN,
        credential_id=issued.token_id,
        valid_until=None,
    )


@pytest.mark.parametrize(
    ("after", "outcome"), [(59 * 60 + 59, Outcome.VALID), (3600, Outcome.EXPIRED)]
)
async def test_token_is_expired_from_its_expiry_on(
    commands: Commands,
    verifier: Verifier,
    clock: FakeClock,
    alice: AccountView,
    after: int,
    outcome: Outcome,
) -> None:
    _, token = await issue_token(commands, ALICE, expires_in=timedelta(hours=1))
    clock.advance(timedelta(seconds=after))

    assert (await verifier.verify(bearer(token))).outcome is outcome


async def test_token_past_its_record_expiry_is_expired(
    commands: Commands, verifier: Verifier, store: MemoryStore, clock: FakeClock, alice: AccountView
) -> None:
    """The store's record decides, even when the JWT's own `exp` is later."""
    issued, token = await issue_token(commands, ALICE, expires_in=timedelta(days=1))
    record = store.tokens[issued.token_id]
    store.tokens[issued.token_id] = dataclasses.replace(
        record, expires_at=T0 + timedelta(minutes=1)
    )
    clock.advance(timedelta(minutes=1))

    assert (await verifier.verify(bearer(token))).outcome is Outcome.EXPIRED


@pytest.mark.parametrize(
    "email", [ALICE, "alice@example.io", "ALICE@EXAMPLE.IO", " alice@example.io "]
)
async def test_basic_token_with_the_accounts_email_in_any_case_is_valid(
    commands: Commands, verifier: Verifier, alice: AccountView, email: str
) -> None:
    issued, token = await issue_token(commands, ALICE)

    verdict = await verifier.verify(basic_token(email, token))

    assert verdict.outcome is Outcome.VALID
    assert verdict.credential_id == issued.token_id


@pytest.mark.parametrize("email", [BOB, "nobody@example.io", "", None])
async def test_basic_token_with_another_email_is_invalid(
    commands: Commands, verifier: Verifier, alice: AccountView, email: str | None
) -> None:
    await create_account(commands, BOB, BOB_PASSWORD)
    _, token = await issue_token(commands, ALICE)

    verdict = await verifier.verify(basic_token(email, token))

    assert verdict == CredentialVerified(outcome=Outcome.INVALID)


async def test_token_whose_record_is_gone_is_invalid(
    commands: Commands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    issued, token = await issue_token(commands, ALICE)
    del store.tokens[issued.token_id]

    assert (await verifier.verify(bearer(token))).outcome is Outcome.INVALID


async def test_token_whose_record_belongs_to_another_account_is_invalid(
    commands: Commands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    bob = await create_account(commands, BOB, BOB_PASSWORD)
    issued, token = await issue_token(commands, ALICE)
    record = store.tokens[issued.token_id]
    store.tokens[issued.token_id] = dataclasses.replace(record, account_id=bob.id)

    assert (await verifier.verify(bearer(token))).outcome is Outcome.INVALID


async def test_token_of_a_deleted_account_is_invalid(
    commands: Commands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    _, token = await issue_token(commands, ALICE)
    del store.accounts[alice.id]

    assert (await verifier.verify(bearer(token))).outcome is Outcome.INVALID


async def test_token_issued_before_the_last_credentials_change_is_revoked(
    commands: Commands, verifier: Verifier, store: MemoryStore, clock: FakeClock, alice: AccountView
) -> None:
    _, old = await issue_token(commands, ALICE)
    set_account(store, alice.id, credentials_changed_at=T0 + timedelta(seconds=1, microseconds=5))
    clock.advance(timedelta(seconds=2))
    _, new = await issue_token(commands, ALICE)

    assert (await verifier.verify(bearer(old))).outcome is Outcome.REVOKED
    assert (await verifier.verify(bearer(new))).outcome is Outcome.VALID


async def test_token_of_a_disabled_account_is_disabled(
    commands: Commands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    _, token = await issue_token(commands, ALICE)
    set_account(store, alice.id, disabled=True)

    assert (await verifier.verify(bearer(token))).outcome is Outcome.DISABLED


async def test_token_still_works_when_login_2fa_is_on(
    commands: Commands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    """A5: 2FA blocks password login, not tokens."""
    _, token = await issue_token(commands, ALICE)
    set_account(store, alice.id, totp_enabled=True)

    assert (await verifier.verify(bearer(token))).outcome is Outcome.VALID


async def test_garbage_bearer_token_is_invalid(verifier: Verifier) -> None:
    assert await verifier.verify(bearer("garbage")) == CredentialVerified(outcome=Outcome.INVALID)


# --- passwords (A2, A5, A6) ------------------------------------------------------------------


@pytest.mark.parametrize("email", [ALICE, "alice@example.io", "ALICE@example.IO"])
async def test_right_password_is_valid_by_password_without_credential_id(
    verifier: Verifier, alice: AccountView, email: str
) -> None:
    verdict = await verifier.verify(password(email, ALICE_PASSWORD))

    assert verdict == CredentialVerified(
        outcome=Outcome.VALID,
        account=AccountView(id=alice.id, email=ALICE, locale="en"),
        method=AuthMethod.PASSWORD,
        credential_id=None,
    )


async def test_unknown_email_and_wrong_password_get_the_same_verdict(
    verifier: Verifier, alice: AccountView
) -> None:
    """A6: nothing in the answer, nor in the work done, tells whether the email exists."""
    wrong_runner, unknown_runner = CountingRunner(), CountingRunner()
    wrong_password = dataclasses.replace(verifier, run_blocking=wrong_runner)
    unknown_email = dataclasses.replace(verifier, run_blocking=unknown_runner)

    wrong = await wrong_password.verify(password(ALICE, "not the password"))
    unknown = await unknown_email.verify(password("nobody@example.io", "not the password"))

    assert wrong == unknown == CredentialVerified(outcome=Outcome.INVALID)
    assert wrong.model_dump_json() == unknown.model_dump_json()
    assert wrong_runner.calls == unknown_runner.calls == 1  # argon2 ran in both cases


async def test_passwords_over_72_bytes_differing_only_at_the_end_are_different(
    commands: Commands, verifier: Verifier
) -> None:
    """argon2id has no bcrypt-style 72-byte truncation."""
    long = "x" * 100 + "1"
    await create_account(commands, BOB, long)

    assert (await verifier.verify(password(BOB, long))).outcome is Outcome.VALID
    assert (await verifier.verify(password(BOB, "x" * 100 + "2"))).outcome is Outcome.INVALID


@pytest.mark.parametrize(
    ("email", "secret"), [("", ALICE_PASSWORD), (ALICE, "p" * 1025)], ids=["no-email", "too-long"]
)
async def test_password_without_email_or_too_long_is_invalid(
    verifier: Verifier, alice: AccountView, email: str, secret: str
) -> None:
    assert await verifier.verify(password(email, secret)) == CredentialVerified(
        outcome=Outcome.INVALID
    )


async def test_login_2fa_needs_a_token_only_after_the_right_password(
    verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    set_account(store, alice.id, totp_enabled=True)

    right = await verifier.verify(password(ALICE, ALICE_PASSWORD))
    wrong = await verifier.verify(password(ALICE, "not the password"))

    assert right == CredentialVerified(outcome=Outcome.NEEDS_TOKEN)
    assert wrong == CredentialVerified(outcome=Outcome.INVALID)


async def test_disabled_account_is_disabled_only_after_the_right_password(
    verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    set_account(store, alice.id, disabled=True)

    right = await verifier.verify(password(ALICE, ALICE_PASSWORD))
    wrong = await verifier.verify(password(ALICE, "not the password"))

    assert right == CredentialVerified(outcome=Outcome.DISABLED)
    assert wrong == CredentialVerified(outcome=Outcome.INVALID)


# --- keys (A3) -------------------------------------------------------------------------------


async def test_legacy_key_is_invalid_until_keys_exist(
    verifier: Verifier, alice: AccountView
) -> None:
    credential = SealedCredential(kind=CredentialKind.KEY, secret=ALICE_PASSWORD, email=ALICE)

    assert await verifier.verify(credential) == CredentialVerified(outcome=Outcome.INVALID)
