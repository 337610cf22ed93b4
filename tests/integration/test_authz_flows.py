"""authz's flows over the real broker and MongoDB-wire server: legacy keys, login 2FA,
self-service tokens, login throttling, key rotation across two instances, batched usage, and
scopes granted by operators with the CLI (SPEC A1, A3, A5, A7, A8, A10, G4, V1)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pyotp
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from authbus_authz.admin import AdminSettings, connected
from authbus_authz.admin.cli import app as admin_cli
from authbus_authz.runner import run as run_authz
from authbus_authz.settings import AuthzSettings
from authbus_dev.infra import InfraConfig
from authbus_shared import apikeys
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
    NewKey,
    NewToken,
    RevokeKey,
    RotateKey,
    SealedLogin,
    TotpEnrollment,
)
from authbus_shared.contracts.envelope import utcnow, wrap
from authbus_shared.contracts.events import (
    AccountChanged,
    CredentialsUsed,
    KeyRevoked,
    KeyRotated,
    KeyUsed,
    LoginFailed,
    LoginThrottled,
    Use,
)
from authbus_shared.kafka.admin import resolve
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Publisher
from authbus_shared.settings import KafkaSettings
from tests.integration.conftest import authz_instance
from tests.support import collected, eventually, in_process

PASSWORD = "correct horse battery staple"
ANN = "ann@example.com"


@pytest.fixture
async def client(authz_settings: AuthzSettings, kafka: KafkaSettings) -> AsyncIterator[AuthzClient]:
    async with (
        in_process(run_authz(authz_settings), authz_settings.ops.port),
        connected(AdminSettings(kafka=kafka, timeout_s=10)) as authz,
    ):
        await authz.create_account(ANN, PASSWORD, None)
        yield authz


async def verify(
    client: AuthzClient, kind: CredentialKind, secret: str, email: str | None = None
) -> CredentialVerified:
    verdict = await client.verify(
        SealedCredential(kind=kind, secret=secret, email=email), partition_key=b"k"
    )
    assert isinstance(verdict, CredentialVerified)
    return verdict


def secret_of(reply: object) -> Secret:
    assert isinstance(reply, Secret), reply
    return reply


async def test_a_legacy_key_works_only_with_its_email_until_revoked(
    client: AuthzClient, kafka: KafkaSettings
) -> None:
    granted = await client.ask(GrantScopes(account=AccountRef(email=ANN), add=("read",)), ANN)
    assert isinstance(granted, AccountScopes)
    created = secret_of(
        await client.create_key(AccountRef(email=ANN), name="legacy", scopes=("read",))
    )
    assert isinstance(created.reply, NewKey)
    key = created.value

    valid = await verify(client, CredentialKind.KEY, key, ANN.upper())
    elsewhere = await verify(client, CredentialKind.KEY, key, "bob@example.com")
    revoked = await client.ask(RevokeKey(key_id=created.reply.key.key_id), ANN)
    after = await verify(client, CredentialKind.KEY, key, ANN)

    assert apikeys.well_formed(key)
    assert (valid.outcome, valid.method, valid.deprecated, valid.scopes) == (
        Outcome.VALID,
        AuthMethod.KEY,
        True,
        ("read",),
    )
    assert elsewhere.outcome is Outcome.INVALID
    assert isinstance(revoked, KeyRevoked)
    assert after.outcome is Outcome.REVOKED
    async with collected(kafka, topics.AUTH_CHANGES) as changes:
        await eventually(lambda: revoked in changes)


async def test_login_2fa_refuses_passwords_and_marks_tokens_made_with_a_code(
    client: AuthzClient,
) -> None:
    me = AccountRef(email=ANN)
    enrolment = secret_of(await client.enroll_totp(me))
    assert isinstance(enrolment.reply, TotpEnrollment)
    totp = pyotp.parse_uri(enrolment.value)
    assert isinstance(totp, pyotp.TOTP)
    now = datetime.now()

    confirmed = await client.confirm_totp(me, totp.at(now))
    password = await verify(client, CredentialKind.PASSWORD, PASSWORD, ANN)
    without_code = await client.create_token(SealedLogin(email=ANN, password=PASSWORD), name="cli")
    replayed = await client.create_token(
        SealedLogin(email=ANN, password=PASSWORD, totp_code=totp.at(now)), name="cli"
    )
    with_code = secret_of(
        await client.create_token(
            SealedLogin(email=ANN, password=PASSWORD, totp_code=totp.at(now, counter_offset=1)),
            name="cli",
        )
    )
    token = await verify(client, CredentialKind.BEARER, with_code.value)

    assert isinstance(confirmed, AccountChanged) and confirmed.change == "totp_enabled"
    assert password.outcome is Outcome.NEEDS_TOKEN
    assert without_code == CommandRejected(reason="totp_required")
    assert replayed == CommandRejected(reason="invalid_code")  # the confirmation used that step
    assert isinstance(with_code.reply, NewToken) and with_code.reply.token.amr == (
        "pwd",
        "otp",
        "mfa",
    )
    assert (token.outcome, token.mfa) == (Outcome.VALID, True)


async def test_repeated_wrong_passwords_are_throttled_and_audited(
    client: AuthzClient, kafka: KafkaSettings
) -> None:
    async def attempt(secret: str) -> CredentialVerified:
        sealed = SealedCredential(kind=CredentialKind.PASSWORD, secret=secret, email=ANN)
        verdict = await client.verify(sealed, partition_key=b"k", client="203.0.113.7")
        assert isinstance(verdict, CredentialVerified)
        return verdict

    wrong = [await attempt(f"wrong-{i}") for i in range(4)]
    right_but_blocked = await attempt(PASSWORD)

    assert [v.outcome for v in wrong] == [Outcome.INVALID] * 3 + [Outcome.INVALID]
    assert right_but_blocked.outcome is Outcome.THROTTLED
    assert right_but_blocked.retry_after_s is not None and right_but_blocked.retry_after_s >= 1
    async with collected(kafka, topics.AUTH_AUDIT) as audit:
        await eventually(lambda: sum(isinstance(e, LoginFailed) for e in audit) >= 4)
        await eventually(
            lambda: any(isinstance(e, LoginThrottled) and e.scope == "pair" for e in audit)
        )


async def test_a_rotation_on_one_instance_is_honoured_by_the_other(
    infrastructure: InfraConfig, kafka: KafkaSettings, unique: str, kek: str
) -> None:
    first, second = (
        authz_instance(infrastructure, kafka, database=unique, kek=kek, instance=f"authz-{i}")
        for i in range(2)
    )
    async with (
        in_process(run_authz(first), first.ops.port),
        in_process(run_authz(second), second.ops.port),
        connected(AdminSettings(kafka=kafka, timeout_s=10)) as authz,
    ):
        await authz.create_account(ANN, PASSWORD, None)
        before = secret_of(await authz.issue_token(ANN, name="before")).value
        rotated = await authz.ask(RotateKey(use="sig"), "sig")
        await authz.ask(RotateKey(use="seal"), "seal")
        after = [secret_of(await authz.issue_token(ANN, name=f"after-{i}")).value for i in range(6)]
        verdicts = [
            await verify(authz, CredentialKind.BEARER, t)
            for t in (before, *after)
            for _ in range(2)
        ]

    assert isinstance(rotated, KeyRotated)
    assert {v.outcome for v in verdicts} == {Outcome.VALID}  # old and new tokens, both instances


async def test_uses_are_recorded_in_batches_and_key_uses_audited(
    client: AuthzClient, kafka: KafkaSettings
) -> None:
    key = secret_of(await client.create_key(AccountRef(email=ANN), name="legacy"))
    assert isinstance(key.reply, NewKey)
    key_id, account_id = key.reply.key.key_id, key.reply.key.account_id
    at = utcnow()
    report = CredentialsUsed(
        uses=(
            Use(
                credential_id=key_id,
                method=AuthMethod.KEY,
                account_id=account_id,
                last_used_at=at,
                count=3,
            ),
            Use(
                credential_id=key_id,
                method=AuthMethod.KEY,
                account_id=account_id,
                last_used_at=at,
                count=2,
            ),
        )
    )
    publisher = Publisher(kafka, client_id="t", metrics=KafkaMetrics("t", CollectorRegistry()))
    await publisher.start()
    try:
        await publisher.publish(
            resolve(topics.AUTH_USAGE, kafka).name, wrap(report, producer="t", now=at)
        )
    finally:
        await publisher.stop()

    async with collected(kafka, topics.AUTH_AUDIT) as audit:
        await eventually(lambda: any(isinstance(e, KeyUsed) for e in audit))
    used = next(e for e in audit if isinstance(e, KeyUsed))
    assert (used.key_id, used.uses) == (key_id, 5)


async def admin(kafka: KafkaSettings, *args: str) -> dict[str, Any]:
    """The operators' CLI (`authbus-admin ... --json`) against this test's topics."""
    env = {"AUTHBUS_ADMIN_KAFKA__TOPIC_PREFIX": kafka.topic_prefix}
    argv = [*args, "--bootstrap", kafka.bootstrap_servers, "--json"]
    # Its own event loop, in a thread: the CLI calls asyncio.run.
    result = await asyncio.to_thread(CliRunner().invoke, admin_cli, argv, env=env)
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


async def test_operators_grant_scopes_and_only_granted_scopes_are_issued_and_apply(
    client: AuthzClient, kafka: KafkaSettings
) -> None:
    """A8 over the real broker and database: a grant from the CLI; a token inside it issued,
    beyond it refused; a scope taken away is gone from the next verification; every change
    broadcast for the api caches."""
    granted = await admin(kafka, "account", "grant-scopes", ANN, "write", "read")
    token = secret_of(await client.issue_token(ANN, name="ci", scopes=("read", "write"))).value
    beyond = await client.issue_token(ANN, name="ci", scopes=("read", "admin"))
    self_made = await client.create_token(
        SealedLogin(email=ANN, password=PASSWORD), name="mine", scopes=("admin",)
    )
    before = await verify(client, CredentialKind.BEARER, token)

    revoked = await admin(kafka, "account", "revoke-scopes", ANN, "write")
    after = await verify(client, CredentialKind.BEARER, token)
    shown = await admin(kafka, "account", "show", ANN)

    assert granted["scopes"] == ["read", "write"]
    assert beyond == self_made == CommandRejected(reason="scope_not_granted", detail="admin")
    assert (before.outcome, before.scopes) == (Outcome.VALID, ("read", "write"))
    assert revoked["scopes"] == ["read"]
    assert (after.outcome, after.scopes) == (Outcome.VALID, ("read",))
    assert shown["account"]["email"] == ANN and shown["scopes"] == ["read"]
    assert (shown["totp_enabled"], shown["disabled"]) == (False, False)
    async with collected(kafka, topics.AUTH_CHANGES) as changes:
        await eventually(
            lambda: (
                [e.change for e in changes if isinstance(e, AccountChanged)]
                == ["scopes_changed"] * 2
            )
        )


async def test_the_cli_for_people_reads_a_piped_password_and_names_what_it_made(
    client: AuthzClient, kafka: KafkaSettings
) -> None:
    """Without --json: a piped password is read without a prompt or an echo warning, a short
    one is refused with the policy, and `token create` prints the token alone on stdout and
    its id (what `token revoke` takes) on stderr."""
    env = {"AUTHBUS_ADMIN_KAFKA__TOPIC_PREFIX": kafka.topic_prefix}
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"

    def cli(*args: str, stdin: str | None = None) -> Any:
        argv = [*args, "--bootstrap", kafka.bootstrap_servers]
        return CliRunner().invoke(admin_cli, argv, input=stdin, env=env)

    short = await asyncio.to_thread(cli, "account", "create", email, stdin="short\n")
    created = await asyncio.to_thread(cli, "account", "create", email, stdin=PASSWORD + "\n")
    token = await asyncio.to_thread(cli, "token", "create", email, "--name", "people")

    assert short.exit_code == 1
    assert "refused: weak_password (8 to 1024 characters)" in short.stderr
    assert created.exit_code == 0, created.output
    assert "created account" in created.stdout
    assert "Warning" not in created.output and "Password" not in created.output
    assert token.exit_code == 0, token.output
    assert token.stdout.count(".") == 2 and token.stdout.strip() == token.stdout.strip().split()[0]
    assert re.fullmatch(r"token id (\S+) \(authbus-admin token revoke \1\)\n", token.stderr)


async def test_limits_without_ratelimit_says_so(client: AuthzClient, kafka: KafkaSettings) -> None:
    """The operator's other commands work with no ratelimit deployed; `limits` names what is
    missing instead of hanging or printing a traceback."""
    env = {"AUTHBUS_ADMIN_KAFKA__TOPIC_PREFIX": kafka.topic_prefix}
    argv = ["limits", "show", "198.51.100.1", "--bootstrap", kafka.bootstrap_servers]
    result = await asyncio.to_thread(CliRunner().invoke, admin_cli, argv, env=env)

    assert result.exit_code == 1, result.output
    assert "ratelimit.leases.v1: is ratelimit running?" in result.stderr
