"""authz's handlers and the outbox on the in-memory store and a stand-in producer (ADR 0015):
a command's events are published before its reply and leave nothing staged; events that could
not be published (Kafka refused them, or the process died right after the commit) stay staged
and the relay publishes them, the same envelopes, once due; a unit that fails leaves neither
change nor event. Usage reports survive an unreachable store (issue #10 item 6)."""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from pymongo.errors import ServerSelectionTimeoutError

from authbus_authz.core.ports import Account, OutboxEntry, TokenRecord
from authbus_authz.handlers import AuthzHandlers
from authbus_authz.metrics import AuthzMetrics
from authbus_authz.runner import build_handlers, start_keys
from authbus_authz.settings import AuthzSettings, PasswordHashing
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts import topics
from authbus_shared.contracts.authz import AuthMethod, RequestFailed
from authbus_shared.contracts.commands import RevokeToken, RotateKey
from authbus_shared.contracts.envelope import (
    Contract,
    Envelope,
    ReplyTo,
    decode,
    payload_of,
    utcnow,
    wrap,
)
from authbus_shared.contracts.events import (
    CredentialsUsed,
    KeyPublished,
    KeyRotated,
    KeyUsed,
    TokenRevoked,
    Use,
)
from authbus_shared.kafka.admin import resolve
from authbus_shared.kafka.producer import Publisher

KEK = base64.b64encode(os.urandom(32)).decode()


class Crashed(BaseException):
    """Stands for `os._exit` in the fault hook: nothing after it runs."""


class FlakyStore(MemoryStore):
    """The in-memory store, with MongoDB away when asked."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.outbox_fails = False
        self.claims_fail = 0

    def _check(self) -> None:
        if self.down:
            raise ServerSelectionTimeoutError("no server")

    async def add_to_outbox(self, entries: Any) -> None:
        if self.outbox_fails:
            raise ServerSelectionTimeoutError("lost it mid-unit")
        await super().add_to_outbox(entries)

    async def claim_due(self, now: datetime, until: datetime, limit: int) -> list[OutboxEntry]:
        if self.claims_fail > 0:
            self.claims_fail -= 1
            raise ServerSelectionTimeoutError("store away")
        return await super().claim_due(now, until, limit)

    async def touch_tokens(self, last_used: Any) -> None:
        self._check()
        await super().touch_tokens(last_used)

    async def touch_api_keys(self, last_used: Any) -> None:
        self._check()
        await super().touch_api_keys(last_used)


class FakeProducer:
    """What `Publisher` needs of an AIOKafkaProducer; records sends, refuses some topics."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Envelope]] = []
        self.refusing: set[str] = set()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_and_wait(self, topic: str, value: bytes, **_: Any) -> None:
        if topic in self.refusing:
            raise KafkaConnectionError("broker away")
        self.sent.append((topic, decode(value)))

    def on(self, topic: str) -> list[Contract]:
        return [payload_of(e) for t, e in self.sent if t == topic]

    def ids(self, topic: str) -> list[str]:
        return [e.id for t, e in self.sent if t == topic]


@dataclass
class Rig:
    store: FlakyStore
    producer: FakeProducer
    handlers: AuthzHandlers
    settings: AuthzSettings

    def topic(self, spec: topics.TopicSpec) -> str:
        return resolve(spec, self.settings.kafka).name

    async def ask(self, request: Contract) -> Contract:
        reply_to = ReplyTo(topic=self.topic(topics.REPLIES), partition=0, instance="test")
        envelope = wrap(
            request, producer="test", now=utcnow(), reply_to=reply_to, timeout=timedelta(seconds=9)
        )
        await self.handlers.handle(envelope)
        return self.producer.on(self.topic(topics.REPLIES))[-1]


@pytest.fixture
async def rig() -> Rig:
    settings = AuthzSettings(
        key_encryption_key=SecretStr(KEK), passwords=PasswordHashing(time_cost=1, memory_kib=8192)
    )
    store, producer, metrics = FlakyStore(), FakeProducer(), AuthzMetrics(CollectorRegistry())
    publisher = Publisher(settings.kafka, client_id="t", metrics=metrics.kafka, producer=producer)
    keys = await start_keys(store, settings.kek())
    now = utcnow()
    store.accounts["a1"] = Account("a1", "ann@example.com", "ann@example.com", "x", None, now, now)
    store.tokens["t1"] = TokenRecord("t1", "a1", "ci", (), now, None)
    return Rig(store, producer, build_handlers(settings, store, keys, publisher, metrics), settings)


def staged(store: MemoryStore) -> list[OutboxEntry]:
    return sorted(store.outbox.values(), key=lambda e: (e.created_at, e.position))


async def test_a_revocation_is_broadcast_and_audited_before_its_reply(rig: Rig) -> None:
    reply = await rig.ask(RevokeToken(token_id="t1"))

    changes, audit = rig.topic(topics.AUTH_CHANGES), rig.topic(topics.AUTH_AUDIT)
    assert isinstance(reply, TokenRevoked)
    assert [t for t, _ in rig.producer.sent] == [changes, audit, rig.topic(topics.REPLIES)]
    assert rig.producer.on(changes) == rig.producer.on(audit) == [reply]
    assert staged(rig.store) == []  # published, so forgotten


