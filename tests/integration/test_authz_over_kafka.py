"""authz as a service over the real broker and database: commands, verdicts, events, and two
instances giving the same answers (SPEC S1, A1-A7, V1)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from authbus_authz.admin import AdminSettings, connected
from authbus_authz.runner import run as run_authz
from authbus_authz.settings import AuthzSettings
from authbus_dev.infra import InfraConfig
from authbus_shared.authz_client import AuthzClient, Secret
from authbus_shared.contracts import topics
from authbus_shared.contracts.authz import (
    AuthMethod,
    CredentialKind,
    CredentialVerified,
    Outcome,
    SealedCredential,
)
from authbus_shared.contracts.commands import (
    AccountRef,
    AccountScopes,
    CommandRejected,
    GrantScopes,
    NewToken,
    RevokeToken,
)
from authbus_shared.contracts.envelope import Contract
from authbus_shared.contracts.events import (
    AccountCreated,
    ChangesHeartbeat,
    KeyPublished,
    TokenIssued,
    TokenRevoked,
)
from authbus_shared.settings import KafkaSettings
from tests.integration.conftest import authz_instance
from tests.support import collected, eventually, in_process

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def client(authz_settings: AuthzSettings, kafka: KafkaSettings) -> AsyncIterator[AuthzClient]:
    async with (
        in_process(run_authz(authz_settings), authz_settings.ops.port),
        connected(AdminSettings(kafka=kafka, timeout_s=10)) as authz,
    ):
        yield authz


async def verify(client: AuthzClient, credential: SealedCredential) -> CredentialVerified:
    verdict = await client.verify(credential, partition_key=b"k")
    assert isinstance(verdict, CredentialVerified)
    return verdict


async def new_token(
    client: AuthzClient, email: str, scopes: tuple[str, ...] = ()
) -> tuple[str, str]:
    issued = await client.issue_token(email, name="ci", scopes=scopes, expires_in_s=3600)
    assert isinstance(issued, Secret), issued
    assert isinstance(issued.reply, NewToken)
    return issued.reply.token.token_id, issued.value


async def test_an_account_is_created_once_per_email_whatever_its_case(client: AuthzClient) -> None:
    created = await client.create_account("Ann@Example.com", PASSWORD, "fr")
    again = await client.create_account("ann@EXAMPLE.com", PASSWORD, None)

    assert isinstance(created, AccountCreated)
    assert created.account.email == "Ann@Example.com"
    assert created.account.locale == "fr"
    assert again == CommandRejected(reason="email_taken")


async def test_every_credential_form_is_checked_over_kafka(client: AuthzClient) -> None:
    await client.create_account("ann@example.com", PASSWORD, None)
    order = GrantScopes(account=AccountRef(email="ann@example.com"), add=("read",))
    assert isinstance(await client.ask(order, "ann@example.com"), AccountScopes)
    token_id, token = await new_token(client, "ann@example.com", ("read",))

    bearer = await verify(client, SealedCredential(kind=CredentialKind.BEARER, secret=token))
    basic_token = await verify(
        client,
        SealedCredential(kind=CredentialKind.BASIC_TOKEN, secret=token, email="ANN@example.com"),
    )
    password = await verify(
        client,
        SealedCredential(kind=CredentialKind.PASSWORD, secret=PASSWORD, email="ann@example.com"),
    )

    assert (bearer.outcome, bearer.method, bearer.scopes) == (
        Outcome.VALID,
        AuthMethod.TOKEN,
        ("read",),
    )
    assert bearer.credential_id == token_id
    assert bearer.account is not None and bearer.account.email == "ann@example.com"
    assert basic_token.outcome is Outcome.VALID
    assert (password.outcome, password.method, password.scopes) == (
        Outcome.VALID,
        AuthMethod.PASSWORD,
        ("read",),  # the password carries the whole grant (A8)
    )


async def test_wrong_and_unknown_credentials_get_the_same_denial(client: AuthzClient) -> None:
    await client.create_account("ann@example.com", PASSWORD, None)

    wrong = await verify(
        client,
        SealedCredential(kind=CredentialKind.PASSWORD, secret="nope-nope", email="ann@example.com"),
    )
    unknown = await verify(
        client,
        SealedCredential(kind=CredentialKind.PASSWORD, secret="nope-nope", email="who@example.com"),
    )
    garbage = await verify(client, SealedCredential(kind=CredentialKind.BEARER, secret="a.b.c"))

    same = {v.model_copy(update={"checked_at": None}) for v in (wrong, unknown, garbage)}
    assert same == {CredentialVerified(outcome=Outcome.INVALID)}


def news(changes: list[Contract]) -> list[Contract]:
    """The changes feed without its heartbeats (A12)."""
    return [c for c in changes if not isinstance(c, ChangesHeartbeat)]


async def test_revoking_a_token_refuses_it_and_broadcasts_and_audits_the_change(
    client: AuthzClient, kafka: KafkaSettings
) -> None:
    created = await client.create_account("ann@example.com", PASSWORD, None)
    assert isinstance(created, AccountCreated)
    token_id, token = await new_token(client, "ann@example.com")

    revoked = await client.ask(RevokeToken(token_id=token_id), token_id)
    verdict = await verify(client, SealedCredential(kind=CredentialKind.BEARER, secret=token))

    assert isinstance(revoked, TokenRevoked)
    assert verdict.outcome is Outcome.REVOKED
    async with (
        collected(kafka, topics.AUTH_CHANGES) as changes,
        collected(kafka, topics.AUTH_AUDIT) as audit,
    ):
        await eventually(lambda: len(news(changes)) >= 1 and len(audit) >= 3)
    assert news(changes) == [revoked]
    assert [type(e) for e in audit] == [AccountCreated, TokenIssued, TokenRevoked]
    assert all("token" not in e.model_dump() for e in audit)  # no secret in the audit trail (A9)


async def test_two_authz_instances_share_keys_and_give_the_same_verdicts(
    infrastructure: InfraConfig, kafka: KafkaSettings, unique: str, kek: str
) -> None:
    first, second = (
        authz_instance(infrastructure, kafka, database=unique, kek=kek, instance=f"authz-{i}")
        for i in range(2)
    )
    async with (
        in_process(run_authz(first), first.ops.port),
        in_process(run_authz(second), second.ops.port),
        connected(AdminSettings(kafka=kafka, timeout_s=10)) as client,
        collected(kafka, topics.AUTHZ_KEYS) as keys,
    ):
        await client.create_account("ann@example.com", PASSWORD, None)
        tokens = [(await new_token(client, "ann@example.com"))[1] for _ in range(8)]
        verdicts = [
            await verify(client, SealedCredential(kind=CredentialKind.BEARER, secret=t))
            for t in tokens
        ]

    assert {v.outcome for v in verdicts} == {Outcome.VALID}
    published = {(k.kid, k.use) for k in keys if isinstance(k, KeyPublished)}
    assert sorted(use for _, use in published) == ["seal", "sig"]  # one key per use, shared
