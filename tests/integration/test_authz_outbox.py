"""The outbox on the real broker and MongoDB-wire server, with authz as a real process that
dies at the worst moment (ADR 0015, issue #10 item 4; SPEC A7, A12, V1).

An authz made to exit (`os._exit`, as SIGKILL or a power cut would end it) right after it
commits a revocation, before it publishes anything: the revocation is in the database, its
events only in the outbox, and nothing is on the log. Two authz instances then start; the
revocation reaches a reader of `auth.changes.v1`, and its audit event `auth.audit.v1`, each
exactly once (the very envelopes staged: two relays, one claim), within the relay's bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorDatabase
from prometheus_client import CollectorRegistry

from authbus_authz.admin import AdminSettings, connected
from authbus_authz.faults import CRASH_EXIT_CODE
from authbus_authz.runner import run as run_authz
from authbus_authz.settings import AuthzSettings, OutboxSettings
from authbus_dev.fleet import Fleet, Ports
from authbus_dev.infra import InfraConfig
from authbus_dev.ports import free_port_run
from authbus_shared.authz_client import Secret
from authbus_shared.contracts import topics
from authbus_shared.contracts.authz import CredentialKind, CredentialVerified, Outcome
from authbus_shared.contracts.authz import SealedCredential as Sealed
from authbus_shared.contracts.commands import NewToken, RevokeToken
from authbus_shared.contracts.envelope import Envelope, payload_of, utcnow
from authbus_shared.contracts.events import TokenRevoked
from authbus_shared.kafka.admin import resolve
from authbus_shared.kafka.consumers import BroadcastReader
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.rpc import RpcTimeout
from authbus_shared.settings import KafkaSettings
from tests.support import eventually, in_process

PASSWORD = "correct horse battery staple"
ANN = "ann@example.com"
OUTBOX = OutboxSettings()  # the defaults: what the guarantee is stated for
OUTBOX_DELAY = timedelta(seconds=OUTBOX.relay_after_s)
SLACK_S = 2.0  # a loaded test machine: process start, consumer fetch, scheduling


@dataclasses.dataclass
class Seen:
    envelope: Envelope
    at: datetime


@contextlib.asynccontextmanager
async def envelopes(kafka: KafkaSettings, topic: str) -> AsyncIterator[list[Seen]]:
    """Every envelope on `topic` from its beginning, with when this reader got it."""
    seen: list[Seen] = []

    async def handle(envelope: Envelope) -> None:
        seen.append(Seen(envelope, utcnow()))

    reader = BroadcastReader(
        kafka,
        topics=[topic],
        handler=handle,
        metrics=KafkaMetrics("test", CollectorRegistry()),
        client_id="test-envelopes",
        start_at="beginning",
    )
    await reader.start()
    try:
        yield seen
    finally:
        await reader.stop()


def revocations(seen: list[Seen]) -> list[Seen]:
    return [s for s in seen if isinstance(payload_of(s.envelope), TokenRevoked)]


def fleet(
    infrastructure: InfraConfig, run_dir: Path, kafka: KafkaSettings, env: dict[str, str], n: int
) -> Fleet:
    """`n` authz processes on this test's topics and database (cheap argon2)."""
    return Fleet(
        dataclasses.replace(infrastructure, run_dir=run_dir),
        {"authz": n},
        Ports(authz=free_port_run(n)),
        env={
            "KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
            "PASSWORDS__TIME_COST": "1",
            "PASSWORDS__MEMORY_KIB": "8192",
            **env,
        },
    )


async def first_ready(authz: Fleet) -> datetime:
    """Start every instance; when the first one was ready (the others are waited for too)."""
    for instance in authz.instances():
        authz.start(instance)
    readiness = [asyncio.to_thread(authz.wait_ready, i) for i in authz.instances()]
    took = await asyncio.gather(*readiness)
    return utcnow() - timedelta(seconds=max(took) - min(took))


async def issue_token(authz_settings: AuthzSettings, kafka: KafkaSettings) -> tuple[str, str]:
    """An account and a token, made by an in-process authz that then stops."""
    async with (
        in_process(run_authz(authz_settings), authz_settings.ops.port),
        connected(AdminSettings(kafka=kafka, timeout_s=10)) as client,
    ):
        await client.create_account(ANN, PASSWORD, None)
        issued = await client.issue_token(ANN, name="ci", expires_in_s=3600)
    assert isinstance(issued, Secret) and isinstance(issued.reply, NewToken)
    return issued.reply.token.token_id, issued.value


