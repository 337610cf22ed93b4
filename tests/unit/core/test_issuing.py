"""Tokens: issue, create, list, revoke (SPEC A1, A5, A7, A9, A10, G4, V1). Replies are values;
the secret is sealed to the asker, never stored raw, never in an event."""

from __future__ import annotations

from datetime import timedelta

import pytest

from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands, Request
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts.authz import AccountView, AuthMethod, Outcome
from authbus_shared.contracts.commands import (
    AccountRef,
    CommandRejected,
    NewToken,
    SealedLogin,
    TokenList,
)
from authbus_shared.contracts.events import TokenIssued, TokenRevoked
from authbus_shared.sealing import SealingKey

from .support import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    BOB_PASSWORD,
    STEP,
    T0,
    FakeClock,
    b64url,
    bearer,
    code_at,
    create_account,
    grant,
    issue_token,
    request,
    turn_on_totp,
    verdict_of,
    wrong_code,
)

CLIENT = "198.51.100.7"


@pytest.fixture
async def alice(accounts: AccountCommands) -> AccountView:
    return await create_account(accounts, ALICE, ALICE_PASSWORD)


def login(secret: str = ALICE_PASSWORD, code: str | None = None) -> SealedLogin:
    return SealedLogin(email=ALICE, password=secret, totp_code=code)


async def created_token(
    issuing: CredentialCommands, proof: SealedLogin, scopes: tuple[str, ...] = ()
) -> tuple[TokenIssued, str] | CommandRejected:
    reply_key = SealingKey.generate()
    done = await issuing.create_token(proof, request(reply_key, scopes=scopes), CLIENT)
    if isinstance(done.reply, CommandRejected):
        return done.reply
    assert isinstance(done.reply, NewToken), done.reply
    return done.reply.token, reply_key.open(done.reply.sealed_token).decode()


# --- issue (operators, amr: admin) ------------------------------------------------------------


async def test_issued_token_opens_with_the_reply_key_and_verifies(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    store: MemoryStore,
    alice: AccountView,
) -> None:
    await grant(accounts, ALICE, "read", "write")
    reply_key = SealingKey.generate()
    asked = request(reply_key, scopes=("write", "read", "write"), expires_in=timedelta(days=30))

    done = await issuing.issue_token("alice@EXAMPLE.io", asked)

    assert isinstance(done.reply, NewToken)
    issued = done.reply.token
    assert (issued.account_id, issued.name, issued.amr) == (alice.id, "ci", ("admin",))
    assert issued.scopes == ("read", "write")
    assert issued.expires_at == T0 + timedelta(days=30)
    assert store.tokens[issued.token_id].scopes == ("read", "write")
    token = reply_key.open(done.reply.sealed_token).decode()
    verdict = await verdict_of(verifier, bearer(token))
    assert verdict.outcome is Outcome.VALID
    assert verdict.method is AuthMethod.TOKEN
    assert verdict.credential_id == issued.token_id
    assert verdict.scopes == ("read", "write")
    assert verdict.valid_until == T0 + timedelta(days=30)
    assert verdict.mfa is False


async def test_token_without_expires_in_never_expires(
    issuing: CredentialCommands, alice: AccountView
) -> None:
    issued, _ = await issue_token(issuing, ALICE)

    assert issued.expires_at is None


async def test_issue_token_audits_a_token_issued_without_any_secret(
    issuing: CredentialCommands, store: MemoryStore, alice: AccountView
) -> None:
    reply_key = SealingKey.generate()

    done = await issuing.issue_token(ALICE, request(reply_key))

    assert isinstance(done.reply, NewToken)
    token = reply_key.open(done.reply.sealed_token).decode()
    assert done.audit == (done.reply.token,)
    assert isinstance(done.audit[0], TokenIssued)
    assert not {"token", "secret", "sealed_token"} & set(TokenIssued.model_fields)
    assert token not in done.audit[0].model_dump_json()
    assert token not in done.reply.model_dump_json()  # only sealed on the reply topic (A9)
    assert done.changes == ()
    assert token not in repr(store.tokens)  # stored by id and hint, never the token (A9)


@pytest.mark.parametrize(
    "scopes",
    [("",), ("READ",), ("read write",), ("réad",), ("a/b",), ("*",), ("read", "bad scope")],
    ids=str,
)
async def test_bad_scopes_are_rejected(
    issuing: CredentialCommands, store: MemoryStore, alice: AccountView, scopes: tuple[str, ...]
) -> None:
    done = await issuing.issue_token(ALICE, request(scopes=scopes))

    assert done.reply == CommandRejected(reason="invalid_input", detail="scopes")
    assert store.tokens == {}


