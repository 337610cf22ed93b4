"""Quota leases, the holder's side (ADR 0010): spend granted slices locally, ask when empty,
refuse locked subjects, fall back when the owner is unreachable (SPEC R2, R3, R4, R5, R8)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from authbus_api.core.quota import Quota
from authbus_api.core.rates import (
    Admit,
    Ask,
    Need,
    RatePolicy,
    RateState,
    Refuse,
    Unavailable,
)
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    ReleaseLease,
    SubjectLocked,
)

from .support import T0

ANN = "acct:ann"
BOB = "acct:bob"
DEFAULT = RatePolicy(LeasePolicy(name="default", limit=60, window_s=60), scope="account")
LOGIN = RatePolicy(
    LeasePolicy(name="login", limit=5, window_s=60, lockout_s=300),
    scope="account",
    routes=frozenset({"POST /v0/login"}),
)
STRICT = LeasePolicy(name="strict", limit=3, window_s=10)
OPEN = RatePolicy(STRICT, scope="account", fail_mode="open")
CLOSED = RatePolicy(STRICT, scope="account", fail_mode="closed")


def sec(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def quota() -> Quota:
    return Quota("api-1")


def reply_to(
    ask: AcquireLease,
    granted: int,
    remaining: int,
    *,
    start: datetime = T0,
    blocked_until: datetime | None = None,
    outstanding: int = 0,
    retry_after_ms: int = 0,
) -> LeaseGranted:
    return LeaseGranted(
        key=ask.key,
        granted=granted,
        window_start=start,
        window_end=start + timedelta(seconds=ask.policy.window_s),
        remaining=remaining,
        blocked_until=blocked_until,
        outstanding=outstanding,
        retry_after_ms=retry_after_ms,
    )


def only_ask(decision: object) -> AcquireLease:
    assert isinstance(decision, Ask), decision
    (ask,) = decision.asks
    return ask


def lease(
    q: Quota,
    need: Need,
    granted: int,
    remaining: int,
    *,
    at: datetime = T0,
    start: datetime = T0,
) -> AcquireLease:
    """Ask as a first request would and apply the owner's reply."""
    ask = only_ask(q.decide([need], at))
    q.granted(ask, reply_to(ask, granted, remaining, start=start), at)
    return ask


def emptied(
    q: Quota, need: Need, at: datetime, *, start: datetime = T0, outstanding: int = 0
) -> None:
    """The next request finds the slice empty and asks; the owner has nothing for it."""
    ask = only_ask(q.decide([need], at))
    q.granted(ask, reply_to(ask, 0, 0, start=start, outstanding=outstanding), at)


def admitted(decision: object) -> Admit:
    assert isinstance(decision, Admit), decision
    return decision


# --- policies and needs ---------------------------------------------------------------------


def test_a_policy_applies_to_its_scope_and_routes() -> None:
    """R2: the default policy counts every route, a per-route policy only its own."""
    assert DEFAULT.applies("GET /v0/me", "account")
    assert not DEFAULT.applies("GET /v0/me", "address")
    assert LOGIN.applies("POST /v0/login", "account")
    assert not LOGIN.applies("GET /v0/me", "account")


def test_the_limit_key_is_policy_and_subject() -> None:
    assert DEFAULT.key(ANN) == "default:acct:ann"
    assert Need(DEFAULT, ANN).key == "default:acct:ann"


# --- asking and spending ------------------------------------------------------------------


def test_the_first_request_of_a_key_asks_the_owner_for_a_small_slice() -> None:
    """R4: nothing is admitted before the owner granted a slice; the first ask wants little
    (slow start), so the first instance does not take what others will need."""
    ask = only_ask(quota().decide([Need(DEFAULT, ANN)], T0))

    assert ask == AcquireLease(
        key="default:acct:ann",
        subject=ANN,
        policy=DEFAULT.lease,
        instance="api-1",
        want=4,
        prefetch=False,
        received=0,  # no slice held: whatever the owner allocated here before never arrived
    )


def test_a_key_with_an_ask_in_flight_is_not_asked_twice() -> None:
    q = quota()
    first = only_ask(q.decide([Need(DEFAULT, ANN)], T0))

    again = only_ask(q.decide([Need(DEFAULT, ANN)], sec(0.1)))

    assert again is first


