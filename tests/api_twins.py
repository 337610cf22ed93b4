"""In-memory twins around the api for tests that drive it over HTTP without Kafka: authz's
verdicts (scripted), ratelimit's owner (the real lease book), the usage sink, and a `Gate`
built from them (the real verdict cache, quota and rate limiter)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from authbus_api.core.access import Principal
from authbus_api.core.freshness import Freshness, Trust
from authbus_api.core.quota import Quota
from authbus_api.core.rates import RatePolicy
from authbus_api.core.verdict_cache import CredentialDigest, VerdictCache
from authbus_api.gate import Gate
from authbus_api.metrics import ApiMetrics
from authbus_api.policies import load_policies
from authbus_api.rate import RateLimiter
from authbus_ratelimit.core.leases import LeaseBook
from authbus_shared.authz_client import Verdict
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialVerified,
    Outcome,
    SealedCredential,
)
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.contracts.ratelimit import AcquireLease, LeaseGranted, ReleaseLease

ANN = AccountView(id="acc-1", email="ann@example.com", locale="fr")
VALID = CredentialVerified(
    outcome=Outcome.VALID,
    account=ANN,
    scopes=("read",),
    method=AuthMethod.TOKEN,
    credential_id="t1",
)


@dataclass
class ScriptedAuthz:
    """Answers by secret: a verdict, or an exception to raise."""

    script: dict[str, Verdict | Exception]
    asked: list[str] = field(default_factory=list)
    delay_s: float = 0.0

    async def verify(
        self,
        credential: SealedCredential,
        *,
        partition_key: bytes,
        client: str | None = None,
        within: timedelta | None = None,
    ) -> Verdict:
        self.asked.append(credential.secret)
        await asyncio.sleep(self.delay_s)
        answer = self.script.get(credential.secret, CredentialVerified(outcome=Outcome.INVALID))
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class OwnerTwin:
    """ratelimit's owner in memory (the real lease book, the wall clock), as the lease port."""

    book: LeaseBook = field(default_factory=LeaseBook)
    asks: list[AcquireLease] = field(default_factory=list)

    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        self.asks.append(ask)
        return self.book.acquire(ask, utcnow()).reply

    async def release(self, release: ReleaseLease) -> None:
        self.book.release(release, utcnow())


@dataclass
class Uses:
    credentials: list[str] = field(default_factory=list)

    def used(self, who: Principal, at: datetime) -> None:
        self.credentials.append(who.credential_id or "")


def twin_gate(
    metrics: ApiMetrics,
    *,
    authz: ScriptedAuthz | None = None,
    quota: Quota | None = None,
    owner: OwnerTwin | None = None,
    uses: Uses | None = None,
    policies: Sequence[RatePolicy] | None = None,
    deprecation: dict[str, str] | None = None,
    trust: Trust | None = None,
) -> Gate:
    """A Gate on the twins (each made fresh unless given)."""
    return Gate(
        cache=VerdictCache(
            max_entries=100, ttl=timedelta(seconds=60), negative_ttl=timedelta(seconds=5)
        ),
        digest=CredentialDigest(),
        authz=authz or ScriptedAuthz({"good": VALID}),
        limiter=RateLimiter(quota or Quota("api-test"), owner or OwnerTwin()),
        policies=tuple(policies) if policies is not None else load_policies(None),
        usage=uses or Uses(),
        metrics=metrics,
        trust=trust or fresh_trust(),
        deprecation=deprecation or {},
    )


def fresh_trust() -> Trust:
    """A view of the changes feed that stays fresh (a heartbeat stamped far ahead on every
    partition): for tests of everything but staleness."""
    view = Freshness(partitions=3)
    for partition in range(3):
        view.heard(partition, datetime(2999, 1, 1, tzinfo=UTC))
    return Trust(view)
