"""Reports credential uses to authz in batches (SPEC A7): the last-used time of each token and
key, and how often each legacy key was used (authz audits it: V1). One `CredentialsUsed` per
`interval` per api instance, whatever the request rate; `stop` sends what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import structlog

from authbus_api.core.access import Principal
from authbus_shared.contracts.authz import AuthMethod
from authbus_shared.contracts.envelope import utcnow, wrap
from authbus_shared.contracts.events import CredentialsUsed, Use
from authbus_shared.kafka.producer import Publisher

log = structlog.get_logger(__name__)
MAX_PER_REPORT = 5_000


class UsageReporter:
    def __init__(
        self, publisher: Publisher, *, topic: str, instance_id: str, interval: timedelta
    ) -> None:
        self._publisher = publisher
        self._topic = topic
        self._instance = instance_id
        self._interval = interval.total_seconds()
        self._pending: dict[str, Use] = {}
        self._task: asyncio.Task[None] | None = None

    def used(self, who: Principal, at: datetime) -> None:
        if who.credential_id is None or who.method is AuthMethod.PASSWORD:
            return  # a password has no record to touch
        seen = self._pending.get(who.credential_id)
        count = seen.count + 1 if seen else 1
        self._pending[who.credential_id] = Use(
            credential_id=who.credential_id,
            method=who.method,
            account_id=who.account.id,
            last_used_at=at,
            count=count,
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="usage-reporter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # the broker is down: keep the uses for the next round
                log.warning("usage report not sent", exc_info=True)

    async def flush(self) -> None:
        while self._pending:
            batch = dict(list(self._pending.items())[:MAX_PER_REPORT])
            report = CredentialsUsed(uses=tuple(batch.values()))
            await self._publisher.publish(
                self._topic, wrap(report, producer=self._instance, now=utcnow()), key=self._instance
            )
            for cid, use in batch.items():
                if self._pending.get(cid) is use:
                    del self._pending[cid]