@pytest.mark.parametrize(
    "reply_key",
    ["", "not base64 at all!", "é" * 43, b64url(b"k" * 31), b64url(b"k" * 33), b64url(b"k" * 64)],
    ids=["empty", "garbage", "non-ascii", "31-bytes", "33-bytes", "64-bytes"],
)
async def test_bad_reply_key_is_rejected(
    issuing: CredentialCommands, store: MemoryStore, alice: AccountView, reply_key: str
) -> None:
    asked = Request(name="ci", scopes=(), expires_in=None, reply_key=reply_key)

    done = await issuing.issue_token(ALICE, asked)

    assert done.reply == CommandRejected(reason="invalid_input", detail="reply_key")
    assert store.tokens == {}


async def test_issue_token_for_unknown_account_is_rejected(
    issuing: CredentialCommands, store: MemoryStore
) -> None:
    done = await issuing.issue_token("nobody@example.io", request())

    assert done.reply == CommandRejected(reason="unknown_account")
    assert (done.audit, store.tokens) == ((), {})


# --- scopes only inside the account's grant (A8) ---------------------------------------------


@pytest.mark.parametrize("asker", ["operator", "self-service"])
async def test_a_token_beyond_the_accounts_grant_is_refused_naming_the_missing_scopes(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    store: MemoryStore,
    alice: AccountView,
    asker: str,
) -> None:
    """Nobody grants themselves a scope; an operator's token is bound by the grant too."""
    await grant(accounts, ALICE, "read")
    asked = ("read", "billing", "admin")

    refusal: object
    if asker == "operator":
        refusal = (await issuing.issue_token(ALICE, request(scopes=asked))).reply
    else:
        refusal = await created_token(issuing, login(), scopes=asked)
    inside = await created_token(issuing, login(), scopes=("read",))

    assert refusal == CommandRejected(reason="scope_not_granted", detail="admin billing")
    assert not isinstance(inside, CommandRejected)
    assert [t.scopes for t in store.tokens.values()] == [("read",)]


async def test_scopes_are_checked_only_after_the_password_so_a_stranger_learns_nothing(
    issuing: CredentialCommands, alice: AccountView
) -> None:
    refused = await created_token(issuing, login("not the password"), scopes=("admin",))

    assert refused == CommandRejected(reason="invalid_credentials")


# --- create (self-service, A5) --------------------------------------------------------------


