"""ratelimit's composition root: Kafka, the lease books, metrics and probes; runs until SIGTERM.

Each instance joins the consumer group "ratelimit" on `ratelimit.leases.v1`: Kafka's partition
assignment decides which instance owns which limit keys (SPEC S2), and a new instance takes its
share by joining. A partition it is given is replayed from the replay horizon ago before new
asks are answered (ADR 0010); ready once that replay is over. The horizon is checked against
the policies before anything starts (ADR 0014): too short, and the process refuses to start.
With `static_membership` the instance joins under its instance id, so a restart takes its own
partitions back without a rebalance."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from authbus_ratelimit.handlers import LeaseHandlers
from authbus_ratelimit.metrics import RatelimitMetrics
from authbus_ratelimit.settings import RatelimitSettings
from authbus_shared.contracts import topics
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.kafka.owner import PartitionOwner
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import Responder
from authbus_shared.lifecycle import StopSignals, until_stopped
from authbus_shared.ops import Probes, ops_app, ops_config, start_http, stop_http

log = structlog.get_logger(__name__)
SWEEP_EVERY_S = 10.0


async def run(settings: RatelimitSettings) -> int:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    metrics = RatelimitMetrics(registry)
    probes = Probes()
    horizon = settings.replay_horizon()  # a horizon too short for the policies: ConfigError
    kafka = settings.kafka
    leases, decisions, replies = (
        resolve(t, kafka)
        for t in (topics.RATELIMIT_LEASES, topics.RATELIMIT_DECISIONS, topics.REPLIES)
    )
    client_id = f"{kafka.client_id_prefix}-ratelimit-{settings.instance_id}"

    async with contextlib.AsyncExitStack() as stack:
        stop = StopSignals.install()  # before anything can answer a probe
        stack.callback(stop.uninstall)
        await ensure_topics(kafka, [leases, decisions, replies])
        publisher = Publisher(kafka, client_id=client_id, metrics=metrics.kafka)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        handlers = LeaseHandlers(
            responder=Responder(publisher, reply_topic=replies, instance_id=settings.instance_id),
            publisher=publisher,
            decisions_topic=decisions.name,
            metrics=metrics,
            instance_id=settings.instance_id,
        )
        owner = PartitionOwner(
            kafka,
            group_id=f"{kafka.topic_prefix}ratelimit",
            topic=leases.name,
            handler=handlers.handle,
            on_assigned=handlers.assigned,
            on_revoked=handlers.revoked,
            replay_horizon=horizon,
            metrics=metrics.kafka,
            client_id=client_id,
            session_timeout_ms=settings.session_timeout_ms,
            group_instance_id=settings.instance_id if settings.static_membership else None,
        )
        await owner.start()
        stack.push_async_callback(owner.stop)
        sweeper = asyncio.create_task(_sweep(handlers, owner), name="sweep")
        stack.callback(sweeper.cancel)

        probes.live("owner", lambda: owner.alive)
        probes.ready("kafka_producer", lambda: publisher.started)
        probes.ready("replayed", lambda: owner.caught_up)
        server, server_task = await start_http(
            ops_config(ops_app(registry, probes), settings.ops.host, settings.ops.port)
        )
        stack.push_async_callback(stop_http, server, server_task)
        log.info(
            "ratelimit started",
            ops_port=settings.ops.port,
            replay_horizon_s=int(horizon.total_seconds()),
        )

        why = await until_stopped(stop, server_task, owner.task, sweeper)
        probes.stopping = True
        log.info("ratelimit stopping", reason=why)
    log.info("ratelimit stopped", reason=why)
    return 1 if why == "failed" else 0


async def _sweep(handlers: LeaseHandlers, owner: PartitionOwner) -> None:
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        handlers.sweep(replaying=not owner.caught_up)
