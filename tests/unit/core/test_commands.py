"""Management commands (SPEC A7, A9, G4, V1): replies are values, events carry no secret."""

from __future__ import annotations

from datetime import timedelta

import pytest

from authbus_authz.core.commands import Commands
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts.authz import (
    AccountCreated,
    AuthMethod,
    CommandRejected,
    CredentialKind,
    NewToken,
    Outcome,
    SealedCredential,
    TokenIssued,
    TokenRevoked,
)
from authbus_shared.sealing import SealingKey

from .support import (
    ALICE,
    ALICE_PASSWORD,
    T0,
    FakeClock,
    b64url,
    create_account,
    issue_token,
)

# --- create account ---------------------------------------------------------------------------


async def test_create_account_stores_an_argon2id_hash_and_audits(
    commands: Commands, store: MemoryStore
) -> None:
    done = await commands.create_account(ALICE, ALICE_PASSWORD, locale=None)

    assert isinstance(done.reply, AccountCreated)
    assert done.audit == (done.reply,)
    assert done.changes == ()
    stored = store.accounts[done.reply.account.id]
    assert (stored.email, stored.email_key, stored.locale) == (ALICE, "alice@example.io", "en")
    assert stored.password_hash.startswith("$argon2id$")
    assert ALICE_PASSWORD not in stored.password_hash
    assert stored.created_at == stored.credentials_changed_at == T0


async def test_create_account_keeps_the_given_locale(commands: Commands) -> None:
    done = await commands.create_account(ALICE, ALICE_PASSWORD, locale="fr")

    assert isinstance(done.reply, AccountCreated)
    assert done.reply.account.locale == "fr"


@pytest.mark.parametrize(
    ("first", "second"), [("A@x.io", "a@X.io"), ("a@x.io", "A@X.IO"), ("a@x.io", "a@x.io")]
)
async def test_email_uniqueness_is_case_insensitive(
    commands: Commands, store: MemoryStore, first: str, second: str
) -> None:
    await create_account(commands, first, ALICE_PASSWORD)

    done = await commands.create_account(second, "a different password", locale=None)

    assert done.reply == CommandRejected(reason="email_taken")
    assert done.audit == ()
    assert len(store.accounts) == 1


@pytest.mark.parametrize(
    "email", ["", "alice", "@example.io", "alice@", "alice@localhost", "al ice@example.io"]
)
async def test_invalid_email_is_rejected(
    commands: Commands, store: MemoryStore, email: str
) -> None:
    done = await commands.create_account(email, ALICE_PASSWORD, locale=None)

    assert done.reply == CommandRejected(reason="invalid_input", detail="email")
    assert store.accounts == {}


@pytest.mark.parametrize(
    ("length", "accepted"), [(7, False), (8, True), (1024, True), (1025, False)]
)
async def test_password_must_be_8_to_1024_characters(
    commands: Commands, length: int, accepted: bool
) -> None:
    done = await commands.create_account(ALICE, "p" * length, locale=None)

    if accepted:
        assert isinstance(done.reply, AccountCreated)
    else:
        assert done.reply == CommandRejected(reason="invalid_input", detail="password length")


# --- issue token -----------------------------------------------------------------------------


async def test_issued_token_opens_with_the_reply_key_and_verifies(
    commands: Commands, verifier: Verifier, store: MemoryStore
) -> None:
    account = await create_account(commands, ALICE, ALICE_PASSWORD)
    reply_key = SealingKey.generate()

    done = await commands.issue_token(
        "alice@EXAMPLE.io",
        name="ci",
        scopes=("write", "read", "write"),
        expires_in=timedelta(days=30),
        reply_key=b64url(reply_key.public),
    )

    assert isinstance(done.reply, NewToken)
    issued = done.reply.token
    assert (issued.account_id, issued.name) == (account.id, "ci")
    assert issued.scopes == ("read", "write")
    assert issued.expires_at == T0 + timedelta(days=30)
    assert store.tokens[issued.token_id].scopes == ("read", "write")
    token = reply_key.open(done.reply.sealed_token).decode()
    verdict = await verifier.verify(SealedCredential(kind=CredentialKind.BEARER, secret=token))
    assert verdict.outcome is Outcome.VALID
    assert verdict.method is AuthMethod.TOKEN
    assert verdict.credential_id == issued.token_id
    assert verdict.scopes == ("read", "write")
    assert verdict.valid_until == T0 + timedelta(days=30)


async def test_token_without_expires_in_never_expires(commands: Commands) -> None:
    await create_account(commands, ALICE, ALICE_PASSWORD)

    issued, _ = await issue_token(commands, ALICE)

    assert issued.expires_at is None


