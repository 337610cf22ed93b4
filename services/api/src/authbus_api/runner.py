"""api's composition root: Kafka (producer, reply inbox, three broadcast readers), the gate,
the HTTP server, metrics and probes; runs until SIGTERM.

Start: topics -> producer -> readers (authz keys from the beginning, changes from now, rate
decisions from `decisions_lookback_s` ago) -> reply inbox -> hit shipper -> HTTP. Ready when
every reader has caught up and a sealing key is known. Stop: not ready -> HTTP drains ->
remaining hits shipped -> readers -> producer."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from authbus_api.app import create_app, edge
from authbus_api.core.rate_view import RateView
from authbus_api.core.verdict_cache import CredentialDigest, VerdictCache
from authbus_api.gate import Gate
from authbus_api.hits import HitShipper
from authbus_api.metrics import ApiMetrics
from authbus_api.settings import ApiSettings
from authbus_shared.authz_client import AuthzClient, AuthzKeys
from authbus_shared.contracts import topics
from authbus_shared.contracts.authz import TokenRevoked
from authbus_shared.contracts.envelope import Envelope, payload_of, utcnow
from authbus_shared.contracts.ratelimit import RateDecided
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.kafka.consumers import BroadcastReader, Handler, StartAt
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import RpcClient
from authbus_shared.lifecycle import until_stopped
from authbus_shared.ops import Check, Probes, ops_app, start_http, stop_http
from authbus_shared.settings import KafkaSettings

log = structlog.get_logger(__name__)


async def run(settings: ApiSettings) -> int:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    metrics = ApiMetrics(registry)
    probes = Probes()
    kafka = settings.kafka
    t = {spec.name: resolve(spec, kafka) for spec in topics.ALL_TOPICS}
    client_id = f"{kafka.client_id_prefix}-api-{settings.instance_id}"
    cache = VerdictCache(
        max_entries=settings.cache_max_entries,
        ttl=timedelta(seconds=settings.cache_ttl_s),
        negative_ttl=timedelta(seconds=settings.cache_negative_ttl_s),
    )
    keys, rate = AuthzKeys(), RateView()

    async def on_change(envelope: Envelope) -> None:
        event = payload_of(envelope)
        if isinstance(event, TokenRevoked):
            cache.revoke(event.token_id, utcnow())
        metrics.invalidations.labels(event=event.TYPE).inc()

    async def on_decision(envelope: Envelope) -> None:
        decision = payload_of(envelope)
        if isinstance(decision, RateDecided):
            rate.on_decision(decision)

    async with contextlib.AsyncExitStack() as stack:
        await ensure_topics(kafka, t.values())
        publisher = Publisher(kafka, client_id=client_id, metrics=metrics.kafka)
        await publisher.start()
        stack.push_async_callback(publisher.stop)

        readers: dict[str, tuple[str, Handler, StartAt]] = {
            "authz_keys": (t[topics.AUTHZ_KEYS.name].name, keys.handle, "beginning"),
            "auth_changes": (t[topics.AUTH_CHANGES.name].name, on_change, "end"),
            "rate_decisions": (
                t[topics.RATELIMIT_DECISIONS.name].name,
                on_decision,
                timedelta(seconds=settings.decisions_lookback_s),
            ),
        }
        parts = await start_readers(
            stack, readers, kafka=kafka, probes=probes, metrics=metrics, client_id=client_id
        )

        rpc = RpcClient(
            kafka,
            publisher=publisher,
            reply_topic=t[topics.REPLIES.name],
            instance_id=settings.instance_id,
            metrics=metrics.kafka,
            client_id=client_id,
        )
        await rpc.start()
        stack.push_async_callback(rpc.stop)
        hits = HitShipper(
            publisher,
            topic=t[topics.RATELIMIT_HITS.name].name,
            instance_id=settings.instance_id,
            interval=timedelta(milliseconds=settings.hits_flush_ms),
            metrics=metrics,
        )
        hits.start()
        stack.push_async_callback(hits.stop)

        probes.live("reply_inbox", lambda: rpc.alive)
        probes.ready("reply_inbox", lambda: rpc.ready)
        probes.ready("authz_sealing_key", lambda: keys.has_sealing_key)
        probes.ready("kafka_producer", lambda: publisher.started)

        gate = Gate(
            cache=cache,
            digest=CredentialDigest(),
            authz=AuthzClient(
                rpc,
                keys,
                verify_topic=t[topics.AUTH_VERIFY.name].name,
                commands_topic=t[topics.AUTHZ_COMMANDS.name].name,
                timeout=settings.verify_timeout,
            ),
            rate=rate,
            hits=hits,
            metrics=metrics,
        )
        app = edge(create_app(gate, keys), ops_app(registry, probes), metrics)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            http="httptools",
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        server, server_task = await start_http(config)
        stack.push_async_callback(stop_http, server, server_task)
        log.info("api started", port=settings.port)

        why = await until_stopped(server_task, rpc.task, *parts)
        probes.stopping = True
        log.info("api stopping", reason=why)
    log.info("api stopped", reason=why)
    return 1 if why == "failed" else 0


async def start_readers(
    stack: contextlib.AsyncExitStack,
    readers: dict[str, tuple[str, Handler, StartAt]],
    *,
    kafka: KafkaSettings,
    probes: Probes,
    metrics: ApiMetrics,
    client_id: str,
) -> list[asyncio.Task[None]]:
    """Start one broadcast reader per topic; each is a liveness and a readiness check."""
    tasks = []
    for name, (topic, handler, start_at) in readers.items():
        reader = BroadcastReader(
            kafka,
            topics=[topic],
            handler=handler,
            metrics=metrics.kafka,
            client_id=client_id,
            start_at=start_at,
        )
        await reader.start()
        stack.push_async_callback(reader.stop)
        tasks.append(reader.task)
        probes.live(name, _alive(reader))
        probes.ready(f"{name}_caught_up", _caught_up(reader))
    return tasks


def _alive(reader: BroadcastReader) -> Check:
    return lambda: reader.alive


def _caught_up(reader: BroadcastReader) -> Check:
    return lambda: reader.caught_up
