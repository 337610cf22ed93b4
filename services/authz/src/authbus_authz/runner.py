"""authz's composition root: wires MongoDB, Kafka, the core, metrics and probes, then runs
until SIGTERM. Start order: store (indexes, keys) -> topics -> producer (publish public keys)
-> keys reader (rotations by other instances) -> group consumer -> rotation timer -> ops
endpoint. Stop: not ready -> in reverse."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import structlog
from cryptography.exceptions import InvalidTag
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands
from authbus_authz.core.keyring import KeyService
from authbus_authz.core.passwords import Passwords
from authbus_authz.core.throttle import Throttle
from authbus_authz.core.usage import Usage
from authbus_authz.core.verifier import Verifier
from authbus_authz.handlers import AuthzHandlers, Topics, published
from authbus_authz.metrics import AuthzMetrics
from authbus_authz.settings import AuthzSettings
from authbus_authz.stores.mongo import MongoStore, connect
from authbus_shared.contracts import topics
from authbus_shared.contracts.envelope import Envelope, payload_of, utcnow, wrap
from authbus_shared.contracts.events import KeyPublished
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.kafka.consumers import BroadcastReader
from authbus_shared.kafka.group import GroupConsumer
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import Responder
from authbus_shared.lifecycle import StopSignals, until_stopped
from authbus_shared.ops import Probes, Watch, ops_app, ops_config, start_http, stop_http
from authbus_shared.settings import ConfigError

log = structlog.get_logger(__name__)
T = TypeVar("T")
ROTATION_CHECK_S = 3600.0


class ThreadRunner:
    """Runs CPU-bound work in threads, at most `limit` at once (argon2 releases the GIL)."""

    def __init__(self, limit: int) -> None:
        self._gate = asyncio.Semaphore(limit)

    async def __call__(self, fn: Callable[[], T], /) -> T:
        async with self._gate:
            return await asyncio.to_thread(fn)


async def start_keys(store: MongoStore, kek: bytes) -> KeyService:
    keys = KeyService(store=store, kek=kek, clock=utcnow)
    try:
        await keys.start()
    except InvalidTag:
        raise ConfigError(
            "AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY cannot decrypt the keys stored in MongoDB "
            "(a different key than the one they were created with)"
        ) from None
    return keys


def build_handlers(
    settings: AuthzSettings,
    store: MongoStore,
    keys: KeyService,
    publisher: Publisher,
    metrics: AuthzMetrics,
) -> AuthzHandlers:
    kafka = settings.kafka
    hashing = settings.passwords
    passwords = Passwords(
        time_cost=hashing.time_cost, memory_kib=hashing.memory_kib, parallelism=hashing.parallelism
    )
    blocking = ThreadRunner(hashing.max_concurrent)
    throttle = Throttle(store)
    verifier = Verifier(
        store=store,
        keys=keys,
        passwords=passwords,
        throttle=throttle,
        run_blocking=blocking,
        clock=utcnow,
        issuer=settings.issuer,
        audience=settings.audience,
    )
    accounts = AccountCommands(
        store=store,
        verifier=verifier,
        throttle=throttle,
        passwords=passwords,
        run_blocking=blocking,
        clock=utcnow,
        kek=settings.kek(),
        default_locale=settings.default_locale,
        totp_issuer=settings.totp_issuer,
    )
    credentials = CredentialCommands(
        store=store,
        keys=keys,
        verifier=verifier,
        accounts=accounts,
        clock=utcnow,
        issuer=settings.issuer,
        audience=settings.audience,
        keys_creation_enabled=settings.keys_creation_enabled,
    )
    return AuthzHandlers(
        verifier=verifier,
        accounts=accounts,
        credentials=credentials,
        usage=Usage(store),
        keys=keys,
        responder=Responder(
            publisher, reply_topic=resolve(topics.REPLIES, kafka), instance_id=settings.instance_id
        ),
        publisher=publisher,
        topics=Topics(
            audit=resolve(topics.AUTH_AUDIT, kafka).name,
            changes=resolve(topics.AUTH_CHANGES, kafka).name,
            keys=resolve(topics.AUTHZ_KEYS, kafka).name,
        ),
        metrics=metrics,
        instance_id=settings.instance_id,
    )


async def run(settings: AuthzSettings) -> int:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    metrics = AuthzMetrics(registry)
    probes = Probes()
    kafka = settings.kafka
    used = [
        resolve(t, kafka)
        for t in (
            topics.AUTH_VERIFY,
            topics.AUTHZ_COMMANDS,
            topics.AUTH_USAGE,
            topics.REPLIES,
            topics.AUTHZ_KEYS,
            topics.AUTH_CHANGES,
            topics.AUTH_AUDIT,
        )
    ]
    client_id = f"{kafka.client_id_prefix}-authz-{settings.instance_id}"

    async with contextlib.AsyncExitStack() as stack:
        stop = StopSignals.install()  # before anything can answer a probe
        stack.callback(stop.uninstall)
        mongo = connect(settings.mongo)
        stack.callback(mongo.close)
        store = MongoStore(mongo[settings.mongo.database])
        await store.ping()
        await store.create_indexes()
        keys = await start_keys(store, settings.kek())
        mongo_watch = Watch(store.ping)
        await mongo_watch.start()
        stack.push_async_callback(mongo_watch.stop)

        await ensure_topics(kafka, used)
        publisher = Publisher(kafka, client_id=client_id, metrics=metrics.kafka)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        handlers = build_handlers(settings, store, keys, publisher, metrics)
        for key in keys.ring.published:
            await _publish_key(
                publisher, handlers.topics.keys, published(key), settings.instance_id
            )

        keys_reader = BroadcastReader(
            kafka,
            topics=[handlers.topics.keys],
            handler=key_listener(keys),
            metrics=metrics.kafka,
            client_id=client_id,
            start_at="end",
        )
        await keys_reader.start()
        stack.push_async_callback(keys_reader.stop)
        consumer = GroupConsumer(
            kafka,
            group_id=f"{kafka.topic_prefix}authz",
            topics=[used[0].name, used[1].name, used[2].name],
            handler=handlers.handle,
            metrics=metrics.kafka,
            client_id=client_id,
            concurrency=64,
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        rotation = asyncio.create_task(_rotate_by_age(settings, handlers), name="key-rotation")
        stack.callback(rotation.cancel)

        probes.live("consumer", lambda: consumer.alive)
        probes.live("keys_reader", lambda: keys_reader.alive)
        probes.ready("mongo", lambda: mongo_watch.ok)
        probes.ready("kafka_producer", lambda: publisher.started)
        probes.ready("consumer_caught_up", lambda: consumer.caught_up)
        server, server_task = await start_http(
            ops_config(ops_app(registry, probes), settings.ops.host, settings.ops.port)
        )
        stack.push_async_callback(stop_http, server, server_task)
        log.info("authz started", ops_port=settings.ops.port, signing_kid=keys.ring.signing_kid)

        why = await until_stopped(stop, server_task, consumer.task, keys_reader.task, rotation)
        probes.stopping = True
        log.info("authz stopping", reason=why)
    log.info("authz stopped", reason=why)
    return 1 if why == "failed" else 0


def key_listener(keys: KeyService) -> Callable[[Envelope], Awaitable[None]]:
    """Another instance made or rotated a key: read the ring again. The event is trusted (an
    internal topic), so this reload skips the unknown-kid rate limit of `KeyService.knows`."""

    async def on_key(envelope: Envelope) -> None:
        event = payload_of(envelope)
        if not isinstance(event, KeyPublished):
            return
        if keys.knows_now(event.kid) and (keys.is_active(event.kid) or not event.active):
            return
        await keys.reload()
        if not keys.knows_now(event.kid):
            log.warning("published key not in the store", kid=event.kid)

    return on_key


async def _publish_key(
    publisher: Publisher, topic: str, event: KeyPublished, instance: str
) -> None:
    await publisher.publish(topic, wrap(event, producer=instance, now=utcnow()), key=event.kid)


async def _rotate_by_age(settings: AuthzSettings, handlers: AuthzHandlers) -> None:
    """Rotate keys older than `key_rotation_days` (checked hourly; concurrent instances make
    one new key between them: the store compares and sets)."""
    if settings.key_rotation_days <= 0:
        await asyncio.Event().wait()  # never; stays alive so it is not taken for a failure
    max_age = timedelta(days=settings.key_rotation_days)
    while True:
        try:
            for rotated in await handlers.keys.rotate_if_older(max_age):
                log.info("key rotated by age", use=rotated.new.use, kid=rotated.new.kid)
                for key in (rotated.previous, rotated.new):
                    await _publish_key(
                        handlers.publisher,
                        handlers.topics.keys,
                        published(key),
                        settings.instance_id,
                    )
        except Exception:  # a failed check (store down) is retried at the next one
            log.exception("key rotation check failed")
        await asyncio.sleep(ROTATION_CHECK_S)
