"""Reports credential uses to authz in batches (SPEC A7): the last-used time of each token and
key, and how often each legacy key was used (authz audits it: V1). One `CredentialsUsed` per
`interval` per api instance, whatever the request rate; `stop` sends what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from authbus_api.core.access import Principal
from authbus_shared.contracts.authz import AuthMethod
from authbus_shared.contracts.envelope import utcnow, wrap
from authbus_shared.contracts.events import CredentialsUsed, Use
from authbus_shared.kafka.producer import Publisher

log = structlog.get_logger(__name__)
MAX_PER_REPORT = 5_000


@dataclass(slots=True)
class _Seen:
    """One credential's uses since the last report. Kept as a plain record and made into the
    contract's `Use` only when sent: a pydantic model per request cost several µs of the hot
    path (issue #13)."""

    method: AuthMethod
    account_id: str
    last_used_at: datetime
    count: int = 1

    def use(self, credential_id: str) -> Use:
        return Use(
            credential_id=credential_id,
            method=self.method,
            account_id=self.account_id,
            last_used_at=self.last_used_at,
            count=self.count,
        )


class UsageReporter:
    def __init__(
        self, publisher: Publisher, *, topic: str, instance_id: str, interval: timedelta
    ) -> None:
        self._publisher = publisher
        self._topic = topic
        self._instance = instance_id
        self._interval = interval.total_seconds()
        self._pending: dict[str, _Seen] = {}
        self._task: asyncio.Task[None] | None = None

    def used(self, who: Principal, at: datetime) -> None:
        if who.credential_id is None or who.method is AuthMethod.PASSWORD:
            return  # a password has no record to touch
        seen = self._pending.get(who.credential_id)
        if seen is None:
            self._pending[who.credential_id] = _Seen(who.method, who.account.id, at)
        else:
            seen.count += 1
            seen.last_used_at = at

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
            batch = list(self._pending.items())[:MAX_PER_REPORT]
            sent = {cid: seen.count for cid, seen in batch}  # what this report says
            report = CredentialsUsed(uses=tuple(seen.use(cid) for cid, seen in batch))
            await self._publisher.publish(
                self._topic, wrap(report, producer=self._instance, now=utcnow()), key=self._instance
            )
            for cid, count in sent.items():
                seen = self._pending.get(cid)
                if seen is None:
                    continue
                if seen.count == count:
                    del self._pending[cid]
                else:  # used again while the report was sent: the rest goes next time
                    seen.count -= count
