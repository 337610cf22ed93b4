"""Helpers for the lease book's tests (the owner's side, ADR 0010): asks and releases as api
instances send them, a book that fills in "the key's current window", and replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from authbus_ratelimit.core.leases import Answer, LeaseBook
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    ReleaseLease,
    StrikeRecorded,
    SubjectLocked,
)

from .support import T0

CURRENT = datetime(1970, 1, 1, tzinfo=UTC)  # ask(): "the key's current window", see Book
ALL = 100_000_000  # ask(): everything held was spent (the owner caps it at what was held)

KEY = "default:acct:1"
SUBJECT = "acct:1"
PER_MINUTE = LeasePolicy(name="default", limit=60, window_s=60)
LOCKING = LeasePolicy(name="default", limit=3, window_s=60, lockout_s=30)
STRIKING = LeasePolicy(
    name="default", limit=1, window_s=60, lockout_s=10, lockout_cap_s=35, strike_memory_s=100
)
SHORT_MEMORY = STRIKING.model_copy(update={"strike_memory_s": 30})


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ask(
    instance: str = "api-a",
    want: int = 1_000,
    *,
    policy: LeasePolicy = PER_MINUTE,
    key: str = KEY,
    prefetch: bool = False,
    holding: datetime | None = CURRENT,
    spent: int = ALL,
    received: int | None = None,
) -> AcquireLease:
    """An ask from an instance that holds the slice of the window opened at `holding` and
    admitted `spent` requests from it. By default: an instance that received every grant of
    the key's current window and spent them all (`Book` fills in the window)."""
    return AcquireLease(
        key=key,
        subject=SUBJECT,
        policy=policy,
        instance=instance,
        want=want,
        prefetch=prefetch,
        window_start=holding,
        received=received,
        spent=spent,
    )


def release(
    instance: str, unused: int, window_start: datetime, *, key: str = KEY, spent: int = 0
) -> ReleaseLease:
    return ReleaseLease(
        key=key, instance=instance, window_start=window_start, unused=unused, spent=spent
    )


class Book(LeaseBook):
    """The lease book, with `ask()`'s default filled in: the asker holds the key's current
    window (whatever its start) and reports all of it spent."""

    def acquire(self, ask: AcquireLease, at: datetime) -> Answer:
        if ask.window_start == CURRENT:
            ask = ask.model_copy(update={"window_start": self.window_start(ask.key)})
        return super().acquire(ask, at)


def acquire(
    book: LeaseBook, message: AcquireLease, at: datetime
) -> tuple[LeaseGranted, SubjectLocked | None]:
    """The reply and the lock event of an ask."""
    answer = book.acquire(message, at)
    assert (answer.locked is None) == (answer.strike is None)
    return answer.reply, answer.locked


def granted(book: LeaseBook, message: AcquireLease, at: datetime) -> LeaseGranted:
    """The reply to an ask that must not lock anything."""
    reply, locked = acquire(book, message, at)
    assert locked is None
    return reply


def fill(book: LeaseBook, policy: LeasePolicy, at: datetime, *, key: str = KEY) -> int:
    """Prefetch from api-a until the key's window is fully allocated; returns how much."""
    total = 0
    while grant := granted(book, ask(policy=policy, key=key, prefetch=True, spent=0), at).granted:
        total += grant
    return total


def breach(book: LeaseBook, at: datetime, policy: LeasePolicy = STRIKING) -> SubjectLocked:
    """Ask at `at` until the key's window is empty and the ask breaches it; returns the lock
    event."""
    while True:
        reply, locked = acquire(book, ask(policy=policy), at)
        if locked is not None:
            assert (reply.granted, reply.blocked_until) == (0, locked.until)
            return locked
        assert reply.granted > 0


Message = tuple[AcquireLease | ReleaseLease | StrikeRecorded, datetime]


def play(book: LeaseBook, messages: list[Message], *, sweep: bool = False) -> list[Answer]:
    answers = []
    for message, at in messages:
        if isinstance(message, AcquireLease):
            answers.append(book.acquire(message, at))
        elif isinstance(message, ReleaseLease):
            book.release(message, at)
        else:
            book.strike_recorded(message)
        if sweep:
            book.sweep(at)
    return answers
