"""ratelimit's Kafka boundary on twin ports (ADR 0010): what goes out for a live ask, and only
for a live one — the reply, a recall on the decisions topic, a lock on the decisions topic and
its strike checkpoint on the key's own partition of the leases topic."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry

from authbus_ratelimit.handlers import LeaseHandlers
from authbus_ratelimit.metrics import RatelimitMetrics
from authbus_shared.contracts.envelope import Contract, Envelope, ReplyTo, payload_of, wrap
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    InspectSubject,
    LeaseGranted,
    LeasePolicy,
    RecallLease,
    ResetSubject,
    StrikeRecorded,
    SubjectLimits,
    SubjectLocked,
    SubjectUnlocked,
)
from authbus_shared.kafka.producer import Key
from tests.unit.core.support import T0, FakeClock

POLICY = LeasePolicy(name="writes", limit=2, window_s=60, lockout_s=60)
PARTITION = 7


@dataclass
class Ports:
    """The Replies and Sender ports, recording what goes out."""

    clock: FakeClock
    replies: list[Contract] = field(default_factory=list)
    sent: list[tuple[str, Contract, Key, int | None]] = field(default_factory=list)

    def wanted(self, request: Envelope, now: datetime) -> bool:
        return request.reply_to is not None and not request.expired(now)

    def reply_nowait(self, request: Envelope, payload: Contract) -> None:
        self.replies.append(payload)

    def send_nowait(
        self, topic: str, envelope: Envelope, *, key: Key = None, partition: int | None = None
    ) -> None:
        self.sent.append((topic, payload_of(envelope), key, partition))


def handlers(ports: Ports) -> LeaseHandlers:
    h = LeaseHandlers(
        responder=ports,
        publisher=ports,
        decisions_topic="p.ratelimit.decisions.v1",
        metrics=RatelimitMetrics(CollectorRegistry()),
        instance_id="ratelimit-0",
        clock=ports.clock,
    )
    h.assigned(PARTITION)
    return h


def asked(instance: str, clock: FakeClock, *, spent: int = 0, wait_s: float = 0.2) -> Envelope:
    ask = AcquireLease(
        key="writes:acct:1",
        subject="acct:1",
        policy=POLICY,
        instance=instance,
        want=2,
        window_start=T0 if spent else None,
        spent=spent,
    )
    reply_to = ReplyTo(topic="replies", partition=0, instance=instance)
    return wrap(
        ask,
        producer=instance,
        now=clock(),
        correlation_id=instance,
        reply_to=reply_to,
        timeout=timedelta(seconds=wait_s),
    )


async def test_checkpoints_go_to_the_leases_topic_with_the_same_prefix_and_partition() -> None:
    clock = FakeClock(T0)
    ports = Ports(clock)
    h = handlers(ports)
    await h.handle(PARTITION, asked("api-a", clock), T0)  # granted 1 (r=2, h=1)
    await h.handle(PARTITION, asked("api-a", clock, spent=1), T0)  # granted 1 more

    await h.handle(PARTITION, asked("api-a", clock, spent=2), T0)  # the breach

    assert h.leases_topic == "p.ratelimit.leases.v1"
    locks = [(t, m, k, p) for t, m, k, p in ports.sent if isinstance(m, SubjectLocked)]
    strikes = [(t, m, k, p) for t, m, k, p in ports.sent if isinstance(m, StrikeRecorded)]
    assert [(t, k, p) for t, _, k, p in locks] == [("p.ratelimit.decisions.v1", "acct:1", None)]
    assert [(t, k, p) for t, _, k, p in strikes] == [
        ("p.ratelimit.leases.v1", "writes:acct:1", PARTITION)
    ]
    reply = ports.replies[-1]
    assert isinstance(reply, LeaseGranted) and reply.blocked_until == T0 + timedelta(seconds=60)


async def test_a_live_ask_on_an_allocated_window_broadcasts_a_recall() -> None:
    clock = FakeClock(T0)
    ports = Ports(clock)
    h = handlers(ports)
    await h.handle(PARTITION, asked("api-a", clock), T0)  # api-a holds 1 unspent
    await h.handle(PARTITION, asked("api-b", clock), T0)  # api-b gets the last one

    await h.handle(PARTITION, asked("api-b", clock, spent=1), T0)

    (recall,) = [m for _, m, _, _ in ports.sent if isinstance(m, RecallLease)]
    assert recall.holders == ("api-a",)
    reply = ports.replies[-1]
    assert isinstance(reply, LeaseGranted) and (reply.granted, reply.retry_after_ms) == (0, 10)


async def test_an_ask_nobody_waits_for_any_more_gets_no_reply_and_no_recall() -> None:
    """A replay, or an ask whose deadline passed: the book counts it, nothing goes out."""
    clock = FakeClock(T0)
    ports = Ports(clock)
    h = handlers(ports)
    await h.handle(PARTITION, asked("api-a", clock), T0)
    await h.handle(PARTITION, asked("api-b", clock), T0)
    late = asked("api-b", clock, spent=1)
    clock.advance(timedelta(seconds=1))

    await h.handle(PARTITION, late, T0)

    assert len(ports.replies) == 2
    assert not any(isinstance(m, RecallLease) for _, m, _, _ in ports.sent)


def operator(order: Contract, clock: FakeClock) -> Envelope:
    """An operator's InspectSubject or ResetSubject, sent to this partition."""
    reply_to = ReplyTo(topic="replies", partition=0, instance="admin")
    return wrap(
        order,
        producer="admin",
        now=clock(),
        correlation_id="admin",
        reply_to=reply_to,
        timeout=timedelta(seconds=1),
    )


