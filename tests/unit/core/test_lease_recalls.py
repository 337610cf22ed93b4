"""Quota leases, the owner's side, exact both ways (ADR 0010 "Exact both ways"; SPEC R3, R7,
R9): a waiting ask that finds the window allocated recalls the unspent units instead of
refusing, a breach needs every unit spent, and a lock's strike is checkpointed in the
partition so a replay from a horizon keeps the chain of lockouts in a row."""

from __future__ import annotations

from datetime import datetime, timedelta

from authbus_ratelimit.core.leases import LeaseBook
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeasePolicy,
    RecallLease,
    ReleaseLease,
    StrikeRecorded,
    SubjectLocked,
)

from .lease_support import (
    ALL,
    KEY,
    LOCKING,
    PER_MINUTE,
    STRIKING,
    SUBJECT,
    Book,
    Message,
    acquire,
    ask,
    breach,
    fill,
    granted,
    play,
    s,
)
from .support import T0

# --- recalls (R9: exact both ways) --------------------------------------------------------

FIVE = LeasePolicy(name="default", limit=5, window_s=60, lockout_s=60)


def allocate(
    book: LeaseBook,
    instance: str,
    n: int,
    at: datetime,
    *,
    spent: int = 0,
    policy: LeasePolicy = FIVE,
) -> None:
    """Allocate exactly `n` units to `instance` (top-ups, so nothing recalls or locks), which
    reports `spent` of what it holds."""
    got = 0
    while got < n:
        message = ask(instance, n - got, policy=policy, spent=spent, prefetch=True)
        grant = granted(book, message, at).granted
        assert grant > 0
        got += grant


def recall_of(book: LeaseBook, message: AcquireLease, at: datetime) -> RecallLease | None:
    answer = book.acquire(message, at)
    assert (answer.reply.granted, answer.locked, answer.reply.retry_after_ms) == (0, None, 10)
    return answer.recall


def answer(instance: str, unused: int, spent: int, received: int) -> ReleaseLease:
    return ReleaseLease(
        key=KEY,
        instance=instance,
        window_start=T0,
        unused=unused,
        spent=spent,
        received=received,
        recalled=True,
    )


def test_a_waiting_ask_on_an_allocated_window_recalls_the_unspent_units() -> None:
    """R9: api-a holds 3 unspent of the 5; api-b's request is not refused for that: the owner
    recalls api-a's units and tells api-b to ask again shortly. Nobody is locked."""
    book = Book()
    allocate(book, "api-a", 3, s(0))
    allocate(book, "api-b", 2, s(0), spent=ALL)

    result = book.acquire(ask("api-b", policy=FIVE), s(2))

    assert result.recall == RecallLease(
        key=KEY, subject=SUBJECT, window_start=s(0), window_end=s(60), holders=("api-a",), at=s(2)
    )
    assert (result.reply.granted, result.reply.blocked_until, result.locked) == (0, None, None)
    assert (result.reply.retry_after_ms, result.reply.outstanding) == (10, 3)


def test_the_recall_names_every_holder_with_units_out_in_name_order() -> None:
    book = Book()
    for instance in ("api-c", "api-a", "api-b"):
        allocate(book, instance, 1, s(0))
    allocate(book, "api-d", 2, s(0), spent=ALL)

    recall = recall_of(book, ask("api-d", policy=FIVE), s(1))

    assert recall is not None
    assert recall.holders == ("api-a", "api-b", "api-c")


def test_a_holder_is_not_recalled_again_until_it_answers_or_the_repeat_passes() -> None:
    """One broadcast per holder while it is answering; again after 50 ms of silence (a recall
    lost with a crashed owner is not waited on for long)."""
    book = Book()
    allocate(book, "api-a", 5, s(0))

    first = recall_of(book, ask("api-b", policy=FIVE), s(1))
    again = recall_of(book, ask("api-b", policy=FIVE), s(1.01))
    later = recall_of(book, ask("api-b", policy=FIVE), s(1.06))
    granted(book, ask("api-a", policy=FIVE, spent=1, prefetch=True), s(1.07))
    heard = recall_of(book, ask("api-b", policy=FIVE), s(1.08))

    assert first is not None and first.holders == ("api-a",)
    assert again is None
    assert later is not None and later.at == s(1.06)
    assert heard is not None  # api-a spoke since (and still holds 4): recalled at once


def test_the_units_a_recall_brings_back_go_to_the_next_ask() -> None:
    """R9: api-a answers the recall with its 3 unspent units; api-b's retry gets them."""
    book = Book()
    allocate(book, "api-a", 3, s(0))
    allocate(book, "api-b", 2, s(0), spent=ALL)
    recall_of(book, ask("api-b", policy=FIVE), s(1))

    back = book.release(answer("api-a", unused=3, spent=0, received=3), s(1.005))
    retry = granted(book, ask("api-b", 1, policy=FIVE), s(1.01))

    assert back == 3
    assert book.holdings(KEY) == {"api-b": (3, 2)}
    assert (retry.granted, retry.remaining) == (1, 2)


