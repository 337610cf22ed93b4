"""authz's composition root: wires MongoDB, Kafka, the core, metrics and probes, then runs
until SIGTERM. Start order: store (indexes, keys) -> topics -> producer (publish public keys)
-> group consumer -> ops endpoint. Stop: not ready -> consumer -> producer -> store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

import structlog
from cryptography.exceptions import InvalidTag
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from authbus_authz.core.commands import Commands
from authbus_authz.core.keys import KeyRing, new_sealing_key, new_signing_key
from authbus_authz.core.passwords import Passwords
from authbus_authz.core.ports import CredentialStore
from authbus_authz.core.verifier import Verifier
from authbus_authz.handlers import AuthzHandlers, Topics
from authbus_authz.metrics import AuthzMetrics
from authbus_authz.settings import AuthzSettings
from authbus_authz.stores.mongo import MongoStore, connect
from authbus_shared.contracts import topics
from authbus_shared.contracts.authz import KeyPublished
from authbus_shared.contracts.envelope import utcnow, wrap
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.kafka.consumers import GroupConsumer
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import Responder
from authbus_shared.lifecycle import until_stopped
from authbus_shared.ops import Probes, Watch, ops_app, ops_config, start_http, stop_http
from authbus_shared.settings import ConfigError

log = structlog.get_logger(__name__)
T = TypeVar("T")


async def load_keys(store: CredentialStore, kek: bytes) -> KeyRing:
    """The shared keys; the first authz instance ever to start creates them."""
    now = utcnow()
    signing = await store.active_key("sig", new_signing_key(kek, now))
    await store.active_key("seal", new_sealing_key(kek, now))
    try:
        return KeyRing.load(kek, await store.keys(), active_signing=signing.kid)
    except InvalidTag:
        raise ConfigError(
            "AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY cannot decrypt the keys stored in MongoDB "
            "(a different key than the one they were created with)"
        ) from None


class ThreadRunner:
    """Runs CPU-bound work in threads, at most `limit` at once (argon2 releases the GIL)."""

    def __init__(self, limit: int) -> None:
        self._gate = asyncio.Semaphore(limit)

    async def __call__(self, fn: Callable[[], T], /) -> T:
        async with self._gate:
            return await asyncio.to_thread(fn)


async def run(settings: AuthzSettings) -> int:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    metrics = AuthzMetrics(registry)
    probes = Probes()
    kafka = settings.kafka
    verify, commands, replies, keys, changes, audit = (
        resolve(t, kafka)
        for t in (
            topics.AUTH_VERIFY,
            topics.AUTHZ_COMMANDS,
            topics.REPLIES,
            topics.AUTHZ_KEYS,
            topics.AUTH_CHANGES,
            topics.AUTH_AUDIT,
        )
    )
    client_id = f"{kafka.client_id_prefix}-authz-{settings.instance_id}"

    async with contextlib.AsyncExitStack() as stack:
        mongo = connect(settings.mongo)
        stack.callback(mongo.close)
        store = MongoStore(mongo[settings.mongo.database])
        await store.ping()
        await store.create_indexes()
        ring = await load_keys(store, settings.kek())
        mongo_watch = Watch(store.ping)
        await mongo_watch.start()
        stack.push_async_callback(mongo_watch.stop)

        await ensure_topics(kafka, [verify, commands, replies, keys, changes, audit])
        publisher = Publisher(kafka, client_id=client_id, metrics=metrics.kafka)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        await publish_keys(publisher, ring, keys.name, settings.instance_id)

        passwords = Passwords(
            time_cost=settings.passwords.time_cost,
            memory_kib=settings.passwords.memory_kib,
            parallelism=settings.passwords.parallelism,
        )
        blocking = ThreadRunner(settings.passwords.max_concurrent)
        handlers = AuthzHandlers(
            verifier=Verifier(
                store=store,
                passwords=passwords,
                run_blocking=blocking,
                clock=utcnow,
                ring=lambda: ring,
                issuer=settings.issuer,
                audience=settings.audience,
            ),
            commands=Commands(
                store=store,
                passwords=passwords,
                run_blocking=blocking,
                clock=utcnow,
                ring=ring,
                issuer=settings.issuer,
                audience=settings.audience,
                default_locale=settings.default_locale,
            ),
            ring=ring,
            responder=Responder(publisher, reply_topic=replies, instance_id=settings.instance_id),
            publisher=publisher,
            topics=Topics(audit=audit.name, changes=changes.name),
            metrics=metrics,
            instance_id=settings.instance_id,
        )
        consumer = GroupConsumer(
            kafka,
            group_id=f"{kafka.topic_prefix}authz",
            topics=[verify.name, commands.name],
            handler=handlers.handle,
            metrics=metrics.kafka,
            client_id=client_id,
            concurrency=64,
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)

        probes.live("consumer", lambda: consumer.alive)
        probes.ready("mongo", lambda: mongo_watch.ok)
        probes.ready("kafka_producer", lambda: publisher.started)
        probes.ready("consumer_caught_up", lambda: consumer.caught_up)
        server, server_task = await start_http(
            ops_config(ops_app(registry, probes), settings.ops.host, settings.ops.port)
        )
        stack.push_async_callback(stop_http, server, server_task)
        log.info("authz started", ops_port=settings.ops.port, signing_kid=ring.signing_kid)

        why = await until_stopped(server_task, consumer.task)
        probes.stopping = True
        log.info("authz stopping", reason=why)
    log.info("authz stopped", reason=why)
    return 1 if why == "failed" else 0


async def publish_keys(publisher: Publisher, ring: KeyRing, topic: str, instance: str) -> None:
    """Publish every public key (compacted by kid); idempotent, done by each instance at start."""
    for key in ring.published:
        event = KeyPublished(
            kid=key.kid, use=key.use, jwk=key.public_jwk, created_at=key.created_at
        )
        await publisher.publish(topic, wrap(event, producer=instance, now=utcnow()), key=key.kid)