def test_a_granted_slice_is_spent_locally_and_the_headers_count_down() -> None:
    """R5: remaining = the owner's unallocated count at its reply + the local slice left."""
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=30, remaining=30)

    first = admitted(q.decide([need], sec(1)))
    second = admitted(q.decide([need], sec(2)))

    assert first == Admit((RateState("default", 60, 60, 59, sec(60)),), ())
    assert second.states[0].remaining == 58


def test_granted_says_what_the_reply_means_for_the_requests_waiting_on_it() -> None:
    q = quota()
    need = Need(DEFAULT, ANN)
    ask = only_ask(q.decide([need], T0))

    assert q.granted(ask, reply_to(ask, 2, 58), T0) == "units"
    assert q.granted(ask, reply_to(ask, 0, 0, retry_after_ms=10, outstanding=3), T0) == "wait"
    assert q.granted(ask, reply_to(ask, 0, 0), T0) == "none"  # spent

    late = quota()
    ask = only_ask(late.decide([need], T0))
    assert late.granted(ask, reply_to(ask, 1, 0, start=sec(-59.9)), T0) == "unusable"  # margin


def test_an_empty_slice_asks_again_while_the_owner_has_more() -> None:
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=1, remaining=59)
    admitted(q.decide([need], sec(1)))

    ask = only_ask(q.decide([need], sec(2)))
    q.granted(ask, reply_to(ask, 29, 30), sec(2))

    assert admitted(q.decide([need], sec(2))).states[0].remaining == 30 + 28


def test_a_spent_window_without_lockout_refuses_until_its_end_without_asking() -> None:
    """R1, R5: the owner said nothing is left and nothing is out: asking again would get
    nothing, so the window refuses until it ends."""
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=1, remaining=0)
    admitted(q.decide([need], sec(1)))
    emptied(q, need, sec(2))

    assert q.decide([need], sec(40)) == Refuse(
        sec(60), (RateState("default", 60, 60, 0, sec(60)),), locked=False
    )
    assert q.prefetches(sec(40)) == []


def test_a_spent_window_with_lockout_asks_so_the_owner_registers_the_breach() -> None:
    """R3: the owner locks the subject when a waiting request finds the window spent."""
    q = quota()
    need = Need(LOGIN, ANN)
    lease(q, need, granted=1, remaining=0)
    admitted(q.decide([need], sec(1)))

    ask = only_ask(q.decide([need], sec(2)))
    q.granted(ask, reply_to(ask, 0, 0, blocked_until=sec(302)), sec(2))

    assert q.decide([need], sec(3)) == Refuse(
        sec(302), (RateState("login", 5, 60, 0, sec(302)),), locked=True
    )


def test_an_empty_answer_without_lock_to_a_waiting_ask_refuses_until_the_window_ends() -> None:
    """The owner's window has no lockout (its policy changed since it opened): asking again in
    this window would get the same, so the next requests are refused, not asked for."""
    q = quota()
    need = Need(LOGIN, ANN)
    ask = only_ask(q.decide([need], T0))
    q.granted(ask, reply_to(ask, 0, 0), T0)

    assert q.decide([need], sec(1)) == Refuse(
        sec(60), (RateState("login", 5, 60, 0, sec(60)),), locked=False
    )


def test_a_lease_is_not_spent_in_the_last_250_ms_of_its_window() -> None:
    """R4 (the bound): clock skew up to the margin never spends a slice of an ended window;
    the request waits for the window's end and asks then."""
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=30, remaining=30)

    assert isinstance(q.decide([need], sec(59.7499)), Admit)
    decision = q.decide([need], sec(59.75))

    assert isinstance(decision, Ask)
    assert decision.not_before == sec(60)
    assert decision.asks[0].key == need.key


def test_after_the_window_a_new_grant_replaces_the_old_slice() -> None:
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=30, remaining=30)

    ask = only_ask(q.decide([need], sec(61)))
    assert ask.prefetch is False
    q.granted(ask, reply_to(ask, 2, 58, start=sec(61)), sec(61))

    assert admitted(q.decide([need], sec(62))).states[0] == RateState(
        "default", 60, 60, 58 + 1, sec(121)
    )


def test_a_reply_about_an_older_window_is_ignored() -> None:
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=1, remaining=59, at=sec(61), start=sec(61))
    stale = AcquireLease(key=need.key, subject=ANN, policy=DEFAULT.lease, instance="api-1", want=60)

    assert q.granted(stale, reply_to(stale, 30, 29, start=T0), sec(62)) == "unusable"
    assert admitted(q.decide([need], sec(62))).states[0].reset_at == sec(121)


