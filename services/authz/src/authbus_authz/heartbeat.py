"""Heartbeats on the changes feed (SPEC A12, ADR 0016).

Every authz instance writes `ChangesHeartbeat(partition, at)` to each partition of
`auth.changes.v1` every `every_s`, `at` read from its clock just before the send. Whatever
change was acknowledged before `at` (its events were appended before authz answered) sits
before that heartbeat in its partition. So an api instance that has read, on every partition, a
heartbeat stamped `h` has read every change acknowledged before `h` (less the clocks' skew):
its cache is fresh as of then, and it stops trusting the cache once that is too old
(`authbus_api.core.freshness`).

One heartbeat per partition is in flight at a time: while the broker is away a partition whose
last heartbeat is unacknowledged gets no new one, so an outage queues at most one per partition
(the next after it carries a fresh time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog

from authbus_shared.contracts.envelope import utcnow, wrap
from authbus_shared.contracts.events import ChangesHeartbeat
from authbus_shared.kafka.producer import Publisher

log = structlog.get_logger(__name__)


async def beat(
    publisher: Publisher,
    topic: str,
    partitions: int,
    *,
    instance_id: str,
    every_s: float,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Write heartbeats until cancelled."""
    pending: dict[int, asyncio.Future[None]] = {}
    while True:
        for partition in range(partitions):
            previous = pending.get(partition)
            if previous is not None and not previous.done():
                continue  # the broker has not taken the last one yet
            now = clock()
            event = ChangesHeartbeat(partition=partition, at=now, instance=instance_id)
            sent = publisher.enqueue(
                topic, wrap(event, producer=instance_id, now=now), partition=partition
            )
            sent.add_done_callback(_failed)
            pending[partition] = sent
        await asyncio.sleep(every_s)


def _failed(sent: asyncio.Future[None]) -> None:
    if not sent.cancelled() and (error := sent.exception()) is not None:
        log.debug("heartbeat not sent", error=repr(error))  # counted by the publisher
