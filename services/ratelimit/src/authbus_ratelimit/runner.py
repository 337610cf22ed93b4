"""ratelimit's composition root: Kafka, the counter, metrics and probes; runs until SIGTERM.

Each instance joins the consumer group "ratelimit" on `ratelimit.hits.v1`: Kafka's partition
assignment decides which instance owns which limit keys (SPEC S2), and a new instance takes
its share by joining. Ready once caught up with the partitions it was given."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from authbus_ratelimit.core.fixed_window import FixedWindow
from authbus_ratelimit.handlers import RatelimitHandlers
from authbus_ratelimit.metrics import RatelimitMetrics
from authbus_ratelimit.settings import RatelimitSettings
from authbus_shared.contracts import topics
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.kafka.group import GroupConsumer
from authbus_shared.kafka.producer import Publisher
from authbus_shared.lifecycle import until_stopped
from authbus_shared.ops import Probes, ops_app, ops_config, start_http, stop_http

log = structlog.get_logger(__name__)
SWEEP_EVERY_S = 10.0


async def run(settings: RatelimitSettings) -> int:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    metrics = RatelimitMetrics(registry)
    probes = Probes()
    kafka = settings.kafka
    hits, decisions = (
        resolve(t, kafka) for t in (topics.RATELIMIT_HITS, topics.RATELIMIT_DECISIONS)
    )
    client_id = f"{kafka.client_id_prefix}-ratelimit-{settings.instance_id}"

    async with contextlib.AsyncExitStack() as stack:
        await ensure_topics(kafka, [hits, decisions])
        publisher = Publisher(kafka, client_id=client_id, metrics=metrics.kafka)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        handlers = RatelimitHandlers(
            counter=FixedWindow(settings.global_policy()),
            publisher=publisher,
            decisions_topic=decisions.name,
            metrics=metrics,
            instance_id=settings.instance_id,
        )
        consumer = GroupConsumer(
            kafka,
            group_id=f"{kafka.topic_prefix}ratelimit",
            topics=[hits.name],
            handler=handlers.handle,
            metrics=metrics.kafka,
            client_id=client_id,
            concurrency=1,  # one key's hits in order; the counter is not shared across tasks
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        sweeper = asyncio.create_task(_sweep(handlers), name="sweep")
        stack.callback(sweeper.cancel)

        probes.live("consumer", lambda: consumer.alive)
        probes.ready("kafka_producer", lambda: publisher.started)
        probes.ready("consumer_caught_up", lambda: consumer.caught_up)
        server, server_task = await start_http(
            ops_config(ops_app(registry, probes), settings.ops.host, settings.ops.port)
        )
        stack.push_async_callback(stop_http, server, server_task)
        log.info("ratelimit started", ops_port=settings.ops.port)

        why = await until_stopped(server_task, consumer.task, sweeper)
        probes.stopping = True
        log.info("ratelimit stopping", reason=why)
    log.info("ratelimit stopped", reason=why)
    return 1 if why == "failed" else 0


async def _sweep(handlers: RatelimitHandlers) -> None:
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        handlers.sweep()
