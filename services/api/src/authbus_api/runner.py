"""api's composition root: Kafka (producer, reply inbox, three broadcast readers), the gate,
the HTTP server, metrics and probes; runs until SIGTERM.

Start: policies and routes (and the replay horizon they need, checked: ADR 0014) -> topics ->
producer -> readers (authz keys from the beginning, changes from now, lockouts from
`decisions_lookback_s` ago) -> reply inbox -> usage reporter and the rate limiter's background
work (top-ups, releases) -> HTTP. Ready when every reader has caught up and a sealing key is
known. Stop: not ready -> HTTP drains -> remaining uses reported -> readers -> producer."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from authbus_api.app import HttpOptions, build_http
from authbus_api.core.sessions import Sessions
from authbus_api.core.verdict_cache import CredentialDigest
from authbus_api.gate import Gate
from authbus_api.http.errors import ErrorStyle
from authbus_api.http.server import edge_protocol
from authbus_api.leases import KafkaLeases
from authbus_api.metrics import ApiMetrics
from authbus_api.policies import load_policies, with_routes
from authbus_api.proxy import Upstreams
from authbus_api.rate import RateLimiter
from authbus_api.routes import load_routes
from authbus_api.settings import ApiSettings
from authbus_api.translations import Catalogs
from authbus_api.usage import UsageReporter
from authbus_api.views import Readers, Views
from authbus_shared.authz_client import AuthzClient, Hedge
from authbus_shared.contracts import topics
from authbus_shared.contracts.topics import TopicSpec
from authbus_shared.horizon import checked_horizon
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.kafka.consumers import BroadcastReader
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import RpcClient
from authbus_shared.lifecycle import StopSignals, until_stopped
from authbus_shared.ops import ASGIApp, Check, Probes, ops_app, start_http, stop_http
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
    views = Views.new(settings, metrics)
    routes = load_routes(settings.routes_file)
    policies = with_routes(load_policies(settings.rate.policies_file), routes)
    checked_horizon(  # policies that ratelimit's replay could not rebuild: ConfigError
        settings.rate.replay_horizon_s,
        (p.lease for p in policies),
        variable="AUTHBUS_API_RATE__REPLAY_HORIZON_S",
    )

    async with contextlib.AsyncExitStack() as stack:
        stop = StopSignals.install()  # before anything can answer a probe
        stack.callback(stop.uninstall)
        await ensure_topics(kafka, t.values())
        publisher = Publisher(kafka, client_id=client_id, metrics=metrics.kafka)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        readers = views.readers(t, settings)
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
        usage = await start_usage(stack, publisher, settings, t)
        leases = KafkaLeases(
            rpc,
            publisher,
            t[topics.RATELIMIT_LEASES.name].name,
            settings.instance_id,
            timedelta(milliseconds=settings.rate.ask_timeout_ms),
            metrics,
        )
        limiter = RateLimiter(views.quota, leases)
        rate_work = asyncio.create_task(limiter.run(), name="rate-limiter")
        stack.callback(rate_work.cancel)
        probes.live("reply_inbox", lambda: rpc.alive)
        probes.ready("reply_inbox", lambda: rpc.ready)
        probes.ready("authz_sealing_key", lambda: views.keys.has_sealing_key)
        probes.ready("kafka_producer", lambda: publisher.started)

        authz = AuthzClient(
            rpc,
            views.keys,
            verify_topic=t[topics.AUTH_VERIFY.name].name,
            commands_topic=t[topics.AUTHZ_COMMANDS.name].name,
            timeout=settings.verify_timeout,
            hedge=hedge(settings, t[topics.AUTH_VERIFY.name]),
        )
        upstreams = Upstreams(settings.upstream_timeout_s)
        stack.push_async_callback(upstreams.close)
        gate = Gate(
            cache=views.cache,
            digest=CredentialDigest(),
            authz=authz,
            limiter=limiter,
            policies=policies,
            usage=usage,
            metrics=metrics,
            trust=views.trust,
            deprecation=settings.deprecation_headers,
            reverify_timeout=timedelta(milliseconds=settings.staleness.reverify_timeout_ms),
        )
        style = ErrorStyle(Catalogs.load(), settings.default_locale, settings.error_shape)
        app = build_http(
            gate,
            views.keys,
            metrics,
            ops_app(registry, probes),
            HttpOptions(
                trusted=settings.trusted_proxies,
                errors=style,
                routes=routes,
                upstreams=upstreams,
                commands=authz,
                signup=settings.signup,
                dialect=settings.forward_auth.dialect,
                unmatched=settings.forward_auth.unmatched,
                limits=settings.edge,
                sessions=Sessions(secure=settings.session_cookie_secure),
            ),
        )
        server, server_task = await start_http(http_config(app, settings, style))
        stack.push_async_callback(stop_http, server, server_task)
        log.info("api started", port=settings.port)

        why = await until_stopped(stop, server_task, rpc.task, rate_work, *parts)
        probes.stopping = True
        log.info("api stopping", reason=why)
    log.info("api stopped", reason=why)
    return 1 if why == "failed" else 0


def hedge(settings: ApiSettings, verify: TopicSpec) -> Hedge | None:
    """Hedged token and key verification (issue #10): off with `verify_hedge_ms` = 0."""
    if settings.verify_hedge_ms == 0 or verify.partitions < 2:
        return None
    after = timedelta(milliseconds=settings.verify_hedge_ms)
    return Hedge(partitions=verify.partitions, after=after, copies=min(3, verify.partitions))


def http_config(app: ASGIApp, settings: ApiSettings, style: ErrorStyle) -> uvicorn.Config:
    """uvicorn with the edge's limits on a request's head (`http/server.py`), no websockets
    (no protocol that skips those limits), and no proxy-header handling of its own."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=edge_protocol(settings.edge, style),
        ws="none",
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        proxy_headers=False,  # one client-address mechanism: http/request.py
    )


async def start_usage(
    stack: contextlib.AsyncExitStack,
    publisher: Publisher,
    settings: ApiSettings,
    t: dict[str, TopicSpec],
) -> UsageReporter:
    """Credential uses go to authz in batches (last-used times)."""
    usage = UsageReporter(
        publisher,
        topic=t[topics.AUTH_USAGE.name].name,
        instance_id=settings.instance_id,
        interval=timedelta(seconds=settings.usage_report_s),
    )
    usage.start()
    stack.push_async_callback(usage.stop)
    return usage


async def start_readers(
    stack: contextlib.AsyncExitStack,
    readers: Readers,
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