async def test_an_operator_sees_the_subjects_keys_and_a_reset_forgets_them_and_unlocks() -> None:
    """G4: inspect is read-only; a reset answers with what it forgot, broadcasts the unlock,
    and the next ask opens a fresh window with the whole limit."""
    clock = FakeClock(T0)
    ports = Ports(clock)
    h = handlers(ports)
    for spent in (0, 1, 2):  # 1 + 1 granted, then the breach: locked for 60 s
        await h.handle(PARTITION, asked("api-a", clock, spent=spent), T0)
    at = T0 + timedelta(seconds=5)

    await h.handle(PARTITION, operator(InspectSubject(subject="acct:1"), clock), at)
    await h.handle(PARTITION, operator(InspectSubject(subject="acct:2"), clock), at)
    seen, other = ports.replies[-2:]
    await h.handle(PARTITION, operator(ResetSubject(subject="acct:1"), clock), at)
    reset = ports.replies[-1]
    await h.handle(PARTITION, asked("api-a", clock), at)
    after = ports.replies[-1]

    assert isinstance(seen, SubjectLimits) and isinstance(other, SubjectLimits)
    (key,) = seen.keys
    assert (key.key, key.policy, key.limit, key.allocated, key.spent) == (
        "writes:acct:1",
        "writes",
        2,
        2,
        2,
    )
    assert (key.blocked_until, key.strikes) == (T0 + timedelta(seconds=60), 1)
    assert other == SubjectLimits(partition=PARTITION, keys=())
    assert reset == SubjectLimits(partition=PARTITION, keys=seen.keys)
    unlocks = [(t, m, k) for t, m, k, _ in ports.sent if isinstance(m, SubjectUnlocked)]
    assert unlocks == [
        ("p.ratelimit.decisions.v1", SubjectUnlocked(subject="acct:1", at=at), "acct:1")
    ]
    assert isinstance(after, LeaseGranted)
    assert (after.granted, after.window_start, after.blocked_until) == (1, at, None)


async def test_a_replayed_reset_applies_again_but_answers_and_broadcasts_nothing() -> None:
    clock = FakeClock(T0)
    ports = Ports(clock)
    h = handlers(ports)
    for spent in (0, 1, 2):
        await h.handle(PARTITION, asked("api-a", clock, spent=spent), T0)
    order = operator(ResetSubject(subject="acct:1"), clock)
    clock.advance(timedelta(seconds=5))  # its asker stopped waiting: a replay
    sent_before, replies_before = len(ports.sent), len(ports.replies)

    await h.handle(PARTITION, order, T0 + timedelta(seconds=1))

    assert (len(ports.sent), len(ports.replies)) == (sent_before, replies_before)
    assert h.books[PARTITION].inspect("acct:1") == ()


async def test_a_reset_without_a_lockout_still_tells_the_api_instances() -> None:
    """A window spent under a policy without lockout: the instances hold a spent slice that
    would refuse until the window's end without asking; the unlock makes them drop it."""
    clock = FakeClock(T0)
    ports = Ports(clock)
    h = handlers(ports)
    await h.handle(PARTITION, asked("api-a", clock), T0)  # a window, no lock

    await h.handle(PARTITION, operator(ResetSubject(subject="acct:1"), clock), T0)

    unlocks = [m for _, m, _, _ in ports.sent if isinstance(m, SubjectUnlocked)]
    assert unlocks == [SubjectUnlocked(subject="acct:1", at=T0)]
