"""ratelimit's Kafka boundary: lease asks and releases in (from the partitions this instance
owns, in order, with the broker's time), grants out to the asker, lockouts broadcast.

One `LeaseBook` per owned partition: a partition given to this instance starts a fresh book
that the replay fills (`PartitionOwner`), a partition taken away drops its book. The books are
a pure function of the messages, so only what is live has effects outside: a reply goes only
to an asker still waiting, a lockout is broadcast only while it lasts (a replayed one again:
api instances keep the later end, so a repeat is harmless)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from authbus_ratelimit.core.leases import LeaseBook
from authbus_ratelimit.metrics import RatelimitMetrics
from authbus_shared.contracts.envelope import Envelope, MessageDecodeError, payload_of, utcnow, wrap
from authbus_shared.contracts.ratelimit import AcquireLease, LeaseGranted, ReleaseLease
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import Responder

log = structlog.get_logger(__name__)
SWEEP_MARGIN = timedelta(seconds=30)


@dataclass
class LeaseHandlers:
    responder: Responder
    publisher: Publisher
    decisions_topic: str
    metrics: RatelimitMetrics
    instance_id: str
    books: dict[int, LeaseBook] = field(default_factory=dict)

    def assigned(self, partition: int) -> None:
        self.books[partition] = LeaseBook()
        self.metrics.partitions.labels(partition=str(partition)).set(1)

    def revoked(self, partition: int) -> None:
        if self.books.pop(partition, None) is not None:
            self.metrics.partitions.remove(str(partition))

    async def handle(self, partition: int, envelope: Envelope, at: datetime) -> None:
        message = payload_of(envelope)
        book = self.books.get(partition)
        if book is None:  # not ours (a message fetched just before a revocation)
            return
        match message:
            case AcquireLease():
                self._acquire(book, envelope, message, at)
            case ReleaseLease():
                book.release(message, at)
                self.metrics.releases.inc()
            case _:
                raise MessageDecodeError(f"ratelimit does not handle {envelope.type}")

    def _acquire(
        self, book: LeaseBook, envelope: Envelope, ask: AcquireLease, at: datetime
    ) -> None:
        granted, locked = book.acquire(ask, at)
        now = utcnow()
        if locked is not None and locked.until > now:
            event = wrap(locked, producer=self.instance_id, now=now)
            self.publisher.send_nowait(self.decisions_topic, event, key=locked.subject)
        if not self.responder.wanted(envelope, now):
            self.metrics.replayed.inc()
            return
        policy = ask.policy.name
        self.metrics.asks.labels(
            policy=policy, result=_result(ask, granted, locked is not None)
        ).inc()
        if granted.granted:
            self.metrics.granted.labels(policy=policy).inc(granted.granted)
        if locked is not None:
            self.metrics.locks.labels(policy=policy, escalated=str(locked.strikes > 1)).inc()
        self.responder.reply_nowait(envelope, granted)

    def sweep(self, *, replaying: bool) -> None:
        """Forget keys with nothing left. Not while a replay is under way (a replayed message
        still counts in a window that has ended by the wall clock), and with a margin for a
        host clock ahead of the broker's."""
        if not replaying:
            now = utcnow() - SWEEP_MARGIN
            for book in self.books.values():
                book.sweep(now)
        self.metrics.keys.set(sum(len(b) for b in self.books.values()))


def _result(ask: AcquireLease, granted: LeaseGranted, locked: bool) -> str:
    if locked:
        return "locked"
    if granted.granted:
        return "granted"
    return "empty" if ask.prefetch else "refused"
