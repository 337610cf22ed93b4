"""The changes feed's freshness and what a cached verdict is good for (SPEC A12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from authbus_api.core.freshness import Freshness, StalenessPolicy, Trust, Use

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def test_the_view_is_as_fresh_as_its_stalest_partition_minus_the_skew() -> None:
    view = Freshness(partitions=3, skew=100 * MS)
    view.heard(0, T0 + 500 * MS)
    view.heard(1, T0 + 300 * MS)

    assert view.as_of() is None  # partition 2 has said nothing yet
    view.heard(2, T0 + 900 * MS)
    view.heard(1, T0 + 200 * MS)  # an older heartbeat read late changes nothing

    assert view.as_of() == T0 + 200 * MS
    assert view.age(T0 + 1000 * MS) == 800 * MS


def test_a_cached_verdict_is_used_fresh_then_reverified_then_in_grace_then_refused() -> None:
    policy = StalenessPolicy(bound=2000 * MS, grace=30_000 * MS)

    assert policy.use(1500 * MS) is Use.FRESH
    assert policy.use(2500 * MS) is Use.REVERIFY
    assert policy.use(2500 * MS, authz_answered=False) is Use.GRACE
    assert policy.use(32_000 * MS, authz_answered=False) is Use.GRACE
    assert policy.use(32_001 * MS, authz_answered=False) is Use.REFUSE
    assert policy.use(None) is Use.REVERIFY  # no heartbeat ever: never trusted as fresh
    assert policy.use(None, authz_answered=False) is Use.REFUSE


def test_after_a_pause_the_view_is_stale_until_the_feed_is_read_again() -> None:
    view = Freshness(partitions=1, skew=0 * MS)
    policy = StalenessPolicy(bound=2000 * MS, grace=30_000 * MS)
    view.heard(0, T0)
    resumed = T0 + timedelta(seconds=20)  # the process was stopped for 20 s

    assert policy.use(view.age(resumed)) is Use.REVERIFY
    view.heard(0, resumed - 100 * MS)  # the reader catches up
    assert policy.use(view.age(resumed)) is Use.FRESH


def fresh_view(at: datetime, partitions: int = 2) -> Freshness:
    view = Freshness(partitions=partitions, skew=0 * MS)
    for p in range(partitions):
        view.heard(p, at)
    return view


def test_trust_reverifies_a_stale_view_then_skips_the_wait_for_a_while_after_a_failure() -> None:
    trust = Trust(fresh_view(T0), StalenessPolicy(2000 * MS, 30_000 * MS), 1000 * MS)

    assert trust.use(T0 + 1999 * MS) is Use.FRESH
    assert trust.use(T0 + 2001 * MS) is Use.REVERIFY
    assert trust.unanswered(T0 + 2500 * MS) is Use.GRACE
    assert trust.use(T0 + 3000 * MS) is Use.GRACE  # within probe_every: no wait
    assert trust.use(T0 + 3500 * MS) is Use.REVERIFY  # probe again
    trust.answered()
    assert trust.use(T0 + 3600 * MS) is Use.REVERIFY  # authz answers: each stale use asks


def test_trust_refuses_past_the_grace_and_never_before_the_first_heartbeat() -> None:
    trust = Trust(fresh_view(T0), StalenessPolicy(2000 * MS, 30_000 * MS), 1000 * MS)

    assert trust.unanswered(T0 + 31_000 * MS) is Use.GRACE
    assert trust.unanswered(T0 + 32_001 * MS) is Use.REFUSE
    assert trust.use(T0 + 32_500 * MS) is Use.REFUSE

    blind = Trust(Freshness(partitions=2), StalenessPolicy(2000 * MS, 30_000 * MS))
    assert blind.use(T0) is Use.REVERIFY
    assert blind.unanswered(T0) is Use.REFUSE


def test_a_heartbeat_read_late_does_not_make_the_view_fresh_as_of_the_reading() -> None:
    """A paused reader wakes up and reads old heartbeats: the view is as old as their stamps."""
    view = Freshness(partitions=1, skew=250 * MS)
    view.heard(0, T0)

    trust = Trust(view, StalenessPolicy(2000 * MS, 30_000 * MS))
    view.heard(0, T0 + 100 * MS)  # stamped before the pause, read after it

    assert trust.use(T0 + 5000 * MS) is Use.REVERIFY
