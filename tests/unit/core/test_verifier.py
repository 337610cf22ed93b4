"""Credential verdicts (SPEC A1-A6, A10): a credential in, a verdict out; denials are values."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared import apikeys
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialKind,
    CredentialVerified,
    Outcome,
    password_credential_id,
)
from authbus_shared.contracts.events import LoginFailed

from .support import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    BOB_PASSWORD,
    T0,
    CountingRunner,
    FakeClock,
    api_key,
    basic_token,
    bearer,
    create_account,
    create_key,
    grant,
    issue_token,
    password,
    verdict_of,
)

CLIENT = "198.51.100.7"


def set_account(store: MemoryStore, account_id: str, **changes: Any) -> None:
    store.accounts[account_id] = dataclasses.replace(store.accounts[account_id], **changes)


def denied(outcome: Outcome, **fields: Any) -> CredentialVerified:
    """A denial as the verifier answers it at T0: the outcome and nothing about the account."""
    return CredentialVerified(outcome=outcome, checked_at=T0, **fields)


@pytest.fixture
async def alice(accounts: AccountCommands) -> AccountView:
    return await create_account(accounts, ALICE, ALICE_PASSWORD)


# --- tokens (A1, A4) -------------------------------------------------------------------------


async def test_bearer_token_is_valid_with_its_account_and_scopes(
    accounts: AccountCommands, issuing: CredentialCommands, verifier: Verifier, alice: AccountView
) -> None:
    await grant(accounts, ALICE, "read")
    issued, token = await issue_token(issuing, ALICE, scopes=("read",))

    checked = await verifier.verify(bearer(token))

    assert checked.verdict == CredentialVerified(
        outcome=Outcome.VALID,
        account=AccountView(id=alice.id, email=ALICE, locale="en"),
        scopes=("read",),
        method=AuthMethod.TOKEN,
        credential_id=issued.token_id,
        valid_until=None,
        mfa=False,
        deprecated=False,
        checked_at=T0,
    )
    assert checked.audit == ()


@pytest.mark.parametrize(
    ("after", "outcome"), [(59 * 60 + 59, Outcome.VALID), (3600, Outcome.EXPIRED)]
)
async def test_token_is_expired_from_its_expiry_on(
    issuing: CredentialCommands,
    verifier: Verifier,
    clock: FakeClock,
    alice: AccountView,
    after: int,
    outcome: Outcome,
) -> None:
    _, token = await issue_token(issuing, ALICE, expires_in=timedelta(hours=1))
    clock.advance(timedelta(seconds=after))

    assert (await verdict_of(verifier, bearer(token))).outcome is outcome


async def test_token_past_its_record_expiry_is_expired(
    issuing: CredentialCommands,
    verifier: Verifier,
    store: MemoryStore,
    clock: FakeClock,
    alice: AccountView,
) -> None:
    """The store's record decides, even when the JWT's own `exp` is later."""
    issued, token = await issue_token(issuing, ALICE, expires_in=timedelta(days=1))
    record = store.tokens[issued.token_id]
    store.tokens[issued.token_id] = dataclasses.replace(
        record, expires_at=T0 + timedelta(minutes=1)
    )
    clock.advance(timedelta(minutes=1))

    assert (await verdict_of(verifier, bearer(token))).outcome is Outcome.EXPIRED


@pytest.mark.parametrize(
    "email", [ALICE, "alice@example.io", "ALICE@EXAMPLE.IO", " alice@example.io "]
)
async def test_basic_token_with_the_accounts_email_in_any_case_is_valid(
    issuing: CredentialCommands, verifier: Verifier, alice: AccountView, email: str
) -> None:
    issued, token = await issue_token(issuing, ALICE)

    verdict = await verdict_of(verifier, basic_token(email, token))

    assert verdict.outcome is Outcome.VALID
    assert verdict.credential_id == issued.token_id


@pytest.mark.parametrize("email", [BOB, "nobody@example.io", "", None])
async def test_basic_token_with_another_email_is_invalid(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    alice: AccountView,
    email: str | None,
) -> None:
    await create_account(accounts, BOB, BOB_PASSWORD)
    _, token = await issue_token(issuing, ALICE)

    assert await verdict_of(verifier, basic_token(email, token)) == denied(Outcome.INVALID)


async def test_token_whose_record_is_gone_is_invalid(
    issuing: CredentialCommands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    issued, token = await issue_token(issuing, ALICE)
    del store.tokens[issued.token_id]

    assert (await verdict_of(verifier, bearer(token))).outcome is Outcome.INVALID


async def test_token_whose_record_belongs_to_another_account_is_invalid(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    store: MemoryStore,
    alice: AccountView,
) -> None:
    bob = await create_account(accounts, BOB, BOB_PASSWORD)
    issued, token = await issue_token(issuing, ALICE)
    record = store.tokens[issued.token_id]
    store.tokens[issued.token_id] = dataclasses.replace(record, account_id=bob.id)

    assert (await verdict_of(verifier, bearer(token))).outcome is Outcome.INVALID


async def test_token_of_a_deleted_account_is_invalid(
    issuing: CredentialCommands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    _, token = await issue_token(issuing, ALICE)
    del store.accounts[alice.id]

    assert (await verdict_of(verifier, bearer(token))).outcome is Outcome.INVALID


async def test_token_issued_before_the_last_credentials_change_is_revoked(
    issuing: CredentialCommands,
    verifier: Verifier,
    store: MemoryStore,
    clock: FakeClock,
    alice: AccountView,
) -> None:
    _, old = await issue_token(issuing, ALICE)
    set_account(store, alice.id, credentials_changed_at=T0 + timedelta(seconds=1, microseconds=5))
    clock.advance(timedelta(seconds=2))
    _, new = await issue_token(issuing, ALICE)

    assert (await verdict_of(verifier, bearer(old))).outcome is Outcome.REVOKED
    assert (await verdict_of(verifier, bearer(new))).outcome is Outcome.VALID


async def test_token_of_a_disabled_account_is_disabled(
    issuing: CredentialCommands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    _, token = await issue_token(issuing, ALICE)
    set_account(store, alice.id, disabled=True)

    assert (await verdict_of(verifier, bearer(token))).outcome is Outcome.DISABLED


async def test_token_still_works_when_login_2fa_is_on(
    issuing: CredentialCommands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    """A5: 2FA blocks password login, not tokens."""
    _, token = await issue_token(issuing, ALICE)
    set_account(store, alice.id, totp_enabled=True)

    assert (await verdict_of(verifier, bearer(token))).outcome is Outcome.VALID


async def test_garbage_bearer_token_is_invalid(verifier: Verifier) -> None:
    assert await verdict_of(verifier, bearer("garbage")) == denied(Outcome.INVALID)


async def test_every_verdict_carries_the_time_authz_checked_it(
    issuing: CredentialCommands, verifier: Verifier, clock: FakeClock, alice: AccountView
) -> None:
    """`checked_at` lets the api tell a verdict read before an account change from one read
    after (the verdict cache's race guard)."""
    _, token = await issue_token(issuing, ALICE)
    clock.advance(timedelta(minutes=3))

    for credential in (bearer(token), bearer("garbage"), password(ALICE, ALICE_PASSWORD)):
        assert (await verdict_of(verifier, credential)).checked_at == T0 + timedelta(minutes=3)


# --- passwords (A2, A5, A6) ------------------------------------------------------------------


@pytest.mark.parametrize("email", [ALICE, "alice@example.io", "ALICE@example.IO"])
async def test_right_password_is_valid_by_password_with_the_password_credential_id(
    verifier: Verifier, alice: AccountView, email: str
) -> None:
    """The credential id lets a password change drop cached password verdicts like a token's."""
    checked = await verifier.verify(password(email, ALICE_PASSWORD))

    assert checked.verdict == CredentialVerified(
        outcome=Outcome.VALID,
        account=AccountView(id=alice.id, email=ALICE, locale="en"),
        method=AuthMethod.PASSWORD,
        credential_id=password_credential_id(alice.id),
        checked_at=T0,
    )
    assert checked.audit == ()


async def test_unknown_email_and_wrong_password_get_the_same_verdict(
    verifier: Verifier, alice: AccountView
) -> None:
    """A6: nothing in the answer, nor in the work done, tells whether the email exists."""
    wrong_runner, unknown_runner = CountingRunner(), CountingRunner()
    wrong_password = dataclasses.replace(verifier, run_blocking=wrong_runner)
    unknown_email = dataclasses.replace(verifier, run_blocking=unknown_runner)

    wrong = await wrong_password.verify(password(ALICE, "not the password"), CLIENT)
    unknown = await unknown_email.verify(password("nobody@example.io", "not the password"), CLIENT)

    assert wrong.verdict == unknown.verdict == denied(Outcome.INVALID)
    assert wrong.verdict.model_dump_json() == unknown.verdict.model_dump_json()
    assert wrong_runner.calls == unknown_runner.calls == 1  # argon2 ran in both cases


async def test_failed_password_is_audited_without_the_secret(
    verifier: Verifier, alice: AccountView
) -> None:
    """V1: login failed, for any consumer; A9: never the password."""
    checked = await verifier.verify(password(ALICE, "not the password"), CLIENT)

    assert checked.audit == (
        LoginFailed(
            kind=CredentialKind.PASSWORD, reason="invalid", account_id=alice.id, client=CLIENT
        ),
    )
    assert "not the password" not in checked.audit[0].model_dump_json()


async def test_passwords_over_72_bytes_differing_only_at_the_end_are_different(
    accounts: AccountCommands, verifier: Verifier
) -> None:
    """argon2id has no bcrypt-style 72-byte truncation."""
    long = "x" * 100 + "1"
    await create_account(accounts, BOB, long)

    assert (await verdict_of(verifier, password(BOB, long))).outcome is Outcome.VALID
    assert (await verdict_of(verifier, password(BOB, "x" * 100 + "2"))).outcome is Outcome.INVALID


@pytest.mark.parametrize(
    ("email", "secret"), [("", ALICE_PASSWORD), (ALICE, "p" * 1025)], ids=["no-email", "too-long"]
)
async def test_password_without_email_or_too_long_is_invalid_without_argon2(
    verifier: Verifier, alice: AccountView, email: str, secret: str
) -> None:
    runner = CountingRunner()
    counted = dataclasses.replace(verifier, run_blocking=runner)

    assert await verdict_of(counted, password(email, secret)) == denied(Outcome.INVALID)
    assert runner.calls == 0


async def test_login_2fa_needs_a_token_only_after_the_right_password(
    verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    set_account(store, alice.id, totp_enabled=True)

    right = await verifier.verify(password(ALICE, ALICE_PASSWORD), CLIENT)
    wrong = await verdict_of(verifier, password(ALICE, "not the password"))

    assert right.verdict == denied(Outcome.NEEDS_TOKEN)
    assert right.audit == (
        LoginFailed(
            kind=CredentialKind.PASSWORD, reason="needs_token", account_id=alice.id, client=CLIENT
        ),
    )
    assert wrong == denied(Outcome.INVALID)


async def test_disabled_account_is_disabled_only_after_the_right_password(
    verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    set_account(store, alice.id, disabled=True)

    right = await verdict_of(verifier, password(ALICE, ALICE_PASSWORD))
    wrong = await verdict_of(verifier, password(ALICE, "not the password"))

    assert right == denied(Outcome.DISABLED)
    assert wrong == denied(Outcome.INVALID)


# --- keys (A3) -------------------------------------------------------------------------------


async def test_legacy_key_is_valid_deprecated_with_its_record(
    accounts: AccountCommands, issuing: CredentialCommands, verifier: Verifier, alice: AccountView
) -> None:
    await grant(accounts, ALICE, "read")
    issued, key = await create_key(issuing, ALICE, scopes=("read",), expires_in=timedelta(days=1))

    verdict = await verdict_of(verifier, api_key("alice@EXAMPLE.io", key))

    assert verdict == CredentialVerified(
        outcome=Outcome.VALID,
        account=AccountView(id=alice.id, email=ALICE, locale="en"),
        scopes=("read",),
        method=AuthMethod.KEY,
        credential_id=issued.key_id,
        valid_until=T0 + timedelta(days=1),
        deprecated=True,
        checked_at=T0,
    )


@pytest.mark.parametrize(
    "secret", [ALICE_PASSWORD, "abk_short", apikeys.generate()[:-1] + "!"], ids=repr
)
async def test_malformed_key_is_invalid_without_any_lookup(
    verifier: Verifier, store: MemoryStore, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    """A3: a mistyped key costs no store lookup."""
    looked_up: list[str] = []

    async def spy(digest: str) -> None:
        looked_up.append(digest)

    monkeypatch.setattr(store, "api_key_by_digest", spy)

    assert await verdict_of(verifier, api_key(ALICE, secret)) == denied(Outcome.INVALID)
    assert looked_up == []


async def test_well_formed_unknown_key_is_invalid(verifier: Verifier, alice: AccountView) -> None:
    assert await verdict_of(verifier, api_key(ALICE, apikeys.generate())) == denied(Outcome.INVALID)


async def test_key_of_a_disabled_account_is_disabled(
    issuing: CredentialCommands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    _, key = await create_key(issuing, ALICE)
    set_account(store, alice.id, disabled=True)

    assert await verdict_of(verifier, api_key(ALICE, key)) == denied(Outcome.DISABLED)