def test_a_recall_answer_returns_what_the_holder_never_received() -> None:
    """A grant whose reply api-a never used (it came too late) goes back with its answer:
    api-a says it received 2 of the 4 allocated to it and spent both."""
    book = Book()
    allocate(book, "api-a", 4, s(0))

    back = book.release(answer("api-a", unused=0, spent=2, received=2), s(1))

    assert back == 2
    assert book.holdings(KEY) == {"api-a": (2, 2)}


def test_once_every_holder_answered_with_its_units_spent_the_next_ask_breaches() -> None:
    """R3, R9: the lockout starts on the first request after the limit is really spent,
    whichever instance makes it."""
    book = Book()
    allocate(book, "api-a", 3, s(0))
    allocate(book, "api-b", 2, s(0), spent=ALL)
    recall_of(book, ask("api-b", policy=FIVE), s(1))
    assert book.release(answer("api-a", unused=0, spent=3, received=3), s(1.005)) == 0

    reply, locked = acquire(book, ask("api-b", policy=FIVE), s(1.01))

    assert locked is not None
    assert (reply.blocked_until, locked.until) == (s(61.01), s(61.01))


def test_a_prefetch_on_an_allocated_window_recalls_nothing() -> None:
    book = Book()
    allocate(book, "api-a", 5, s(0))

    result = book.acquire(ask("api-b", policy=FIVE, prefetch=True), s(1))

    assert (result.recall, result.reply.retry_after_ms, result.reply.outstanding) == (None, 0, 5)


def test_without_a_lockout_a_spent_window_answers_nothing_left_and_nothing_out() -> None:
    """The asker then refuses until the window's end without asking again."""
    policy = FIVE.model_copy(update={"lockout_s": 0})
    book = Book()
    allocate(book, "api-a", 5, s(0), spent=ALL, policy=policy)

    result = book.acquire(ask("api-a", policy=policy), s(1))

    reply = result.reply
    assert (reply.granted, reply.outstanding, reply.retry_after_ms) == (0, 0, 0)
    assert (result.locked, result.recall) == (None, None)


def test_the_last_units_go_out_one_at_a_time_when_few_are_left_for_the_holders() -> None:
    """R9: with r <= 2h every grant is 1, so the window's end is decided request by request."""
    policy = LeasePolicy(name="default", limit=10, window_s=60)
    book = Book()
    granted(book, ask("api-a", policy=policy, want=4, spent=0), s(0))
    granted(book, ask("api-b", policy=policy, want=2, spent=0), s(0))

    grants = [granted(book, ask("api-c", policy=policy, want=50), s(1)).granted for _ in range(4)]

    assert grants == [1, 1, 1, 1]  # r = 4, 3, 2, 1 with 3 holders


def test_a_grant_the_asker_never_received_goes_back_to_the_window() -> None:
    """R4: a reply lost to a timeout strands nothing: the asker's next ask says it holds no
    slice of the window, so what it was allocated (and did not report spent) returns."""
    book = Book()
    assert granted(book, ask("api-a", spent=0), s(0)).granted == 30  # the reply is lost

    again = granted(book, ask("api-a", holding=None, spent=0), s(1))

    assert (again.granted, again.remaining) == (30, 30)  # r was 60 again


def test_a_lost_top_up_in_a_window_the_asker_holds_goes_back_too() -> None:
    """R4: the asker received 30 of the 45 it was allocated (a top-up's reply was lost):
    the 15 return to the window at its next ask."""
    book = Book()
    granted(book, ask("api-a", spent=0), s(0))  # 30, received
    granted(book, ask("api-a", spent=0, prefetch=True), s(1))  # 15, lost

    again = granted(book, ask("api-a", received=30, spent=30), s(2))

    assert (again.granted, again.remaining) == (15, 15)  # r was 30 again, h=1


def test_asks_during_a_lock_get_nothing_and_emit_no_second_event() -> None:
    """R3: the lock holds for every instance, and prefetches too, until `blocked_until`."""
    book = Book()
    fill(book, LOCKING, s(0))
    book.acquire(ask(policy=LOCKING), s(10))  # locked until s(40)

    for at, prefetch in ((s(11), False), (s(20), True), (s(39.999), False)):
        reply = granted(book, ask("api-c", policy=LOCKING, prefetch=prefetch), at)
        assert (reply.granted, reply.blocked_until) == (0, s(40))


def test_a_lock_leaves_room_to_the_next_window() -> None:
    """R3: after the lock, the next window grants again."""
    book = Book()
    fill(book, LOCKING, s(0))
    book.acquire(ask(policy=LOCKING), s(10))  # locked until s(40)

    reply = granted(book, ask(policy=LOCKING), s(60))

    assert (reply.granted, reply.window_start, reply.blocked_until) == (2, s(60), None)


