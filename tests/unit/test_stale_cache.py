"""The gate trusts its verdict cache only while the changes feed is fresh (SPEC A12, ADR 0016):
past the bound it asks authz again; when authz cannot answer, the cached verdict is served
within the grace (without waiting again for `probe_every`), then refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from authbus_api.core.access import Denied, Principal
from authbus_api.core.errors import Error
from authbus_api.core.freshness import Freshness, StalenessPolicy, Trust
from authbus_api.gate import Gate
from authbus_api.metrics import ApiMetrics
from authbus_shared.authz_client import Verdict
from authbus_shared.contracts.authz import CredentialVerified, Outcome
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.kafka.rpc import RpcTimeout
from tests.api_twins import VALID, ScriptedAuthz, twin_gate

S = timedelta(seconds=1)
REVOKED = CredentialVerified(outcome=Outcome.REVOKED)


def view_aged(age: timedelta) -> Freshness:
    """A view whose every partition last said something `age` ago (no clock skew)."""
    view = Freshness(partitions=3, skew=timedelta(0))
    for partition in range(3):
        view.heard(partition, utcnow() - age)
    return view


def trust(age: timedelta, grace: timedelta = 30 * S) -> Trust:
    return Trust(view_aged(age), StalenessPolicy(bound=2 * S, grace=grace), probe_every=60 * S)


def uses(metrics: ApiMetrics, use: str) -> float:
    return metrics.stale.labels(use=use)._value.get()  # type: ignore[no-any-return]


async def cached(authz: ScriptedAuthz, view: Trust) -> tuple[ApiMetrics, Gate]:
    """A gate whose cache holds `good` as valid (asked while the view was fresh)."""
    metrics = ApiMetrics(CollectorRegistry())
    gate = twin_gate(metrics, authz=authz, trust=view)
    fresh = view.freshness
    stamps = dict(fresh._latest)
    for partition in range(3):
        fresh.heard(partition, utcnow() + 60 * S)  # fresh for the first, uncached ask
    assert isinstance(await gate.identify("Bearer good"), Principal)
    fresh._latest.clear()
    fresh._latest.update(stamps)
    authz.asked.clear()
    return metrics, gate


async def test_a_fresh_view_answers_from_the_cache_without_asking() -> None:
    authz = ScriptedAuthz({"good": VALID})
    metrics, gate = await cached(authz, trust(age=1 * S))
    assert uses(metrics, "reverified") == 0

    assert isinstance(await gate.identify("Bearer good"), Principal)
    assert authz.asked == []


async def test_a_stale_view_asks_again_and_a_revocation_it_missed_is_refused() -> None:
    """The paused instance: its cache says valid, the feed is old, authz says revoked."""
    authz = ScriptedAuthz({"good": VALID})
    metrics, gate = await cached(authz, trust(age=5 * S))
    authz.script["good"] = REVOKED

    answer = await gate.identify("Bearer good")

    assert isinstance(answer, Denied) and answer.error is Error.INVALID_TOKEN
    assert authz.asked == ["good"]
    assert uses(metrics, "reverified") == 1


async def test_authz_unreachable_serves_the_cache_within_the_grace_then_without_waiting() -> None:
    authz = ScriptedAuthz({"good": VALID})
    metrics, gate = await cached(authz, trust(age=5 * S))
    authz.script["good"] = RpcTimeout("broker away")

    first = await gate.identify("Bearer good")
    second = await gate.identify("Bearer good")

    assert isinstance(first, Principal) and isinstance(second, Principal)
    assert authz.asked == ["good"]  # the second did not wait for authz again
    assert uses(metrics, "grace") == 2


async def test_past_the_grace_a_cached_verdict_is_refused_with_503() -> None:
    authz = ScriptedAuthz({"good": VALID})
    metrics, gate = await cached(authz, trust(age=40 * S, grace=30 * S))
    authz.script["good"] = RpcTimeout("broker away")

    answer = await gate.identify("Bearer good")

    assert isinstance(answer, Denied) and answer.error is Error.UNAVAILABLE
    assert uses(metrics, "refused") == 1


class CatchingUp(ScriptedAuthz):
    """authz that does not answer in time, while the feed catches up meanwhile (the paused
    instance waking: its reply inbox and its feed reader both have a backlog)."""

    view: Freshness | None = None
    evict: Gate | None = None

    async def verify(self, *args: Any, **kwargs: Any) -> Verdict:
        if self.view is None:  # not yet: the first, uncached ask
            return await super().verify(*args, **kwargs)
        for partition in range(3):
            self.view.heard(partition, utcnow())
        if self.evict is not None:  # the backlog held this credential's revocation
            self.evict.cache.revoke("t1", utcnow())
            self.script["good"] = REVOKED
            self.evict = None
            raise RpcTimeout("the reply came too late")
        raise RpcTimeout("the reply came too late")


async def test_a_feed_that_catches_up_during_the_reverification_makes_the_cache_good_again() -> (
    None
):
    authz = CatchingUp({"good": VALID})
    view = trust(age=5 * S)
    metrics, gate = await cached(authz, view)
    authz.view = view.freshness

    assert isinstance(await gate.identify("Bearer good"), Principal)
    assert uses(metrics, "refused") == 0


async def test_a_revocation_read_during_the_reverification_is_not_overlooked() -> None:
    authz = CatchingUp({"good": VALID})
    view = trust(age=5 * S)
    _, gate = await cached(authz, view)
    authz.view, authz.evict = view.freshness, gate

    answer = await gate.identify("Bearer good")

    assert isinstance(answer, Denied)  # never the cached "valid": asked again, 503 or 401
