"""authz's record cache over the real broker and database (ADR 0019): two instances answer a
token from their caches, and once a revocation is acknowledged neither says "valid" for a
check sent more than the cache's bound (1 s) plus the clock skew (250 ms) later (SPEC A7,
A12)."""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from authbus_authz.admin import AdminSettings, connected
from authbus_authz.runner import run as run_authz
from authbus_authz.settings import AuthzSettings
from authbus_dev.infra import InfraConfig
from authbus_shared.authz_client import AuthzClient
from authbus_shared.contracts.authz import CredentialKind, CredentialVerified, Outcome
from authbus_shared.contracts.authz import SealedCredential as Sealed
from authbus_shared.contracts.commands import RevokeToken
from authbus_shared.contracts.events import TokenRevoked
from authbus_shared.settings import KafkaSettings
from tests.integration.conftest import authz_instance
from tests.integration.test_authz_over_kafka import PASSWORD, new_token
from tests.support import in_process

BOUND_S = 1.0 + 0.25
PARTITION_KEYS = [f"k{i}".encode() for i in range(24)]  # over every verify partition


async def hits(settings: AuthzSettings) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{settings.ops.port}/metrics")).text
    found = re.findall(
        r'^authz_record_cache_reads_total\{kind="token",result="hit"\} (\S+)$', text, re.M
    )
    return sum(float(n) for n in found)


async def outcomes(client: AuthzClient, token: str) -> list[Outcome]:
    credential = Sealed(kind=CredentialKind.BEARER, secret=token)
    verdicts = await asyncio.gather(
        *(client.verify(credential, partition_key=k) for k in PARTITION_KEYS)
    )
    assert all(isinstance(v, CredentialVerified) for v in verdicts), verdicts
    return [v.outcome for v in verdicts if isinstance(v, CredentialVerified)]


async def test_no_instance_answers_a_revoked_token_from_its_cache_past_the_bound(
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
    ):
        await client.create_account("ann@example.com", PASSWORD, None)
        token_id, token = await new_token(client, "ann@example.com")

        async def both_cached() -> bool:
            assert set(await outcomes(client, token)) == {Outcome.VALID}
            return min(await hits(first), await hits(second)) > 0

        deadline = time.monotonic() + 30
        while not await both_cached():
            assert time.monotonic() < deadline, "the instances never answered from cache"
        revoked = await client.ask(RevokeToken(token_id=token_id), token_id)
        acknowledged = time.monotonic()
        assert isinstance(revoked, TokenRevoked)
        seen: list[tuple[float, set[Outcome]]] = []
        while time.monotonic() < acknowledged + BOUND_S + 1.5:
            sent = time.monotonic() - acknowledged
            seen.append((sent, set(await outcomes(client, token))))

    late = [found for sent, found in seen if sent > BOUND_S]
    assert late and all(found == {Outcome.REVOKED} for found in late), seen
