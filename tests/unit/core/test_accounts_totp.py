"""Login 2FA commands (SPEC A5, A9, A10, V1): enrol, confirm, disable. A code is good once, a
wrong one counts as a failed login."""

from __future__ import annotations

from datetime import timedelta

import pytest

from authbus_authz.core import totp
from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts.authz import AccountView, CredentialKind, Outcome
from authbus_shared.contracts.commands import AccountRef, CommandRejected, TotpEnrollment
from authbus_shared.contracts.events import AccountChanged, LoginFailed, LoginThrottled
from authbus_shared.sealing import SealError, SealingKey

from .support import (
    ALICE,
    ALICE_PASSWORD,
    STEP,
    T0,
    TOTP_ISSUER,
    FakeClock,
    b64url,
    code_at,
    create_account,
    enroll,
    password,
    secret_of,
    turn_on_totp,
    verdict_of,
    wrong_code,
)

CLIENT = "198.51.100.7"


@pytest.fixture
async def alice(accounts: AccountCommands) -> AccountView:
    return await create_account(accounts, ALICE, ALICE_PASSWORD)


@pytest.fixture
def ref(alice: AccountView) -> AccountRef:
    return AccountRef(account_id=alice.id)


# --- enrol ----------------------------------------------------------------------------------


async def test_enrolment_seals_an_otpauth_uri_to_the_one_time_key(
    accounts: AccountCommands, store: MemoryStore, kek: bytes, alice: AccountView, ref: AccountRef
) -> None:
    reply_key = SealingKey.generate()

    done = await accounts.enroll_totp(ref, b64url(reply_key.public))

    assert isinstance(done.reply, TotpEnrollment)
    assert done.reply.account_id == alice.id
    uri = reply_key.open(done.reply.sealed_uri).decode()
    secret = secret_of(uri)
    assert uri == totp.provisioning_uri(secret, ALICE, TOTP_ISSUER)
    with pytest.raises(SealError):
        SealingKey.generate().open(done.reply.sealed_uri)
    assert (done.audit, done.changes) == ((), ())
    stored = store.accounts[alice.id]
    assert (stored.totp_enabled, stored.totp_secret) == (False, None)
    assert stored.totp_pending is not None
    assert secret.encode() not in stored.totp_pending  # encrypted at rest (A9)
    assert totp.open_secret(kek, alice.id, stored.totp_pending) == secret


@pytest.mark.parametrize("reply_key", ["", "not base64!", b64url(b"k" * 31)], ids=repr)
async def test_enrolment_with_a_bad_reply_key_is_refused(
    accounts: AccountCommands, store: MemoryStore, alice: AccountView, reply_key: str
) -> None:
    done = await accounts.enroll_totp(AccountRef(account_id=alice.id), reply_key)

    assert done.reply == CommandRejected(reason="invalid_input", detail="reply_key")
    assert store.accounts[alice.id].totp_pending is None


async def test_enrolling_again_while_2fa_is_on_is_refused(
    accounts: AccountCommands, ref: AccountRef, alice: AccountView
) -> None:
    await turn_on_totp(accounts, alice.id, T0)

    done = await accounts.enroll_totp(ref, b64url(SealingKey.generate().public))

    assert isinstance(done.reply, CommandRejected)
    assert done.reply.reason == "invalid_input"


# --- confirm --------------------------------------------------------------------------------


async def test_confirming_with_a_valid_code_turns_2fa_on_and_password_login_off(
    accounts: AccountCommands,
    verifier: Verifier,
    store: MemoryStore,
    clock: FakeClock,
    alice: AccountView,
    ref: AccountRef,
) -> None:
    """A5: from now on a password alone authenticates nobody (`needs_token`)."""
    secret = secret_of(await enroll(accounts, alice.id))
    pending = store.accounts[alice.id].totp_pending
    clock.advance(timedelta(seconds=10))

    done = await accounts.confirm_totp(ref, code_at(secret, clock()), CLIENT)

    expected = AccountChanged(
        account_id=alice.id, change="totp_enabled", at=T0 + timedelta(seconds=10)
    )
    assert done.reply == expected
    assert done.audit == done.changes == (expected,)
    stored = store.accounts[alice.id]
    assert (stored.totp_enabled, stored.totp_secret, stored.totp_pending) == (True, pending, None)
    verdict = await verdict_of(verifier, password(ALICE, ALICE_PASSWORD))
    assert verdict.outcome is Outcome.NEEDS_TOKEN


async def test_confirming_without_enrolment_is_refused(
    accounts: AccountCommands, ref: AccountRef
) -> None:
    done = await accounts.confirm_totp(ref, "123456")

    assert done.reply == CommandRejected(reason="totp_not_pending")


async def test_confirming_with_a_wrong_code_leaves_2fa_off_and_is_audited(
    accounts: AccountCommands, store: MemoryStore, alice: AccountView, ref: AccountRef
) -> None:
    secret = secret_of(await enroll(accounts, alice.id))

    done = await accounts.confirm_totp(ref, wrong_code(secret, T0), CLIENT)

    assert done.reply == CommandRejected(reason="invalid_code")
    assert done.audit == (
        LoginFailed(
            kind=CredentialKind.PASSWORD, reason="invalid_code", account_id=alice.id, client=CLIENT
        ),
    )
    assert done.changes == ()
    assert store.accounts[alice.id].totp_enabled is False
    assert store.accounts[alice.id].totp_pending is not None


