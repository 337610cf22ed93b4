"""Quota leases, the holder's side, exact both ways (ADR 0010 "Exact both ways"; SPEC R3, R9):
an empty slice always asks the owner, a recalling answer makes the request ask again within
its budget, an owner's recall gives back everything unspent at once and voids a reply in
flight, and a slice asks for what its waiting requests need."""

from __future__ import annotations

from datetime import datetime, timedelta

from authbus_api.core.quota import Quota
from authbus_api.core.rates import Ask, Need, RatePolicy, RateState, Refuse
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    RecallLease,
    ReleaseLease,
)

from .support import T0

ANN = "acct:ann"
FIVE = RatePolicy(LeasePolicy(name="writes", limit=5, window_s=60, lockout_s=60), "account")
NEED = Need(FIVE, ANN)


def sec(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reply(
    ask: AcquireLease,
    granted: int,
    *,
    start: datetime = T0,
    remaining: int = 0,
    outstanding: int = 0,
    retry_after_ms: int = 0,
    blocked_until: datetime | None = None,
) -> LeaseGranted:
    return LeaseGranted(
        key=ask.key,
        granted=granted,
        window_start=start,
        window_end=start + timedelta(seconds=60),
        remaining=remaining,
        outstanding=outstanding,
        retry_after_ms=retry_after_ms,
        blocked_until=blocked_until,
    )


def asked(decision: object) -> Ask:
    assert isinstance(decision, Ask), decision
    return decision


def holding(units: int, *, at: datetime = T0) -> tuple[Quota, AcquireLease]:
    """A quota whose slice of the key's window (opened at `at`) holds `units`."""
    q = Quota("api-1")
    ask = asked(q.decide([NEED], at)).asks[0]
    assert q.granted(ask, reply(ask, units, start=at, remaining=5 - units), at) == "units"
    return q, ask


def recall(*holders: str, start: datetime = T0) -> RecallLease:
    return RecallLease(
        key=NEED.key,
        subject=ANN,
        window_start=start,
        window_end=start + timedelta(seconds=60),
        holders=holders,
        at=start,
    )


# --- asking, not refusing ------------------------------------------------------------------


def test_an_empty_slice_asks_the_owner_again_rather_than_refuse_on_its_own_view() -> None:
    """R3, R9: only the owner knows whether the window is spent (and starts a lockout)."""
    q, _ = holding(1)
    q.decide([NEED], sec(1))  # the last unit

    first = asked(q.decide([NEED], sec(2)))
    q.granted(first.asks[0], reply(first.asks[0], 0, outstanding=3, retry_after_ms=10), sec(2))
    again = asked(q.decide([NEED], sec(2), since=sec(2)))

    assert again.not_before == sec(2.01)  # after the owner's recall delay
    assert again.asks[0].prefetch is False


def test_a_recall_that_does_not_bring_units_back_in_the_budget_refuses_for_a_second() -> None:
    """The bound: units stranded at a holder that does not answer are refused for, briefly;
    the headers still say when the window really ends."""
    q, _ = holding(1)
    q.decide([NEED], sec(1))
    for n in range(20):
        ask = asked(q.decide([NEED], sec(2 + n * 0.011), since=sec(2))).asks[0]
        q.granted(ask, reply(ask, 0, outstanding=3, retry_after_ms=10), sec(2 + n * 0.011))
        if n * 0.011 + 0.01 > 0.2:
            break

    refused = q.decide([NEED], sec(2.2), since=sec(2))

    assert refused == Refuse(sec(3.2), (RateState("writes", 5, 60, 0, sec(60)),), locked=False)


def test_the_budget_counts_from_the_recall_for_a_request_that_queued_before_it() -> None:
    q, _ = holding(1)
    q.decide([NEED], sec(1))
    ask = asked(q.decide([NEED], sec(5))).asks[0]
    q.granted(ask, reply(ask, 0, outstanding=3, retry_after_ms=10), sec(5))

    queued_long = q.decide([NEED], sec(5.05), since=sec(1))  # waited 4 s, the recall 50 ms

    assert isinstance(queued_long, Ask)


def test_a_spent_window_refuses_until_its_end_without_asking_again() -> None:
    """Nothing allocated and nothing out: every unit was admitted; nothing can come back."""
    q, _ = holding(1)
    q.decide([NEED], sec(1))
    ask = asked(q.decide([NEED], sec(2))).asks[0]

    assert q.granted(ask, reply(ask, 0), sec(2)) == "none"
    assert q.decide([NEED], sec(30)) == Refuse(
        sec(60), (RateState("writes", 5, 60, 0, sec(60)),), locked=False
    )


def test_a_lockout_refusal_says_the_lock_s_true_end() -> None:
    """R3, R5: the 429 that starts a lockout already says ~60 s."""
    q, _ = holding(1)
    q.decide([NEED], sec(1))
    ask = asked(q.decide([NEED], sec(2))).asks[0]

    q.granted(ask, reply(ask, 0, blocked_until=sec(62)), sec(2))

    assert q.decide([NEED], sec(2)) == Refuse(
        sec(62), (RateState("writes", 5, 60, 0, sec(62)),), locked=True
    )


def test_the_next_ask_wants_a_unit_for_each_request_that_waited_on_the_last() -> None:
    q = Quota("api-1")
    first = asked(q.decide([NEED], T0)).asks[0]
    for _ in range(4):  # four more requests wait on the same ask
        assert asked(q.decide([NEED], T0)).asks[0] is first
    q.granted(first, reply(first, 1, remaining=4, outstanding=2), T0)
    q.decide([NEED], T0)  # the one unit

    second = asked(q.decide([NEED], T0)).asks[0]

    assert (first.want, second.want) == (4, 5)  # slow start, then the five that waited


def test_refuse_waiting_refuses_the_needs_still_without_units() -> None:
    q = Quota("api-1")
    asked(q.decide([NEED], T0))

    assert q.refuse_waiting([NEED], T0) == Refuse(
        sec(1), (RateState("writes", 5, 60, 0, sec(1)),), locked=False
    )


# --- answering recalls ---------------------------------------------------------------------


def test_a_recall_gives_back_everything_unspent_at_once() -> None:
    """R9: the answer says what was received and spent; the slice spends nothing more, and
    tops nothing up in this window (the owner had nothing left)."""
    q, _ = holding(3)
    q.decide([NEED], sec(1))
    woken: list[bool] = []
    q.on_answer = lambda: woken.append(True)

    assert q.recalled(recall("api-0", "api-1"), sec(2)) is True

    assert woken == [True]
    assert q.answers() == [
        ReleaseLease(
            key=NEED.key,
            instance="api-1",
            window_start=T0,
            unused=2,
            spent=1,
            received=3,
            recalled=True,
        )
    ]
    assert q.answers() == []
    assert isinstance(q.decide([NEED], sec(2)), Ask)  # no unit left to spend
    assert q.prefetches(sec(2)) == []


def test_a_recall_naming_others_or_an_older_window_is_ignored() -> None:
    q, _ = holding(3, at=sec(70))
    late = recall("api-1", start=T0)  # this instance holds a newer window now
    others = recall("api-2", start=T0)

    assert q.recalled(others, sec(71)) is False
    assert q.recalled(late, sec(71)) is False
    assert q.answers() == []


def test_without_a_slice_of_the_window_the_answer_says_nothing_was_received() -> None:
    """A grant whose reply never came (or comes after the answer) goes back to the window."""
    q = Quota("api-1")
    in_flight = asked(q.decide([NEED], T0)).asks[0]

    assert q.recalled(recall("api-1"), sec(0.01)) is True
    (answer,) = q.answers()
    outcome = q.granted(in_flight, reply(in_flight, 3, remaining=2), sec(0.02))

    assert (answer.unused, answer.received, answer.spent) == (0, 0, 0)
    assert outcome == "wait"  # void: the owner took those 3 back with the answer
    again = asked(q.decide([NEED], sec(0.02))).asks[0]
    assert (again.window_start, again.received) == (None, 0)


def test_a_recall_of_a_window_already_over_here_is_not_answered() -> None:
    q = Quota("api-1")

    assert q.recalled(recall("api-1", start=T0), sec(60)) is False


def test_a_void_reply_still_locks_and_a_reply_for_another_window_is_not_void() -> None:
    q, _ = holding(1)
    q.decide([NEED], sec(1))
    in_flight = asked(q.decide([NEED], sec(2))).asks[0]
    q.recalled(recall("api-1"), sec(2))
    q.granted(in_flight, reply(in_flight, 0, blocked_until=sec(62)), sec(2))

    assert isinstance(q.decide([NEED], sec(3)), Refuse)  # locked

    q2, _ = holding(1)
    q2.decide([NEED], sec(61))  # the window is over: this asks for the next one
    next_window = asked(q2.decide([NEED], sec(61))).asks[0]
    q2.recalled(recall("api-1"), sec(59))  # (a late recall of the old window, read earlier)
    assert q2.granted(next_window, reply(next_window, 2, start=sec(61)), sec(61)) == "units"
