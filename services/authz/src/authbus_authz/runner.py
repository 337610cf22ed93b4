"""authz's composition root: wires MongoDB, Kafka, the core, metrics and probes, then runs
until SIGTERM. Start order: store (indexes, keys) -> topics -> producer (publish public keys)
-> outbox relay and last-used retries -> keys reader (rotations by other instances) -> group
consumer -> rotation timer -> ops endpoint. Stop: not ready -> in reverse (the last-used
times still waiting get one last write after the consumer has stopped)."""

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
from authbus_authz.core.ports import CredentialStore
from authbus_authz.core.reads import Reads
from authbus_authz.core.records import RecordCache
from authbus_authz.core.throttle import Throttle
from authbus_authz.core.usage import PendingUses, Usage
from authbus_authz.core.verifier import Verifier
from authbus_authz.faults import crash_after_commit
from authbus_authz.handlers import AuthzHandlers, published
from authbus_authz.heartbeat import beat
from authbus_authz.last_used import LastUsed
from authbus_authz.metrics import AuthzMetrics
from authbus_authz.outbox import Outbox, Topics
from authbus_authz.records_feed import changes_reader, record_cache
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


async def start_keys(store: CredentialStore, kek: bytes) -> KeyService:
    keys = KeyService(store=store, kek=kek, clock=utcnow)
    try:
        await keys.start()
    except InvalidTag:
        raise ConfigError(
            "AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY cannot decrypt the keys stored in MongoDB "
            "(a different key than the one they were created with)"
        ) from None
    return keys


async def start_store(
    stack: contextlib.AsyncExitStack, settings: AuthzSettings
) -> tuple[MongoStore, KeyService, Watch]:
    """MongoDB connected (indexes made, keys loaded or created) and watched for readiness;
    closed with the stack."""
    mongo = connect(settings.mongo)
    stack.callback(mongo.close)
    store = MongoStore(mongo[settings.mongo.database])
    await store.ping()
    await store.create_indexes()
    keys = await start_keys(store, settings.kek())
    mongo_watch = Watch(store.ping)
    await mongo_watch.start()
    stack.push_async_callback(mongo_watch.stop)
    return store, keys, mongo_watch


def build_core(
    settings: AuthzSettings, store: CredentialStore, keys: KeyService, reads: Reads | None = None
) -> tuple[Verifier, AccountCommands, CredentialCommands]:
    """The core's services on the store, argon2 in threads, the wall clock; the verifier reads
    through `reads` (the record cache) when given."""
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
        reads=reads,
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
    return verifier, accounts, credentials


