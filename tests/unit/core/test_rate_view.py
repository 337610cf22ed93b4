"""The api's local view of rate decisions (SPEC R3, R4, R5): admit or deny without a round trip."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from authbus_api.core.rate_view import Admission, RateView
from authbus_shared.contracts.ratelimit import RateDecided

from .support import T0

KEY = "acct:1"


def sec(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def decided(
    *,
    remaining: int,
    reset_at: datetime = T0 + timedelta(seconds=60),
    blocked_until: datetime | None = None,
    key: str = KEY,
) -> RateDecided:
    return RateDecided(
        key=key,
        policy="default",
        limit=60,
        window_s=60,
        count=60 - remaining,
        remaining=remaining,
        reset_at=reset_at,
        blocked_until=blocked_until,
    )


def view_with(decision: RateDecided) -> RateView:
    view = RateView()
    view.on_decision(decision)
    return view


def test_unknown_key_is_allowed() -> None:
    assert RateView().check(KEY, T0) == Admission(allowed=True)


def test_admitted_on_an_unknown_key_changes_nothing() -> None:
    view = RateView()
    view.admitted(KEY)

    assert view.check(KEY, T0) == Admission(allowed=True)


def test_blocked_key_is_denied_until_blocked_until() -> None:
    """R3: a lockout holds even with quota left."""
    view = view_with(decided(remaining=10, blocked_until=sec(90)))

    assert view.check(KEY, sec(30)) == Admission(
        allowed=False, limit=60, remaining=0, reset_at=sec(90), retry_after_s=60
    )


@pytest.mark.parametrize(
    ("left", "retry_after_s"),
    [
        (timedelta(seconds=60), 60),
        (timedelta(seconds=59, milliseconds=500), 60),
        (timedelta(milliseconds=200), 1),
        (timedelta(microseconds=500), 1),
        (timedelta(seconds=30, microseconds=1), 31),
        (timedelta(seconds=10, microseconds=400), 11),
    ],
    ids=str,
)
def test_retry_after_is_the_ceiling_of_the_seconds_left_at_least_one(
    left: timedelta, retry_after_s: int
) -> None:
    """R5: `Retry-After` never invites a retry before the block ends."""
    view = view_with(decided(remaining=10, blocked_until=sec(100)))

    admission = view.check(KEY, sec(100) - left)

    assert admission.allowed is False
    assert admission.retry_after_s == retry_after_s


def test_block_is_over_at_blocked_until() -> None:
    view = view_with(decided(remaining=10, blocked_until=sec(30)))

    assert view.check(KEY, sec(30)).allowed is True


def test_remaining_counts_down_with_each_admitted_hit() -> None:
    view = view_with(decided(remaining=3))

    first = view.check(KEY, sec(1))
    view.admitted(KEY)
    second = view.check(KEY, sec(2))
    view.admitted(KEY)
    third = view.check(KEY, sec(3))

    assert [first.remaining, second.remaining, third.remaining] == [2, 1, 0]
    assert all(
        a.allowed and a.limit == 60 and a.reset_at == sec(60) for a in (first, second, third)
    )


def test_spent_remaining_denies_until_reset_at() -> None:
    view = view_with(decided(remaining=1))
    view.admitted(KEY)

    assert view.check(KEY, sec(40)) == Admission(
        allowed=False, limit=60, remaining=0, reset_at=sec(60), retry_after_s=20
    )


def test_owner_saying_nothing_remains_denies() -> None:
    assert view_with(decided(remaining=0)).check(KEY, sec(1)).allowed is False


def test_after_reset_at_the_key_is_allowed() -> None:
    view = view_with(decided(remaining=0))

    admission = view.check(KEY, sec(60))

    assert admission.allowed is True
    assert admission.limit == 60


def test_a_new_decision_replaces_the_local_count() -> None:
    view = view_with(decided(remaining=1))
    view.admitted(KEY)
    view.on_decision(decided(remaining=5))

    assert view.check(KEY, sec(1)).remaining == 4


def test_keys_are_viewed_apart() -> None:
    view = view_with(decided(remaining=0))

    assert view.check("acct:2", sec(1)) == Admission(allowed=True)


def test_sweep_forgets_finished_unblocked_keys_only() -> None:
    view = RateView()
    view.on_decision(decided(key="finished", remaining=0, reset_at=sec(60)))
    view.on_decision(decided(key="blocked", remaining=0, reset_at=sec(60), blocked_until=sec(120)))
    view.on_decision(decided(key="current", remaining=0, reset_at=sec(120)))

    view.sweep(sec(60))

    assert view.check("finished", sec(61)) == Admission(allowed=True)  # no limit known any more
    assert view.check("blocked", sec(61)).allowed is False
    assert view.check("current", sec(61)).allowed is False
