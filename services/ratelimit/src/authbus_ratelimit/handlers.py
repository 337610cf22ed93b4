"""ratelimit's Kafka boundary: lease asks and releases in (from the partitions this instance
owns, in order, with the broker's time), grants out to the asker, lockouts and recalls
broadcast, strike checkpoints appended to the key's own partition.

One `LeaseBook` per owned partition: a partition given to this instance starts a fresh book
that the replay fills (`PartitionOwner`), a partition taken away drops its book. The books are
a pure function of the messages, so only what is live has effects outside: a reply goes only
to an asker still waiting, a recall only for an ask still waiting, a lockout is broadcast (and
its strike checkpoint appended) only while it lasts (a replayed one again: api instances keep
the later end, and the book takes a checkpoint it already has as a no-op)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from authbus_ratelimit.core.leases import Answer, LeaseBook
from authbus_ratelimit.metrics import RatelimitMetrics
from authbus_shared.contracts import topics
from authbus_shared.contracts.envelope import (
    Contract,
    Envelope,
    MessageDecodeError,
    payload_of,
    utcnow,
    wrap,
)
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    InspectSubject,
    LeaseGranted,
    ReleaseLease,
    ResetSubject,
    StrikeRecorded,
    SubjectLimits,
    SubjectUnlocked,
)
from authbus_shared.kafka.producer import Key

log = structlog.get_logger(__name__)
SWEEP_MARGIN = timedelta(seconds=30)


class Replies(Protocol):
    """Where answers go (`Responder`: the asker's reply partition)."""

    def wanted(self, request: Envelope, now: datetime) -> bool: ...

    def reply_nowait(self, request: Envelope, payload: Contract) -> None: ...


class Sender(Protocol):
    """How events leave (`Publisher`)."""

    def send_nowait(
        self, topic: str, envelope: Envelope, *, key: Key = None, partition: int | None = None
    ) -> None: ...


@dataclass
class LeaseHandlers:
    responder: Replies
    publisher: Sender
    decisions_topic: str
    metrics: RatelimitMetrics
    instance_id: str
    books: dict[int, LeaseBook] = field(default_factory=dict)
    # Where strike checkpoints go: the leases topic (default: the one with the decisions
    # topic's prefix).
    leases_topic: str = ""
    clock: Callable[[], datetime] = utcnow

    def __post_init__(self) -> None:
        if not self.leases_topic:
            prefix = self.decisions_topic.removesuffix(topics.RATELIMIT_DECISIONS.name)
            self.leases_topic = prefix + topics.RATELIMIT_LEASES.name

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
                self._acquire(book, partition, envelope, message, at)
            case ReleaseLease():
                back = book.release(message, at)
                self.metrics.releases.inc()
                if message.recalled:
                    self.metrics.recalled_units.inc(back)
            case StrikeRecorded():
                book.strike_recorded(message)
            case InspectSubject():
                self._answer(
                    envelope, SubjectLimits(partition=partition, keys=book.inspect(message.subject))
                )
            case ResetSubject():
                self._reset(book, partition, envelope, message.subject, at)
            case _:
                raise MessageDecodeError(f"ratelimit does not handle {envelope.type}")

    def _acquire(
        self, book: LeaseBook, partition: int, envelope: Envelope, ask: AcquireLease, at: datetime
    ) -> None:
        answer = book.acquire(ask, at)
        now = self.clock()
        self._publish_lock(answer, partition, now)
        if not self.responder.wanted(envelope, now):
            self.metrics.replayed.inc()
            return
        policy = ask.policy.name
        if answer.recall is not None:
            event = wrap(answer.recall, producer=self.instance_id, now=now)
            self.publisher.send_nowait(self.decisions_topic, event, key=answer.recall.subject)
            self.metrics.recalls.labels(policy=policy).inc()
        self.metrics.asks.labels(policy=policy, result=_result(ask, answer)).inc()
        if answer.reply.granted:
            self.metrics.granted.labels(policy=policy).inc(answer.reply.granted)
        if answer.locked is not None:
            escalated = str(answer.locked.strikes > 1)
            self.metrics.locks.labels(policy=policy, escalated=escalated).inc()
        self.responder.reply_nowait(envelope, answer.reply)

    def _answer(self, envelope: Envelope, reply: Contract) -> None:
        """Reply to an operator's question, unless it is replayed (nobody waits for it)."""
        if self.responder.wanted(envelope, self.clock()):
            self.responder.reply_nowait(envelope, reply)

    def _reset(
        self, book: LeaseBook, partition: int, envelope: Envelope, subject: str, at: datetime
    ) -> None:
        """Forget the subject here (replayed too: the reset is in the partition); while it is
        live, tell the api instances to lift its lockouts and drop its slices (a spent slice
        would refuse until its window's end without asking), and the operator what went."""
        forgotten = book.reset(subject)
        now = self.clock()
        if not self.responder.wanted(envelope, now):
            return
        if forgotten:  # the api instances drop the lock and the slices (a spent one refuses)
            event = wrap(
                SubjectUnlocked(subject=subject, at=at), producer=self.instance_id, now=now
            )
            self.publisher.send_nowait(self.decisions_topic, event, key=subject)
        log.info("subject reset", subject=subject, partition=partition, keys=len(forgotten))
        self.responder.reply_nowait(envelope, SubjectLimits(partition=partition, keys=forgotten))

    def _publish_lock(self, answer: Answer, partition: int, now: datetime) -> None:
        """A lock still in force: broadcast it, and checkpoint its strike in the partition."""
        locked, strike = answer.locked, answer.strike
        if locked is None or locked.until <= now:
            return
        event = wrap(locked, producer=self.instance_id, now=now)
        self.publisher.send_nowait(self.decisions_topic, event, key=locked.subject)
        if strike is not None:
            record = wrap(strike, producer=self.instance_id, now=now)
            self.publisher.send_nowait(
                self.leases_topic, record, key=strike.key, partition=partition
            )

    def sweep(self, *, replaying: bool) -> None:
        """Forget keys with nothing left. Not while a replay is under way (a replayed message
        still counts in a window that has ended by the wall clock), and with a margin for a
        host clock ahead of the broker's."""
        if not replaying:
            now = self.clock() - SWEEP_MARGIN
            for book in self.books.values():
                book.sweep(now)
        self.metrics.keys.set(sum(len(b) for b in self.books.values()))


def _result(ask: AcquireLease, answer: Answer) -> str:
    reply: LeaseGranted = answer.reply
    if answer.locked is not None:
        return "locked"
    if reply.granted:
        return "granted"
    if ask.prefetch:
        return "empty"
    if reply.blocked_until is not None:
        return "blocked"
    return "recalling" if reply.retry_after_ms else "refused"