async def crash_while_revoking(faulty: Fleet, kafka: KafkaSettings, token_id: str) -> datetime:
    """Ask the faulty authz to revoke; it dies right after the commit. Until when the asker
    waited (the command's deadline)."""
    crashing = faulty.instances()[0]
    faulty.start(crashing)
    try:
        await asyncio.to_thread(faulty.wait_ready, crashing)
        async with connected(AdminSettings(kafka=kafka, timeout_s=3)) as client:
            with pytest.raises(RpcTimeout):  # no reply: it died right after the commit
                await client.ask(RevokeToken(token_id=token_id), token_id)
        asked_until = utcnow()
        exit_code = await asyncio.to_thread(faulty.process(crashing).wait_exit, 10)
    finally:
        faulty.stop_all()
    assert exit_code == CRASH_EXIT_CODE
    return asked_until


async def test_a_revocation_committed_by_an_authz_killed_before_publishing_is_broadcast_once(
    infrastructure: InfraConfig,
    kafka: KafkaSettings,
    authz_settings: AuthzSettings,
    mongo_db: AsyncIOMotorDatabase[dict[str, Any]],
    unique: str,
    kek: str,
    tmp_path: Path,
) -> None:
    token_id, token = await issue_token(authz_settings, kafka)
    env = {"MONGO__DATABASE": unique, "KEY_ENCRYPTION_KEY": kek}
    crash = {"CRASH_AFTER_COMMIT": "revoke_token"}
    faulty = fleet(infrastructure, tmp_path / "faulty", kafka, env | crash, 1)
    asked_until = await crash_while_revoking(faulty, kafka, token_id)

    record = await mongo_db["tokens"].find_one({"_id": token_id})
    staged = await mongo_db["outbox"].find().sort("position", 1).to_list(None)
    changes_topic, audit_topic = (
        resolve(t, kafka).name for t in (topics.AUTH_CHANGES, topics.AUTH_AUDIT)
    )
    assert record is not None and record["revoked_at"] is not None  # committed
    assert [doc["topic"] for doc in staged] == [changes_topic, audit_topic]
    committed_at = staged[0]["created_at"]

    restarted = fleet(infrastructure, tmp_path / "restarted", kafka, env, 2)
    async with envelopes(kafka, changes_topic) as changes, envelopes(kafka, audit_topic) as audit:
        await asyncio.sleep(1.0)
        assert revocations(changes) == []  # nothing was broadcast before the crash
        # The unanswered command is read again by the new instances; past its deadline it is
        # skipped, so what arrives is the relay's work alone.
        await asyncio.sleep(max(0.0, (asked_until - utcnow()).total_seconds()))
        started_at = utcnow()
        try:
            ready_at = await first_ready(restarted)
            await eventually(lambda: bool(revocations(changes) and revocations(audit)), 30)
            await asyncio.sleep(2 * OUTBOX.relay_interval_s + 1)  # room for a second publish
            verdict = await verify(kafka, token)
        finally:
            restarted.stop_all()

    broadcast, audited = revocations(changes), revocations(audit)
    assert [s.envelope.id for s in broadcast] == [staged[0]["_id"]]  # once, the staged one
    assert [s.envelope.id for s in audited] == [staged[1]["_id"]]
    assert verdict.outcome is Outcome.REVOKED
    assert await mongo_db["outbox"].count_documents({}) == 0
    arrived = broadcast[0].at
    late = (arrived - max(ready_at, committed_at + OUTBOX_DELAY)).total_seconds()
    print(  # the measurement quoted in ADR 0015
        f"\nbroadcast {(arrived - committed_at).total_seconds():.2f} s after the commit,"
        f" {(arrived - started_at).total_seconds():.2f} s after the restart,"
        f" {(arrived - ready_at).total_seconds():.2f} s after the first instance was ready"
        f" ({(ready_at - started_at).total_seconds():.2f} s after the restart),"
        f" {late:.2f} s after it was due"
    )
    assert late <= OUTBOX.relay_interval_s + SLACK_S


async def verify(kafka: KafkaSettings, token: str) -> CredentialVerified:
    async with connected(AdminSettings(kafka=kafka, timeout_s=10)) as client:
        verdict = await client.verify(
            Sealed(kind=CredentialKind.BEARER, secret=token), partition_key=b"k"
        )
    assert isinstance(verdict, CredentialVerified)
    return verdict