def test_a_refusal_by_one_policy_takes_nothing_from_the_other() -> None:
    """R2: every applying policy must admit; a refused request costs no policy a unit."""
    q = quota()
    default, strict = Need(DEFAULT, ANN), Need(OPEN, ANN)
    lease(q, default, granted=30, remaining=30)
    lease(q, strict, granted=1, remaining=0)
    admitted(q.decide([default, strict], sec(1)))  # default: 59 left; strict: spent
    emptied(q, strict, sec(2))

    assert q.decide([default, strict], sec(2)) == Refuse(
        sec(10), (RateState("strict", 3, 10, 0, sec(10)),), locked=False
    )
    assert admitted(q.decide([default], sec(3))).states[0].remaining == 58


def test_several_refusing_policies_retry_at_the_latest_end() -> None:
    q = quota()
    default, strict = Need(DEFAULT, ANN), Need(CLOSED, ANN)
    lease(q, default, granted=1, remaining=0)
    lease(q, strict, granted=1, remaining=0)
    admitted(q.decide([default, strict], sec(1)))
    emptied(q, default, sec(2))
    emptied(q, strict, sec(2))

    refused = q.decide([strict, default], sec(2))

    assert isinstance(refused, Refuse)
    assert refused.retry_at == sec(60)
    assert [s.policy for s in refused.states] == ["strict", "default"]


# --- locks ----------------------------------------------------------------------------------


def locked(subject: str, until: datetime, key: str = "login:acct:ann") -> SubjectLocked:
    return SubjectLocked(subject=subject, key=key, policy="login", until=until, strikes=1, at=T0)


def test_a_broadcast_lock_refuses_every_policy_of_the_subject_until_its_end() -> None:
    """R3: a lockout from one policy holds on every route, even with units left."""
    q = quota()
    default, login = Need(DEFAULT, ANN), Need(LOGIN, ANN)
    lease(q, default, granted=30, remaining=30)
    q.locked(locked(ANN, sec(30)))

    assert q.decide([default], sec(10)) == Refuse(
        sec(30), (RateState("default", 60, 60, 0, sec(30)),), locked=True
    )
    assert q.decide([default, login], sec(10)) == Refuse(
        sec(30),
        (RateState("default", 60, 60, 0, sec(30)), RateState("login", 5, 60, 0, sec(30))),
        locked=True,
    )
    assert isinstance(q.decide([Need(DEFAULT, BOB)], sec(10)), Ask)  # another subject
    assert admitted(q.decide([default], sec(30))).states[0].remaining == 59  # lock over


def test_an_unlock_after_a_reset_lifts_the_lock_and_asks_the_owner_afresh() -> None:
    """G4: an operator's reset (`SubjectUnlocked`) ends the lockout here at once, and the
    subject's spent slices go: its next request asks the owner, who opened a new window."""
    q = quota()
    default, login = Need(DEFAULT, ANN), Need(LOGIN, ANN)
    lease(q, login, granted=1, remaining=0)
    admitted(q.decide([login], sec(1)))
    lease(q, Need(DEFAULT, BOB), granted=5, remaining=50)
    q.locked(locked(ANN, sec(600)))

    q.unlocked(ANN)

    assert isinstance(q.decide([default, login], sec(2)), Ask)
    assert isinstance(q.decide([Need(DEFAULT, BOB)], sec(2)), Admit)  # another subject's slice


def test_of_two_locks_the_later_holds() -> None:
    q = quota()
    need = Need(DEFAULT, ANN)
    q.locked(locked(ANN, sec(600)))
    q.locked(locked(ANN, sec(300)))

    refused = q.decide([need], sec(400))

    assert isinstance(refused, Refuse)
    assert refused.retry_at == sec(600)


def test_a_reply_with_a_block_locks_the_subject_everywhere() -> None:
    q = quota()
    need = Need(LOGIN, ANN)
    ask = only_ask(q.decide([need], T0))
    q.granted(ask, reply_to(ask, 0, 3, blocked_until=sec(120)), T0)

    refused = q.decide([Need(DEFAULT, ANN)], sec(1))

    assert isinstance(refused, Refuse)
    assert (refused.retry_at, refused.locked) == (sec(120), True)