async def test_token_created_with_the_password_records_pwd(
    issuing: CredentialCommands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    created = await created_token(issuing, login())

    assert not isinstance(created, CommandRejected)
    issued, token = created
    assert issued.amr == store.tokens[issued.token_id].amr == ("pwd",)
    verdict = await verdict_of(verifier, bearer(token))
    assert (verdict.outcome, verdict.mfa) == (Outcome.VALID, False)


async def test_token_creation_with_a_wrong_password_is_refused(
    issuing: CredentialCommands, store: MemoryStore, alice: AccountView
) -> None:
    assert await created_token(issuing, login("not the password")) == CommandRejected(
        reason="invalid_credentials"
    )
    assert store.tokens == {}


async def test_token_creation_with_2fa_on_needs_a_valid_code(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    store: MemoryStore,
    clock: FakeClock,
    alice: AccountView,
) -> None:
    secret = await turn_on_totp(accounts, alice.id, T0)
    clock.advance(STEP)

    missing = await created_token(issuing, login())
    wrong = await created_token(issuing, login(code=wrong_code(secret, clock())))

    assert missing == CommandRejected(reason="totp_required")
    assert wrong == CommandRejected(reason="invalid_code")
    assert store.tokens == {}


async def test_token_created_with_password_and_code_records_mfa(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    store: MemoryStore,
    clock: FakeClock,
    alice: AccountView,
) -> None:
    """A5: the token records that 2FA was used (RFC 8176 amr), and its verdicts say so."""
    secret = await turn_on_totp(accounts, alice.id, T0)
    clock.advance(STEP)

    created = await created_token(issuing, login(code=code_at(secret, clock())))

    assert not isinstance(created, CommandRejected)
    issued, token = created
    assert issued.amr == store.tokens[issued.token_id].amr == ("pwd", "otp", "mfa")
    verdict = await verdict_of(verifier, bearer(token))
    assert (verdict.outcome, verdict.mfa) == (Outcome.VALID, True)


async def test_token_creation_is_throttled_after_repeated_wrong_passwords(
    issuing: CredentialCommands, store: MemoryStore, clock: FakeClock, alice: AccountView
) -> None:
    """A10: throttled before argon2, with the seconds to wait; then it works again."""
    for _ in range(4):
        await created_token(issuing, login("not the password"))

    throttled = await created_token(issuing, login())
    clock.advance(timedelta(seconds=1))
    after = await created_token(issuing, login())

    assert throttled == CommandRejected(reason="throttled", retry_after_s=1)
    assert not isinstance(after, CommandRejected)


async def test_wrong_codes_after_the_right_password_are_throttled_like_wrong_passwords(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    clock: FakeClock,
    alice: AccountView,
) -> None:
    """A10, A5: someone who has the password and guesses codes from one client is held back
    as soon as one guessing passwords is (the 4th failure of the pair); the right password
    must not wipe the count of wrong codes before the code is even checked."""
    secret = await turn_on_totp(accounts, alice.id, T0)
    clock.advance(STEP)
    for _ in range(4):
        guess = await created_token(issuing, login(code=wrong_code(secret, clock())))
        assert guess == CommandRejected(reason="invalid_code")

    right = await created_token(issuing, login(code=code_at(secret, clock())))

    assert right == CommandRejected(reason="throttled", retry_after_s=1)


# --- list (A7) ------------------------------------------------------------------------------


async def test_token_list_never_holds_the_token_but_a_hint_of_its_end(
    accounts: AccountCommands, issuing: CredentialCommands, clock: FakeClock, alice: AccountView
) -> None:
    await create_account(accounts, BOB, BOB_PASSWORD)
    await grant(accounts, ALICE, "read")
    first, first_token = await issue_token(issuing, ALICE, scopes=("read",))
    clock.advance(timedelta(seconds=1))
    second, second_token = await issue_token(issuing, ALICE)
    await issue_token(issuing, BOB)

    done = await issuing.list_tokens(AccountRef(account_id=alice.id))

    assert isinstance(done.reply, TokenList)
    listed = done.reply.tokens
    assert [t.token_id for t in listed] == [first.token_id, second.token_id]
    assert [t.hint for t in listed] == [first_token[-6:], second_token[-6:]]
    assert (listed[0].scopes, listed[0].created_at, listed[0].amr) == (("read",), T0, ("admin",))
    assert (listed[0].last_used_at, listed[0].revoked_at) == (None, None)
    as_json = done.reply.model_dump_json()
    assert first_token not in as_json
    assert second_token not in as_json


async def test_listing_tokens_of_an_unknown_account_is_rejected(
    issuing: CredentialCommands,
) -> None:
    done = await issuing.list_tokens(AccountRef(email="nobody@example.io"))

    assert done.reply == CommandRejected(reason="unknown_account")


# --- revoke (A7) ----------------------------------------------------------------------------


async def test_revoke_token_replies_audits_and_broadcasts_token_revoked(
    issuing: CredentialCommands, clock: FakeClock, alice: AccountView
) -> None:
    issued, _ = await issue_token(issuing, ALICE)
    clock.advance(timedelta(minutes=5))

    done = await issuing.revoke_token(issued.token_id)

    expected = TokenRevoked(
        token_id=issued.token_id,
        account_id=issued.account_id,
        revoked_at=T0 + timedelta(minutes=5),
    )
    assert done.reply == expected
    assert done.audit == (expected,)
    assert done.changes == (expected,)


async def test_revoked_token_verifies_as_revoked(
    issuing: CredentialCommands, verifier: Verifier, clock: FakeClock, alice: AccountView
) -> None:
    issued, token = await issue_token(issuing, ALICE)
    await issuing.revoke_token(issued.token_id, account_id=alice.id)
    clock.advance(timedelta(seconds=1))

    verdict = await verdict_of(verifier, bearer(token))

    assert verdict.outcome is Outcome.REVOKED
    assert verdict.account is None


async def test_revoking_an_unknown_token_is_rejected(issuing: CredentialCommands) -> None:
    done = await issuing.revoke_token("no-such-token")

    assert done.reply == CommandRejected(reason="unknown_token")
    assert (done.audit, done.changes) == ((), ())


async def test_revoking_another_accounts_token_is_rejected_as_unknown(
    accounts: AccountCommands,
    issuing: CredentialCommands,
    verifier: Verifier,
    store: MemoryStore,
    alice: AccountView,
) -> None:
    """A user can revoke only their own tokens; the answer does not say the token exists."""
    bob = await create_account(accounts, BOB, BOB_PASSWORD)
    issued, token = await issue_token(issuing, ALICE)

    done = await issuing.revoke_token(issued.token_id, account_id=bob.id)

    assert done.reply == CommandRejected(reason="unknown_token")
    assert (done.audit, done.changes) == ((), ())
    assert store.tokens[issued.token_id].revoked_at is None
    assert (await verdict_of(verifier, bearer(token))).outcome is Outcome.VALID


async def test_revoking_twice_keeps_the_first_revocation_time(
    issuing: CredentialCommands, store: MemoryStore, clock: FakeClock, alice: AccountView
) -> None:
    issued, _ = await issue_token(issuing, ALICE)
    clock.advance(timedelta(minutes=1))
    await issuing.revoke_token(issued.token_id)
    clock.advance(timedelta(minutes=4))

    again = await issuing.revoke_token(issued.token_id)

    assert isinstance(again.reply, TokenRevoked)
    assert again.reply.revoked_at == T0 + timedelta(minutes=1)
    assert store.tokens[issued.token_id].revoked_at == T0 + timedelta(minutes=1)
