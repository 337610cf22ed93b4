"""The changes feed's freshness and what a cached verdict is good for (SPEC A12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from authbus_api.core.freshness import Freshness, StalenessPolicy, Use

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
