"""Last-used times that survive a MongoDB outage (issue #10 item 6; ADR 0015).

Algorithm: a usage report (`CredentialsUsed`) is tallied (`core.usage.tally`) and written at
once. If the store is unreachable (pymongo's `ConnectionFailure`: server selection timed out,
connection lost), the times go to `PendingUses` (one per credential, the latest, bounded) and
the report counts as handled; `retry` writes what waits every `retry_s` until it lands, and
`drain` tries once more at shutdown. Any other error is not an outage: it propagates from
`record` (the consumer counts it), and is logged and dropped by a retry.

Loss bound: none while authz stays up, whatever the outage's length, unless more than
`pending_max` credentials wait (then the times of the ones beyond are dropped, counted in
`authz_usage_dropped_total`). On a crash, or a SIGTERM while the store is still away, the
times waiting then are lost: those of the reports received since the store became
unreachable (authz no longer has them, and their offsets are committed). They are only a
convenience (the architecture's trade-offs), and the next use of each credential sets them
again. `KeyUsed` audit events do not wait for the store: they are published while the report
is handled, before its offset is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import structlog
from pymongo.errors import ConnectionFailure

from authbus_authz.core.usage import PendingUses, Usage, tally
from authbus_authz.metrics import AuthzMetrics
from authbus_shared.contracts.envelope import Contract
from authbus_shared.contracts.events import CredentialsUsed

log = structlog.get_logger(__name__)
DRAIN_TIMEOUT_S = 2.0


@dataclass
class LastUsed:
    usage: Usage
    pending: PendingUses
    metrics: AuthzMetrics
    retry_s: float = 1.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def record(self, report: CredentialsUsed) -> list[Contract]:
        """Write (or keep) the report's last-used times; returns its audit events."""
        tallied = tally(report)
        await self._write_or_keep(tallied.tokens, tallied.keys)
        return tallied.audit

    async def _write_or_keep(
        self, tokens: Mapping[str, datetime], keys: Mapping[str, datetime], *, retry: bool = False
    ) -> bool:
        try:
            await self.usage.write(tokens, keys)
        except ConnectionFailure as exc:
            if not retry:
                self.metrics.usage_deferred.inc()
                log.warning("store unreachable: last-used times kept for later", error=repr(exc))
            self._keep(tokens, keys)
            return False
        return True

    def _keep(self, tokens: Mapping[str, datetime], keys: Mapping[str, datetime]) -> None:
        dropped = self.pending.add(tokens, keys)
        if dropped:
            self.metrics.usage_dropped.inc(dropped)
        self.metrics.usage_pending.set(len(self.pending))

    async def flush(self) -> bool:
        """Write what waits; True when nothing waits any more."""
        if not self.pending:
            return True
        tokens, keys = self.pending.take()
        try:
            written = await self._write_or_keep(tokens, keys, retry=True)
        except Exception:  # not an outage: retrying would fail the same way
            log.exception("waiting last-used times dropped", count=len(tokens) + len(keys))
            self.metrics.usage_dropped.inc(len(tokens) + len(keys))
            written = False
        self.metrics.usage_pending.set(len(self.pending))
        if written:
            log.info("waiting last-used times written", count=len(tokens) + len(keys))
        return not self.pending

    async def retry(self) -> None:
        """Forever: every `retry_s`, write what waits (never ends the process)."""
        while True:
            await self.sleep(self.retry_s)
            await self.flush()

    async def drain(self) -> None:
        """At shutdown: one last write of what waits, bounded."""
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                if not await self.flush():
                    log.warning("last-used times lost at shutdown", count=len(self.pending))
        except TimeoutError:
            log.warning("last-used times lost at shutdown (store too slow)")