# --- fail-over ------------------------------------------------------------------------------


def test_fail_open_admits_up_to_the_limit_locally_then_refuses_until_the_local_window_ends() -> (
    None
):
    """R8: an unreachable owner; the policy's limit holds on this instance alone."""
    q = quota()
    need = Need(OPEN, ANN)  # the same policy, fail-open
    ask = only_ask(q.decide([need], T0))
    q.ask_failed(ask.key, T0)

    states = [admitted(q.decide([need], sec(0.1 * n))) for n in range(3)]
    refused = q.decide([need], sec(0.5))

    assert [a.fallback for a in states] == [("strict",)] * 3
    assert [a.states[0] for a in states] == [
        RateState("strict", 3, 10, left, sec(10)) for left in (2, 1, 0)
    ]
    assert refused == Refuse(sec(10), (RateState("strict", 3, 10, 0, sec(10)),), locked=False)


def test_fail_closed_answers_unavailable() -> None:
    """R8: a fail-closed policy never admits without its owner."""
    q = quota()
    need = Need(CLOSED, ANN)
    ask = only_ask(q.decide([need], T0))
    q.ask_failed(ask.key, T0)

    assert q.decide([need], sec(1)) == Unavailable("strict")
    assert q.decide([need, Need(DEFAULT, ANN)], sec(1)) == Unavailable("strict")


def test_after_the_fallback_period_the_owner_is_asked_again() -> None:
    """R8: enforcement returns with the next ask once the owner answers."""
    q = quota()
    need = Need(DEFAULT, ANN)
    ask = only_ask(q.decide([need], T0))
    q.ask_failed(ask.key, T0)
    assert admitted(q.decide([need], sec(1.999))).fallback == ("default",)

    again = only_ask(q.decide([need], sec(2)))
    q.granted(again, reply_to(again, 1, 0, start=sec(2)), sec(2))

    assert admitted(q.decide([need], sec(2))).fallback == ()
    emptied(q, need, sec(3), start=sec(2))
    assert isinstance(q.decide([need], sec(3)), Refuse)


def test_failing_again_keeps_counting_in_the_same_local_window() -> None:
    q = quota()
    need = Need(OPEN, ANN)
    q.ask_failed(only_ask(q.decide([need], T0)).key, T0)
    for n in range(3):
        admitted(q.decide([need], sec(0.1 * n)))

    q.ask_failed(only_ask(q.decide([need], sec(3))).key, sec(3))

    assert q.decide([need], sec(4)) == Refuse(
        sec(10), (RateState("strict", 3, 10, 0, sec(10)),), locked=False
    )


def test_a_refusal_beats_unavailable_and_unavailable_beats_asking() -> None:
    """A window that refuses holds whoever owns the other keys; a 503 needs no ask."""
    q = quota()
    default, strict = Need(DEFAULT, ANN), Need(CLOSED, ANN)
    lease(q, default, granted=1, remaining=0)
    admitted(q.decide([default], sec(1)))
    emptied(q, default, sec(1))
    q.ask_failed(only_ask(q.decide([strict], sec(1))).key, sec(1))

    assert isinstance(q.decide([default, strict], sec(2)), Refuse)
    assert q.decide([Need(DEFAULT, BOB), strict], sec(2)) == Unavailable("strict")
    assert isinstance(q.decide([Need(DEFAULT, BOB)], sec(2)), Ask)  # asks only when useful


# --- background work ------------------------------------------------------------------------


def test_a_slice_down_to_a_quarter_of_its_grant_is_topped_up_in_the_background() -> None:
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=8, remaining=52)
    for n in range(5):
        admitted(q.decide([need], sec(0.1 * n)))
    assert q.prefetches(sec(0.5)) == []  # 3 left > 8 // 4

    admitted(q.decide([need], sec(0.6)))  # 2 left
    (top_up,) = q.prefetches(sec(0.6))

    assert top_up == AcquireLease(
        key=need.key,
        subject=ANN,
        policy=DEFAULT.lease,
        instance="api-1",
        want=16,  # twice the last grant
        prefetch=True,
        window_start=T0,
        received=8,
        spent=6,  # the owner learns what this instance got and admitted
    )
    assert q.prefetches(sec(0.7)) == []  # in flight
    q.prefetch_done(top_up, reply_to(top_up, 26, 26), sec(0.7))
    assert admitted(q.decide([need], sec(0.8))).states[0].remaining == 26 + 27