async def test_events_kafka_refused_stay_staged_and_the_relay_publishes_them(rig: Rig) -> None:
    changes = rig.topic(topics.AUTH_CHANGES)
    rig.producer.refusing.add(changes)

    reply = await rig.ask(RevokeToken(token_id="t1"))
    left = staged(rig.store)
    rig.producer.refusing.clear()
    early = await rig.handlers.outbox.relay_once(utcnow())
    relayed = await rig.handlers.outbox.relay_once(utcnow() + timedelta(seconds=5.1))

    assert reply == RequestFailed(reason="unavailable")  # not "revoked": not broadcast yet
    revoked = rig.store.tokens["t1"]
    assert revoked.revoked_at is not None  # the change is committed
    assert [e.topic for e in left] == [changes, rig.topic(topics.AUTH_AUDIT)]
    assert (early, relayed) == (0, 2)
    assert rig.producer.ids(changes) == [left[0].id]  # the very envelope staged
    assert isinstance(rig.producer.on(changes)[0], TokenRevoked)
    assert staged(rig.store) == []


async def test_a_crash_after_the_commit_leaves_the_events_to_the_relay(rig: Rig) -> None:
    def crash(command: str) -> None:
        raise Crashed(command)

    rig.handlers.after_commit = crash

    with pytest.raises(Crashed):
        await rig.ask(RevokeToken(token_id="t1"))
    left = [e.id for e in staged(rig.store)]
    assert rig.producer.sent == []  # neither event nor reply went out
    relayed = await rig.handlers.outbox.relay_once(utcnow() + timedelta(seconds=6))

    assert relayed == 2
    assert [e.id for _, e in rig.producer.sent] == left
    assert staged(rig.store) == []


async def test_a_unit_that_fails_leaves_neither_change_nor_event(rig: Rig) -> None:
    rig.store.outbox_fails = True

    reply = await rig.ask(RevokeToken(token_id="t1"))

    assert reply == RequestFailed(reason="unavailable")
    assert rig.store.tokens["t1"].revoked_at is None  # undone with its events
    assert rig.producer.on(rig.topic(topics.AUTH_CHANGES)) == []


async def test_a_rotation_is_swapped_in_the_unit_and_the_ring_follows_after(rig: Rig) -> None:
    before = rig.handlers.keys.ring.signing_kid

    reply = await rig.ask(RotateKey(use="sig"))

    assert isinstance(reply, KeyRotated) and reply.previous_kid == before
    assert rig.handlers.keys.ring.signing_kid == reply.kid != before
    published = rig.producer.on(rig.topic(topics.AUTHZ_KEYS))
    assert [(k.kid, k.active) for k in published if isinstance(k, KeyPublished)] == [
        (before, False),
        (reply.kid, True),
    ]


async def test_usage_reports_wait_out_an_unreachable_store(rig: Rig) -> None:
    at = utcnow()
    rig.store.api_keys.clear()
    report = CredentialsUsed(
        uses=(
            Use(
                credential_id="t1",
                method=AuthMethod.TOKEN,
                account_id="a1",
                last_used_at=at,
                count=2,
            ),
        )
    )
    rig.store.down = True

    await rig.handlers.handle(wrap(report, producer="api-0", now=at))  # no error: kept
    kept = len(rig.handlers.last_used.pending)
    still_down = await rig.handlers.last_used.flush()
    rig.store.down = False
    written = await rig.handlers.last_used.flush()

    assert (kept, still_down, written) == (1, False, True)
    assert rig.store.tokens["t1"].last_used_at == at
    assert not any(isinstance(e, KeyUsed) for e in rig.producer.on(rig.topic(topics.AUTH_AUDIT)))


async def test_the_relay_rides_out_a_store_and_a_broker_that_fail(rig: Rig) -> None:
    """A relay round that fails is counted and tried again at the next one: the loop (a
    liveness probe watches it) never ends."""

    def crash(command: str) -> None:
        raise Crashed(command)

    rig.handlers.after_commit = crash
    with pytest.raises(Crashed):
        await rig.ask(RevokeToken(token_id="t1"))
    outbox = rig.handlers.outbox
    later = [timedelta(seconds=60)]  # the entries are due; each round 20 s later
    outbox.clock = lambda: utcnow() + later[0]
    rig.store.claims_fail = 1
    rounds: list[int] = []

    async def next_round(_: float) -> None:
        rounds.append(len(rig.producer.sent))
        rig.producer.refusing = {rig.topic(topics.AUTH_CHANGES)} if len(rounds) == 1 else set()
        later[0] += timedelta(seconds=20)  # past the claim of a round that failed
        if len(rounds) == 3:
            raise asyncio.CancelledError

    outbox.sleep = next_round
    with pytest.raises(asyncio.CancelledError):
        await outbox.relay()

    # round 1: the store fails; 2: Kafka refuses; 3: both published (after the claim expired)
    assert rounds == [0, 0, 2]
    assert staged(rig.store) == []
