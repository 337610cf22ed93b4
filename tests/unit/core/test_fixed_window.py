"""Fixed-window counting with lockout (SPEC R1, R3): event time in, decisions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from authbus_ratelimit.core.fixed_window import FixedWindow, Policy, window_start

W0 = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)  # a window boundary for any window dividing a day
MINUTE = timedelta(minutes=1)
LOCKED = Policy(name="strict", limit=3, window=MINUTE, lockout=MINUTE)
UNLOCKED = Policy(name="default", limit=3, window=MINUTE, lockout=None)


def s(seconds: float) -> datetime:
    return W0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("at", "window", "start"),
    [
        (s(0), MINUTE, s(0)),
        (s(59.999), MINUTE, s(0)),
        (s(60), MINUTE, s(60)),
        (s(125), MINUTE, s(120)),
        (s(25), timedelta(seconds=10), s(20)),
        (s(3599), timedelta(hours=1), s(0)),
    ],
)
def test_window_start_is_aligned_on_the_epoch(
    at: datetime, window: timedelta, start: datetime
) -> None:
    assert window_start(at, window) == start


def test_hits_within_a_window_are_counted_with_remaining_and_reset_at_window_end() -> None:
    limiter = FixedWindow(LOCKED)

    first = limiter.record("acct:1", 1, s(5))
    second = limiter.record("acct:1", 2, s(30))

    assert (first.count, first.remaining) == (1, 2)
    assert (second.count, second.remaining) == (3, 0)
    assert first.reset_at == second.reset_at == s(60)
    assert second.blocked_until is None  # at the limit is not over it
    assert (second.key, second.policy) == ("acct:1", LOCKED)


def test_keys_are_counted_apart() -> None:
    limiter = FixedWindow(LOCKED)
    limiter.record("acct:1", 3, s(1))

    other = limiter.record("acct:2", 1, s(2))

    assert (other.count, other.remaining) == (1, 2)
    assert len(limiter) == 2


def test_count_resets_at_the_window_boundary() -> None:
    limiter = FixedWindow(UNLOCKED)
    limiter.record("acct:1", 3, s(59.999))

    rolled = limiter.record("acct:1", 1, s(60))

    assert (rolled.count, rolled.remaining, rolled.reset_at) == (1, 2, s(120))


def test_late_hit_is_counted_in_the_current_window() -> None:
    limiter = FixedWindow(UNLOCKED)
    limiter.record("acct:1", 1, s(70))

    late = limiter.record("acct:1", 1, s(30))

    assert (late.count, late.reset_at) == (2, s(120))


def test_passing_the_limit_with_lockout_blocks_from_the_hit_for_the_lockout() -> None:
    """R3: once over, blocked for `lockout` from that hit."""
    limiter = FixedWindow(LOCKED)
    limiter.record("acct:1", 3, s(10))

    over = limiter.record("acct:1", 1, s(50))

    assert (over.count, over.remaining) == (4, 0)
    assert over.blocked_until == s(50) + MINUTE


def test_the_block_outlives_the_window() -> None:
    """R3: a block started near the end of a window holds into the next one."""
    limiter = FixedWindow(LOCKED)
    limiter.record("acct:1", 4, s(50))

    next_window = limiter.record("acct:1", 1, s(61))

    assert next_window.count == 1
    assert next_window.remaining == 2
    assert next_window.blocked_until == s(110)


def test_the_block_ends_at_blocked_until() -> None:
    limiter = FixedWindow(LOCKED)
    limiter.record("acct:1", 4, s(50))

    assert limiter.record("acct:1", 1, s(109.9)).blocked_until == s(110)
    assert limiter.record("acct:1", 1, s(110)).blocked_until is None


def test_without_lockout_passing_the_limit_blocks_nothing() -> None:
    limiter = FixedWindow(UNLOCKED)

    over = limiter.record("acct:1", 10, s(5))

    assert (over.count, over.remaining, over.blocked_until) == (10, 0, None)


def test_a_later_breach_extends_the_block() -> None:
    limiter = FixedWindow(LOCKED)
    assert limiter.record("acct:1", 4, s(10)).blocked_until == s(70)

    assert limiter.record("acct:1", 1, s(40)).blocked_until == s(100)


def test_a_breach_in_the_next_window_extends_the_block() -> None:
    limiter = FixedWindow(LOCKED)
    limiter.record("acct:1", 4, s(50))

    again = limiter.record("acct:1", 4, s(90))

    assert again.blocked_until == s(150)


def test_a_late_breach_never_shortens_the_block() -> None:
    limiter = FixedWindow(LOCKED)
    limiter.record("acct:1", 4, s(40))

    late = limiter.record("acct:1", 1, s(20))

    assert late.blocked_until == s(100)


def test_sweep_forgets_only_finished_unblocked_keys() -> None:
    limiter = FixedWindow(LOCKED)
    limiter.record("finished", 1, s(10))
    limiter.record("blocked", 4, s(50))  # blocked until s(110)
    limiter.record("current", 1, s(70))

    forgotten = limiter.sweep(s(80))

    assert forgotten == 1
    assert len(limiter) == 2
    # "finished" starts afresh; "blocked" kept its block
    assert limiter.record("finished", 1, s(81)).count == 1
    assert limiter.record("blocked", 1, s(81)).blocked_until == s(110)
    assert limiter.record("current", 1, s(81)).count == 2


def test_sweep_forgets_a_block_once_it_is_over() -> None:
    limiter = FixedWindow(LOCKED)
    limiter.record("acct:1", 4, s(50))

    assert limiter.sweep(s(109)) == 0
    assert limiter.sweep(s(110)) == 1
    assert len(limiter) == 0


def test_sweep_at_the_exact_window_end_forgets_the_key() -> None:
    limiter = FixedWindow(UNLOCKED)
    limiter.record("acct:1", 1, s(10))

    assert limiter.sweep(s(59.999)) == 0
    assert limiter.sweep(s(60)) == 1
