"""Usage reports survive a MongoDB outage (issue #10 item 6; ADR 0015), on the real broker and
a MongoDB-wire server of this test's own, stopped for a few seconds and started again.

While the store is away, a report's last-used times wait in authz (one per credential) and its
`KeyUsed` audit event is published all the same; once the store is back they are written, and
authz never stopped running.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from authbus_authz.admin import AdminSettings, connected
from authbus_authz.runner import run as run_authz
from authbus_authz.settings import AuthzSettings, MongoSettings, UsageSettings
from authbus_dev import infra
from authbus_dev.infra import InfraConfig
from authbus_dev.ports import free_port
from authbus_shared.authz_client import AuthzClient, Secret
from authbus_shared.contracts import topics
from authbus_shared.contracts.authz import AuthMethod
from authbus_shared.contracts.commands import (
    AccountRef,
    KeyList,
    ListKeys,
    ListTokens,
    NewKey,
    NewToken,
    TokenList,
)
from authbus_shared.contracts.envelope import utcnow, wrap
from authbus_shared.contracts.events import CredentialsUsed, KeyUsed, Use
from authbus_shared.kafka.admin import resolve
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Publisher
from authbus_shared.settings import KafkaSettings
from tests.integration.conftest import authz_instance
from tests.support import collected, eventually, in_process

PASSWORD = "correct horse battery staple"
ANN = "ann@example.com"
OUTAGE_S = 4.0


@pytest.fixture
async def own_mongo(tmp_path: Path, infrastructure: InfraConfig) -> AsyncIterator[InfraConfig]:
    """A MongoDB-wire server for this test alone (stopping it disturbs no other test)."""
    cfg = InfraConfig(
        run_dir=tmp_path, kafka_port=infrastructure.kafka_port, mongo_port=free_port()
    )
    await asyncio.to_thread(infra.start_mongo, cfg)
    try:
        await asyncio.to_thread(infra.wait_mongo, cfg)
        yield cfg
    finally:
        await asyncio.to_thread(infra.mongo_process(cfg).stop)


async def pending(settings: AuthzSettings) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{settings.ops.port}/metrics")).text
    found = re.search(r"^authz_usage_pending_credentials (\S+)$", text, re.MULTILINE)
    assert found is not None
    return float(found.group(1))


async def report(kafka: KafkaSettings, *uses: Use) -> None:
    publisher = Publisher(kafka, client_id="api-t", metrics=KafkaMetrics("t", CollectorRegistry()))
    await publisher.start()
    try:
        envelope = wrap(CredentialsUsed(uses=uses), producer="api-t", now=utcnow())
        await publisher.publish(resolve(topics.AUTH_USAGE, kafka).name, envelope)
    finally:
        await publisher.stop()


async def last_used(client: AuthzClient) -> tuple[datetime | None, datetime | None]:
    me = AccountRef(email=ANN)
    tokens, keys = (
        await client.ask(ListTokens(account=me), ANN),
        await client.ask(ListKeys(account=me), ANN),
    )
    assert isinstance(tokens, TokenList) and isinstance(keys, KeyList)
    return tokens.tokens[0].last_used_at, keys.keys[0].last_used_at


async def credentials(client: AuthzClient) -> list[Use]:
    """An account with a token and a legacy key; a use of each, as the api would report."""
    await client.create_account(ANN, PASSWORD, None)
    token = await client.issue_token(ANN, name="ci")
    key = await client.create_key(AccountRef(email=ANN), name="legacy")
    assert isinstance(token, Secret) and isinstance(token.reply, NewToken)
    assert isinstance(key, Secret) and isinstance(key.reply, NewKey)
    at = utcnow().replace(microsecond=0)  # MongoDB keeps milliseconds
    used = [(token.reply.token.token_id, AuthMethod.TOKEN), (key.reply.key.key_id, AuthMethod.KEY)]
    account = key.reply.key.account_id
    return [
        Use(credential_id=c, method=m, account_id=account, last_used_at=at, count=3)
        for c, m in used
    ]


async def test_last_used_times_reported_while_mongodb_is_down_are_written_once_it_is_back(
    infrastructure: InfraConfig, kafka: KafkaSettings, own_mongo: InfraConfig, unique: str, kek: str
) -> None:
    settings = authz_instance(infrastructure, kafka, database=unique, kek=kek, instance="authz-0")
    mongo = MongoSettings(uri=own_mongo.mongo_uri, database=unique, server_selection_timeout_ms=500)
    settings = settings.model_copy(update={"mongo": mongo, "usage": UsageSettings(retry_s=0.5)})
    async with (
        in_process(run_authz(settings), settings.ops.port) as authz,
        connected(AdminSettings(kafka=kafka, timeout_s=10)) as client,
        collected(kafka, topics.AUTH_AUDIT) as audit,
    ):
        uses = await credentials(client)

        await asyncio.to_thread(infra.mongo_process(own_mongo).stop)
        await report(kafka, *uses)
        await eventually(lambda: any(isinstance(e, KeyUsed) for e in audit))  # not held back
        await eventually_async(lambda: pending(settings), 2.0)
        await asyncio.sleep(OUTAGE_S)
        still_waiting = await pending(settings)
        await asyncio.to_thread(infra.start_mongo, own_mongo)
        await asyncio.to_thread(infra.wait_mongo, own_mongo)
        await eventually_async(lambda: pending(settings), 0.0, timeout_s=20)
        times = await last_used(client)

        assert not authz.done()  # the outage ended nothing
    assert still_waiting == 2.0
    assert times == (uses[0].last_used_at, uses[1].last_used_at)


async def eventually_async(
    probe: Callable[[], Awaitable[float]], expected: float, timeout_s: float = 15.0
) -> None:
    """Wait until the awaited `probe()` gives `expected`."""
    async with asyncio.timeout(timeout_s):
        while await probe() != expected:
            await asyncio.sleep(0.1)