def build_handlers(
    settings: AuthzSettings,
    store: CredentialStore,
    keys: KeyService,
    publisher: Publisher,
    metrics: AuthzMetrics,
    *,
    cache: RecordCache | None = None,
) -> AuthzHandlers:
    kafka = settings.kafka
    reads = None
    if cache is not None:
        reads = Reads(store, utcnow, cache, lambda k, r: metrics.record_reads.labels(k, r).inc())
    verifier, accounts, credentials = build_core(settings, store, keys, reads)
    outbox = Outbox(
        store=store,
        publisher=publisher,
        topics=Topics(
            audit=resolve(topics.AUTH_AUDIT, kafka).name,
            changes=resolve(topics.AUTH_CHANGES, kafka).name,
            keys=resolve(topics.AUTHZ_KEYS, kafka).name,
        ),
        metrics=metrics,
        instance_id=settings.instance_id,
        settings=settings.outbox,
    )
    last_used = LastUsed(
        usage=Usage(store),
        pending=PendingUses(limit=settings.usage.pending_max),
        metrics=metrics,
        retry_s=settings.usage.retry_s,
    )
    return AuthzHandlers(
        verifier=verifier,
        accounts=accounts,
        credentials=credentials,
        last_used=last_used,
        keys=keys,
        responder=Responder(
            publisher, reply_topic=resolve(topics.REPLIES, kafka), instance_id=settings.instance_id
        ),
        store=store,
        outbox=outbox,
        metrics=metrics,
        instance_id=settings.instance_id,
        after_commit=crash_after_commit(settings.crash_after_commit),
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
        store, keys, mongo_watch = await start_store(stack, settings)

        await ensure_topics(kafka, used)
        publisher = Publisher(kafka, client_id=client_id, metrics=metrics.kafka)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        cache = record_cache(settings, metrics)
        handlers = build_handlers(settings, store, keys, publisher, metrics, cache=cache)
        for key in keys.ring.published:
            await _publish_key(
                publisher, handlers.outbox.topics.keys, published(key), settings.instance_id
            )
        relay, retries = start_background(stack, handlers)
        heartbeats = asyncio.create_task(
            beat(
                publisher,
                handlers.outbox.topics.changes,
                topics.AUTH_CHANGES.partitions,
                instance_id=settings.instance_id,
                every_s=settings.changes_heartbeat_ms / 1000,
            ),
            name="changes-heartbeats",
        )
        stack.callback(heartbeats.cancel)

        keys_reader = BroadcastReader(
            kafka,
            topics=[handlers.outbox.topics.keys],
            handler=key_listener(keys),
            metrics=metrics.kafka,
            client_id=client_id,
            start_at="end",
        )
        await keys_reader.start()
        stack.push_async_callback(keys_reader.stop)
        changes = changes_reader(
            kafka, handlers.outbox.topics.changes, cache, metrics.kafka, client_id
        )
        await changes.start()
        stack.push_async_callback(changes.stop)
        consumer = GroupConsumer(
            kafka,
            group_id=f"{kafka.topic_prefix}authz",
            topics=[used[0].name, used[1].name, used[2].name],
            handler=handlers.handle,
            metrics=metrics.kafka,
            client_id=client_id,
            concurrency=64,
            session_timeout_ms=settings.session_timeout_ms,
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        rotation = asyncio.create_task(_rotate_by_age(settings, handlers), name="key-rotation")
        stack.callback(rotation.cancel)

        probes.live("consumer", lambda: consumer.alive)
        probes.live("keys_reader", lambda: keys_reader.alive)
        probes.live("changes_reader", lambda: changes.alive)
        probes.live("outbox_relay", lambda: not relay.done())
        probes.live("last_used_retry", lambda: not retries.done())
        probes.live("changes_heartbeats", lambda: not heartbeats.done())
        probes.ready("mongo", lambda: mongo_watch.ok)
        probes.ready("kafka_producer", lambda: publisher.started)
        probes.ready("consumer_caught_up", lambda: consumer.caught_up)
        server, server_task = await start_http(
            ops_config(ops_app(registry, probes), settings.ops.host, settings.ops.port)
        )
        stack.push_async_callback(stop_http, server, server_task)
        log.info("authz started", ops_port=settings.ops.port, signing_kid=keys.ring.signing_kid)

        why = await until_stopped(
            stop,
            server_task,
            consumer.task,
            keys_reader.task,
            changes.task,
            rotation,
            relay,
            retries,
            heartbeats,
        )
        probes.stopping = True
        log.info("authz stopping", reason=why)
    log.info("authz stopped", reason=why)
    return 1 if why == "failed" else 0


def start_background(
    stack: contextlib.AsyncExitStack, handlers: AuthzHandlers
) -> tuple[asyncio.Task[None], asyncio.Task[None]]:
    """The outbox relay and the last-used retries, stopped with the stack; the last-used times
    still waiting get one last write then (registered before the consumer: so after it)."""
    stack.push_async_callback(handlers.last_used.drain)  # runs after the cancels below
    relay = asyncio.create_task(handlers.outbox.relay(), name="outbox-relay")
    stack.callback(relay.cancel)
    retries = asyncio.create_task(handlers.last_used.retry(), name="last-used-retry")
    stack.callback(retries.cancel)
    return relay, retries


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
                        handlers.outbox.publisher,
                        handlers.outbox.topics.keys,
                        published(key),
                        settings.instance_id,
                    )
        except Exception:  # a failed check (store down) is retried at the next one
            log.exception("key rotation check failed")
        await asyncio.sleep(ROTATION_CHECK_S)