def test_the_lock_survives_a_window_change() -> None:
    """R3: a lock taken near a window's end holds into the next window."""
    book = Book()
    fill(book, LOCKING, s(0))
    book.acquire(ask(policy=LOCKING), s(50))  # locked until s(80)

    during = granted(book, ask(policy=LOCKING), s(60))
    after = granted(book, ask(policy=LOCKING), s(80))

    assert (during.granted, during.blocked_until, during.remaining) == (0, s(80), 3)
    assert (during.window_start, during.window_end) == (s(60), s(120))
    assert (after.granted, after.blocked_until, after.window_start) == (2, None, s(60))


def test_a_prefetch_on_an_empty_window_is_not_a_breach() -> None:
    """R3: nobody waits on a prefetch, so finding nothing left locks nothing."""
    book = Book()
    fill(book, LOCKING, s(0))

    reply = granted(book, ask("api-b", policy=LOCKING, prefetch=True), s(5))
    _, locked = acquire(book, ask("api-a", policy=LOCKING), s(6))  # api-a spent all: a breach

    assert (reply.granted, reply.remaining, reply.blocked_until) == (0, 0, None)
    assert locked is not None
    assert locked.strikes == 1


def test_without_a_lockout_a_breach_only_gets_nothing() -> None:
    book = Book()
    fill(book, PER_MINUTE, s(0))

    reply = granted(book, ask("api-b"), s(2))

    assert (reply.granted, reply.remaining, reply.blocked_until) == (0, 0, None)


# --- strike checkpoints (R7 across fail-over) -----------------------------------------------


def logged_breach(book: LeaseBook, at: datetime, log: list[Message]) -> SubjectLocked:
    """Breach at `at` as an owner would, logging the asks and the checkpoint it appends."""
    for _ in range(10):
        message = ask(policy=STRIKING)
        log.append((message, at))
        answer = book.acquire(message, at)
        if answer.locked is not None:
            assert answer.strike is not None
            log.append((answer.strike, at + timedelta(milliseconds=3)))
            book.strike_recorded(answer.strike)  # its own record, read back
            return answer.locked
    raise AssertionError(f"no breach at {at}")


def test_a_lock_comes_with_a_checkpoint_of_its_strike() -> None:
    book = Book()

    locked = breach(book, s(0))
    second = book.acquire(ask(policy=STRIKING), s(20))
    while second.locked is None:
        second = book.acquire(ask(policy=STRIKING), s(20))

    assert second.strike == StrikeRecorded(
        key=KEY,
        subject=SUBJECT,
        policy="default",
        strikes=2,
        at=s(20),
        until=s(40),
        strike_memory_s=100,
    )
    assert locked.strikes == 1


def test_a_replay_that_starts_after_earlier_strikes_keeps_the_chain() -> None:
    """R7 across a fail-over: a new owner replays only from its horizon (here: s(140), after
    the first two lockouts and their windows); the checkpoint of the third tells it this was
    the third in a row, so the fourth still doubles (capped) instead of starting over."""
    book = Book()
    log: list[Message] = []
    for at in (s(0), s(70), s(150)):  # one window each, 80 s apart at most: in a row
        logged_breach(book, at, log)
    fourth = logged_breach(book, s(240), log)

    horizon = [(m, at) for m, at in log if at >= s(140)]
    replayed = Book()
    play(replayed, horizon[:-2])  # up to the fourth breach's ask and checkpoint
    again = logged_breach(replayed, s(240), [])
    without = Book()
    play(without, [(m, at) for m, at in horizon[:-2] if isinstance(m, AcquireLease)])
    forgotten = logged_breach(without, s(240), [])

    assert (fourth.strikes, fourth.until) == (4, s(275))
    assert (again.strikes, again.until) == (4, s(275))
    assert forgotten.strikes == 2  # what a replay from the horizon knew before checkpoints


def test_a_checkpoint_it_already_has_or_an_older_one_changes_nothing() -> None:
    book = Book()
    first = breach(book, s(0))
    older = StrikeRecorded(
        key=KEY, subject=SUBJECT, policy="default", strikes=9, at=s(-5), until=s(500)
    )
    same = StrikeRecorded(
        key=KEY,
        subject=SUBJECT,
        policy="default",
        strikes=1,
        at=s(0),
        until=first.until,
        strike_memory_s=100,
    )

    book.strike_recorded(older)
    book.strike_recorded(same)
    second = breach(book, s(20))

    assert (second.strikes, second.until) == (2, s(40))


def test_a_checkpoint_of_a_key_with_no_window_locks_it_until_its_end() -> None:
    """The horizon cut off the asks of the breach but not its checkpoint."""
    book = Book()
    book.strike_recorded(
        StrikeRecorded(
            key=KEY,
            subject=SUBJECT,
            policy="default",
            strikes=3,
            at=s(0),
            until=s(35),
            strike_memory_s=100,
        )
    )

    during = granted(book, ask(policy=STRIKING), s(10))
    after = breach(book, s(50))

    assert (during.granted, during.blocked_until) == (0, s(35))
    assert (after.strikes, after.until) == (4, s(85))
