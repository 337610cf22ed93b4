"""Ships the hits this api instance admitted to the owners of their limit keys (SPEC R4).

Hits are summed per key and sent every `interval` as one `RecordHits` per key, keyed by the
limit key so the owning ratelimit instance counts it. A batch that the broker does not
acknowledge is put back and sent with the next one; `stop` sends what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import structlog

from authbus_api.metrics import ApiMetrics
from authbus_shared.contracts.envelope import utcnow, wrap
from authbus_shared.contracts.ratelimit import RecordHits
from authbus_shared.kafka.producer import Publisher

log = structlog.get_logger(__name__)


class HitShipper:
    def __init__(
        self,
        publisher: Publisher,
        *,
        topic: str,
        instance_id: str,
        interval: timedelta,
        metrics: ApiMetrics,
    ) -> None:
        self._publisher = publisher
        self._topic = topic
        self._instance = instance_id
        self._interval = interval.total_seconds()
        self._metrics = metrics
        self._pending: dict[str, tuple[int, datetime]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, key: str, at: datetime) -> None:
        count, first = self._pending.get(key, (0, at))
        self._pending[key] = (count + 1, first)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="hit-shipper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        now = utcnow()
        sends = {
            key: self._publisher.enqueue(
                self._topic,
                wrap(RecordHits(key=key, hits=n, first_at=first), producer=self._instance, now=now),
                key=key,
            )
            for key, (n, first) in batch.items()
        }
        results = await asyncio.gather(*sends.values(), return_exceptions=True)
        for (key, (n, first)), result in zip(batch.items(), results, strict=True):
            if isinstance(result, BaseException):
                self._metrics.hits_shipped.labels(result="failed").inc(n)
                count, _ = self._pending.get(key, (0, first))
                self._pending[key] = (count + n, first)
            else:
                self._metrics.hits_shipped.labels(result="acked").inc(n)