def test_a_failed_top_up_only_ends_its_flight() -> None:
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=4, remaining=56)
    for n in range(3):
        admitted(q.decide([need], sec(0.1 * n)))
    (top_up,) = q.prefetches(sec(0.3))

    q.prefetch_done(top_up, None, sec(0.4))

    assert isinstance(q.decide([need], sec(0.4)), Admit)  # no fallback
    assert q.prefetches(sec(0.5)) == [top_up.model_copy(update={"spent": 4})]


def test_no_top_up_when_the_owner_has_nothing_left_or_the_slice_is_idle() -> None:
    q = quota()
    spent, idle = Need(DEFAULT, ANN), Need(DEFAULT, BOB)
    lease(q, spent, granted=1, remaining=0)
    lease(q, idle, granted=1, remaining=59)
    admitted(q.decide([spent], sec(0.1)))
    admitted(q.decide([idle], sec(0.1)))

    (top_up,) = q.prefetches(sec(0.2))
    assert top_up.key == idle.key
    q.prefetch_done(top_up, None, sec(0.2))

    assert q.prefetches(sec(1.1)) == []  # idle for release_idle: no top-up


def test_a_waiting_request_shares_an_ask_in_flight_for_a_top_up() -> None:
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=1, remaining=59)
    admitted(q.decide([need], sec(0.1)))
    (top_up,) = q.prefetches(sec(0.1))

    assert only_ask(q.decide([need], sec(0.2))) is top_up


def test_an_idle_slice_goes_back_to_the_owner() -> None:
    """R4: a client that moved to another instance leaves no quota stranded here."""
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=30, remaining=30)
    admitted(q.decide([need], sec(1)))
    assert q.releases(sec(1.999)) == []

    assert q.releases(sec(2)) == [
        ReleaseLease(key=need.key, instance="api-1", window_start=T0, unused=29, spent=1)
    ]
    assert q.releases(sec(3)) == []
    ask = only_ask(q.decide([need], sec(3)))  # the owner has it back: ask, do not refuse
    assert ask.prefetch is False


def test_a_grant_never_used_goes_back_after_the_idle_time() -> None:
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=30, remaining=30, at=sec(5))

    assert q.releases(sec(5.5)) == []
    assert [r.unused for r in q.releases(sec(6))] == [30]


def test_no_release_in_the_end_margin() -> None:
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=30, remaining=30)

    assert q.releases(sec(59.8)) == []


def test_sweep_forgets_ended_windows_locks_and_fallbacks() -> None:
    q = quota()
    lease(q, Need(DEFAULT, ANN), granted=30, remaining=30)
    q.locked(locked(BOB, sec(30)))
    local = Need(OPEN, "acct:cy")
    q.ask_failed(only_ask(q.decide([local], T0)).key, T0)
    admitted(q.decide([local], sec(1)))  # local window until 11

    assert q.sweep(sec(2)) == 0  # fallback over, local window open
    assert q.sweep(sec(11)) == 1
    assert q.sweep(sec(30)) == 1
    assert q.sweep(sec(60)) == 1
    assert q.sweep(sec(61)) == 0


def test_no_needs_admit() -> None:
    assert quota().decide([], T0) == Admit((), ())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_hot_path_takes_one_unit_from_each_need(n: int) -> None:
    q = quota()
    subjects = [f"acct:{i}" for i in range(n)]
    needs = [Need(DEFAULT, s) for s in subjects]
    for need in needs:
        lease(q, need, granted=10, remaining=50)

    result = admitted(q.decide(needs, sec(1)))

    assert [s.remaining for s in result.states] == [59] * n


def test_after_a_release_an_ask_reports_only_what_is_still_held() -> None:
    """R4: the owner took the released units back; `received` must not claim them again, or
    a grant lost meanwhile (owner down) would never return to the window."""
    q = quota()
    need = Need(DEFAULT, ANN)
    lease(q, need, granted=4, remaining=56)
    admitted(q.decide([need], sec(0.1)))
    assert [r.unused for r in q.releases(sec(2))] == [3]

    ask = only_ask(q.decide([need], sec(3)))

    assert (ask.window_start, ask.received, ask.spent) == (T0, 1, 1)