async def test_issue_token_audits_a_token_issued_without_any_secret(commands: Commands) -> None:
    await create_account(commands, ALICE, ALICE_PASSWORD)
    reply_key = SealingKey.generate()

    done = await commands.issue_token(
        ALICE, name="ci", scopes=(), expires_in=None, reply_key=b64url(reply_key.public)
    )

    assert isinstance(done.reply, NewToken)
    token = reply_key.open(done.reply.sealed_token).decode()
    assert done.audit == (done.reply.token,)
    assert isinstance(done.audit[0], TokenIssued)
    assert not {"token", "secret", "sealed_token"} & set(TokenIssued.model_fields)
    assert token not in done.audit[0].model_dump_json()
    assert token not in done.reply.model_dump_json()  # only sealed on the reply topic (A9)
    assert done.changes == ()


@pytest.mark.parametrize(
    "scopes",
    [("",), ("READ",), ("read write",), ("réad",), ("a/b",), ("*",), ("read", "bad scope")],
    ids=str,
)
async def test_bad_scopes_are_rejected(
    commands: Commands, store: MemoryStore, scopes: tuple[str, ...]
) -> None:
    await create_account(commands, ALICE, ALICE_PASSWORD)

    done = await commands.issue_token(
        ALICE,
        name="ci",
        scopes=scopes,
        expires_in=None,
        reply_key=b64url(SealingKey.generate().public),
    )

    assert done.reply == CommandRejected(reason="invalid_input", detail="scopes")
    assert store.tokens == {}


@pytest.mark.parametrize(
    "reply_key",
    ["", "not base64 at all!", "é" * 43, b64url(b"k" * 31), b64url(b"k" * 33), b64url(b"k" * 64)],
    ids=["empty", "garbage", "non-ascii", "31-bytes", "33-bytes", "64-bytes"],
)
async def test_bad_reply_key_is_rejected(
    commands: Commands, store: MemoryStore, reply_key: str
) -> None:
    await create_account(commands, ALICE, ALICE_PASSWORD)

    done = await commands.issue_token(
        ALICE, name="ci", scopes=(), expires_in=None, reply_key=reply_key
    )

    assert done.reply == CommandRejected(reason="invalid_input", detail="reply_key")
    assert store.tokens == {}


async def test_issue_token_for_unknown_account_is_rejected(
    commands: Commands, store: MemoryStore
) -> None:
    done = await commands.issue_token(
        "nobody@example.io",
        name="ci",
        scopes=(),
        expires_in=None,
        reply_key=b64url(SealingKey.generate().public),
    )

    assert done.reply == CommandRejected(reason="unknown_account")
    assert (done.audit, store.tokens) == ((), {})


# --- revoke token ----------------------------------------------------------------------------


async def test_revoke_token_replies_audits_and_broadcasts_token_revoked(
    commands: Commands, clock: FakeClock
) -> None:
    await create_account(commands, ALICE, ALICE_PASSWORD)
    issued, _ = await issue_token(commands, ALICE)
    clock.advance(timedelta(minutes=5))

    done = await commands.revoke_token(issued.token_id)

    expected = TokenRevoked(
        token_id=issued.token_id,
        account_id=issued.account_id,
        revoked_at=T0 + timedelta(minutes=5),
    )
    assert done.reply == expected
    assert done.audit == (expected,)
    assert done.changes == (expected,)


async def test_revoked_token_verifies_as_revoked(
    commands: Commands, verifier: Verifier, clock: FakeClock
) -> None:
    await create_account(commands, ALICE, ALICE_PASSWORD)
    issued, token = await issue_token(commands, ALICE)
    await commands.revoke_token(issued.token_id)
    clock.advance(timedelta(seconds=1))

    verdict = await verifier.verify(SealedCredential(kind=CredentialKind.BEARER, secret=token))

    assert verdict.outcome is Outcome.REVOKED
    assert verdict.account is None


async def test_revoking_an_unknown_token_is_rejected(commands: Commands) -> None:
    done = await commands.revoke_token("no-such-token")

    assert done.reply == CommandRejected(reason="unknown_token")
    assert (done.audit, done.changes) == ((), ())


async def test_revoking_twice_keeps_the_first_revocation_time(
    commands: Commands, store: MemoryStore, clock: FakeClock
) -> None:
    await create_account(commands, ALICE, ALICE_PASSWORD)
    issued, _ = await issue_token(commands, ALICE)
    clock.advance(timedelta(minutes=1))
    await commands.revoke_token(issued.token_id)
    clock.advance(timedelta(minutes=4))

    again = await commands.revoke_token(issued.token_id)

    assert isinstance(again.reply, TokenRevoked)
    assert again.reply.revoked_at == T0 + timedelta(minutes=1)
    assert store.tokens[issued.token_id].revoked_at == T0 + timedelta(minutes=1)