async def test_confirming_with_non_ascii_digits_is_an_invalid_code_not_an_error(
    accounts: AccountCommands, alice: AccountView, ref: AccountRef
) -> None:
    """E5: user input the core cannot read is a refusal (a value), never an exception."""
    await enroll(accounts, alice.id)
    fullwidth_digits = "\uff11\uff12\uff13\uff14\uff15\uff16"

    done = await accounts.confirm_totp(ref, fullwidth_digits, CLIENT)

    assert done.reply == CommandRejected(reason="invalid_code")


@pytest.mark.parametrize(
    "ref", [AccountRef(email="nobody@example.io"), AccountRef(account_id="no-such-id")], ids=str
)
async def test_totp_commands_for_an_unknown_account_are_refused(
    accounts: AccountCommands, ref: AccountRef
) -> None:
    reply_key = b64url(SealingKey.generate().public)
    unknown = CommandRejected(reason="unknown_account")

    assert (await accounts.enroll_totp(ref, reply_key)).reply == unknown
    assert (await accounts.confirm_totp(ref, "123456")).reply == unknown
    assert (await accounts.disable_totp(ref, "123456")).reply == unknown


# --- a code is good once (A5 replay) --------------------------------------------------------


async def test_a_code_already_used_is_refused_within_its_step(
    accounts: AccountCommands,
    store: MemoryStore,
    clock: FakeClock,
    alice: AccountView,
    ref: AccountRef,
) -> None:
    secret = await turn_on_totp(accounts, alice.id, T0)
    clock.advance(timedelta(seconds=20))  # same 30 s step

    done = await accounts.disable_totp(ref, code_at(secret, T0), CLIENT)

    assert done.reply == CommandRejected(reason="invalid_code")
    assert store.accounts[alice.id].totp_enabled is True


async def test_an_older_steps_code_is_refused_once_a_later_one_was_used(
    accounts: AccountCommands,
    store: MemoryStore,
    clock: FakeClock,
    alice: AccountView,
    ref: AccountRef,
) -> None:
    """The previous step is within the drift window, but a later step was already claimed."""
    secret = await turn_on_totp(accounts, alice.id, T0 + STEP)  # the next step's code, at T0

    done = await accounts.disable_totp(ref, code_at(secret, T0), CLIENT)

    assert done.reply == CommandRejected(reason="invalid_code")
    assert store.accounts[alice.id].totp_enabled is True


# --- throttling (A10) -----------------------------------------------------------------------


async def test_wrong_codes_count_towards_the_login_throttle(
    accounts: AccountCommands,
    verifier: Verifier,
    alice: AccountView,
    ref: AccountRef,
) -> None:
    secret = secret_of(await enroll(accounts, alice.id))
    for _ in range(4):  # the 4th failure of this client on this account blocks the pair 1 s
        await accounts.confirm_totp(ref, wrong_code(secret, T0), CLIENT)

    right = await accounts.confirm_totp(ref, code_at(secret, T0), CLIENT)
    login = await verdict_of(verifier, password(ALICE, ALICE_PASSWORD), CLIENT)

    assert right.reply == CommandRejected(reason="throttled", retry_after_s=1)
    assert login.outcome is Outcome.THROTTLED  # one throttle for passwords and codes


async def test_wrong_code_that_starts_a_block_audits_the_lockout(
    accounts: AccountCommands, alice: AccountView, ref: AccountRef
) -> None:
    """V1: "lockout started" is an audit event, whether wrong passwords or wrong codes
    started it (as `Verifier.check_password` does for passwords)."""
    secret = secret_of(await enroll(accounts, alice.id))
    for _ in range(3):
        await accounts.confirm_totp(ref, wrong_code(secret, T0), CLIENT)

    fourth = await accounts.confirm_totp(ref, wrong_code(secret, T0), CLIENT)

    assert [type(e) for e in fourth.audit] == [LoginFailed, LoginThrottled]
    assert fourth.audit[1] == LoginThrottled(
        scope="pair",
        until=T0 + timedelta(seconds=1),
        failures=4,
        account_id=alice.id,
        client=CLIENT,
    )


# --- disable --------------------------------------------------------------------------------


async def test_disabling_2fa_needs_a_fresh_valid_code(
    accounts: AccountCommands,
    verifier: Verifier,
    store: MemoryStore,
    clock: FakeClock,
    alice: AccountView,
    ref: AccountRef,
) -> None:
    secret = await turn_on_totp(accounts, alice.id, T0)
    clock.advance(STEP)

    missing = await accounts.disable_totp(ref, "", CLIENT)
    wrong = await accounts.disable_totp(ref, wrong_code(secret, clock()), CLIENT)

    assert missing.reply == CommandRejected(reason="totp_required")
    assert wrong.reply == CommandRejected(reason="invalid_code")
    assert store.accounts[alice.id].totp_enabled is True

    done = await accounts.disable_totp(ref, code_at(secret, clock()), CLIENT)

    expected = AccountChanged(account_id=alice.id, change="totp_disabled", at=T0 + STEP)
    assert done.reply == expected
    assert done.audit == done.changes == (expected,)
    stored = store.accounts[alice.id]
    assert (stored.totp_enabled, stored.totp_secret, stored.totp_pending) == (False, None, None)
    verdict = await verdict_of(verifier, password(ALICE, ALICE_PASSWORD))
    assert verdict.outcome is Outcome.VALID


async def test_disabling_2fa_when_it_is_off_is_refused(
    accounts: AccountCommands, ref: AccountRef
) -> None:
    done = await accounts.disable_totp(ref, "123456")

    assert isinstance(done.reply, CommandRejected)
    assert done.reply.reason == "invalid_input"
