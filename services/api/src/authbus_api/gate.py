"""The gate every protected request passes: who is it (authn), and may it go on (rate).

Hot path: the credential's digest is in the verdict cache and the rate view says yes; no Kafka,
no argon2, no MongoDB. Cold path: a cache miss asks authz over Kafka; concurrent requests with
the same credential share one question (single flight). Authentication fails closed: no reply
in time, or authz failing, is a 503 and never a guessed yes.

A denial is a value (`core.access.Denied`: the catalog entry and its headers), which the
access decision (`access.py`) passes on and `http/errors.py` renders.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from authbus_api.core.access import Denied, Principal
from authbus_api.core.credentials import Unreadable, parse_authorization
from authbus_api.core.errors import Error
from authbus_api.core.freshness import Trust, Use
from authbus_api.core.rates import Admit, Need, RatePolicy, RateState, Refuse, Scope
from authbus_api.core.verdict_cache import CachedVerdict, CredentialDigest, VerdictCache
from authbus_api.metrics import ApiMetrics
from authbus_api.rate import RateLimiter
from authbus_shared.authz_client import NoSealingKey, Verdict
from authbus_shared.contracts.authz import (
    Outcome,
    RequestFailed,
    SealedCredential,
)
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.kafka.rpc import RpcTimeout

log = structlog.get_logger(__name__)

MEMO = 4096  # subjects whose rate needs are remembered (`Gate._needs`)
CHALLENGE = 'Bearer realm="authbus", Basic realm="authbus", charset="UTF-8"'
INVALID_CHALLENGE = (
    'Bearer realm="authbus", error="invalid_token", Basic realm="authbus", charset="UTF-8"'
)


class Authz(Protocol):
    """Where verdicts come from (AuthzClient over Kafka; a twin in unit tests)."""

    async def verify(
        self,
        credential: SealedCredential,
        *,
        partition_key: bytes,
        client: str | None = None,
        within: timedelta | None = None,
    ) -> Verdict: ...


class UsageSink(Protocol):
    """Where credential uses go (UsageReporter to authz; a twin in unit tests)."""

    def used(self, who: Principal, at: datetime) -> None: ...


class ApiError(Exception):
    """An answer from the error catalog, with extra headers."""

    def __init__(self, error: Error, headers: dict[str, str] | None = None) -> None:
        super().__init__(error.value)
        self.error = error
        self.headers = headers or {}


def unauthorized(error: Error) -> Denied:
    challenge = CHALLENGE if error is Error.MISSING_TOKEN else INVALID_CHALLENGE
    return Denied(error, {"WWW-Authenticate": challenge})


@dataclass
class Gate:
    cache: VerdictCache
    digest: CredentialDigest
    authz: Authz
    limiter: RateLimiter
    policies: tuple[RatePolicy, ...]
    usage: UsageSink
    metrics: ApiMetrics
    trust: Trust  # how stale the cache may be (A12)
    deprecation: dict[str, str] = field(default_factory=dict)  # headers for legacy-key answers
    reverify_timeout: timedelta = timedelta(milliseconds=500)
    _inflight: dict[bytes, asyncio.Future[CachedVerdict | Denied]] = field(default_factory=dict)
    _applying: dict[tuple[Scope, str], tuple[RatePolicy, ...]] = field(default_factory=dict)
    _memo: dict[tuple[str, str], tuple[Need, ...]] = field(default_factory=dict)

    async def identify(
        self, authorization: str | None, client: str | None = None
    ) -> Principal | Denied:
        """Who is asking, or why nobody valid is (the 401 to answer, or authz's 429/503).
        `client`: the real client's address, for authz's failed-login throttle (A10)."""
        credential = parse_authorization(authorization)
        if isinstance(credential, Unreadable):
            self.metrics.verdict(credential.value).inc()
            return unauthorized(
                Error.MISSING_TOKEN if credential is Unreadable.MISSING else Error.INVALID_TOKEN
            )
        digest = self.digest(credential)
        now = utcnow()
        verdict = self.cache.get(digest, now)
        self.metrics.cache_lookup("miss" if verdict is None else "hit").inc()
        if verdict is None:
            asked = await self._ask(digest, credential, client)
        elif (use := self.trust.use(now)) is not Use.FRESH:
            asked = await self._stale(use, verdict, digest, credential, client)
        else:
            asked = verdict
        if isinstance(asked, Denied):
            return asked
        verdict = asked
        self.metrics.verdict(verdict.outcome.value).inc()
        who = self._principal(verdict)
        if who is not None:
            return who
        if verdict.outcome is Outcome.NEEDS_TOKEN:
            return unauthorized(Error.TOKEN_REQUIRED)
        if verdict.outcome is Outcome.THROTTLED:
            return Denied(Error.LOGIN_THROTTLED, {"Retry-After": str(verdict.retry_after_s or 1)})
        return unauthorized(Error.INVALID_TOKEN)

    def _principal(self, verdict: CachedVerdict) -> Principal | None:
        """Who a valid verdict names (its use recorded for last-used times), else None."""
        if verdict.outcome is not Outcome.VALID or not verdict.account or not verdict.method:
            return None
        who = Principal(
            verdict.account,
            verdict.method,
            verdict.scopes,
            verdict.credential_id,
            mfa=verdict.mfa,
            deprecated=verdict.deprecated,
        )
        self.usage.used(who, utcnow())
        return who

    async def _stale(
        self,
        use: Use,
        cached: CachedVerdict,
        digest: bytes,
        credential: SealedCredential,
        client: str | None,
    ) -> CachedVerdict | Denied:
        """A cached verdict while the changes feed is older than the bound (A12, ADR 0016):
        authz's answer if it gives one within `reverify_timeout`; else the cache as it is now
        if the feed caught up meanwhile, the cached verdict within the grace, or 503."""
        if use is Use.REVERIFY:
            asked = await self._ask(digest, credential, client, self.reverify_timeout)
            if not isinstance(asked, Denied):
                self.trust.answered()
                self.metrics.stale.labels(use="reverified").inc()
                return asked
            use = self.trust.unanswered(utcnow())
        if use is Use.FRESH:  # the feed caught up meanwhile: the cache is current again
            current = self.cache.get(digest, utcnow())
            if current is not None:
                return current
            # evicted by what was read: ask once more, within the same short budget (the wait
            # stays under the verify budget)
            return await self._ask(digest, credential, client, self.reverify_timeout)
        if use is Use.GRACE:
            self.metrics.stale.labels(use="grace").inc()
            return cached
        self.metrics.stale.labels(use="refused").inc()
        age = self.trust.freshness.age(utcnow())
        log.warning(
            "cached verdict refused: the changes feed is too old and authz did not answer",
            feed_age_s=None if age is None else round(age.total_seconds(), 3),
        )
        return Denied(Error.UNAVAILABLE, {"Retry-After": "1"})

    async def _ask(
        self,
        digest: bytes,
        credential: SealedCredential,
        client: str | None,
        within: timedelta | None = None,
    ) -> CachedVerdict | Denied:
        """authz's verdict, one question per credential at a time (single flight); a 503
        when authz cannot answer (never a guessed yes)."""
        running = self._inflight.get(digest)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[CachedVerdict | Denied] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            verdict = await self._verify(digest, credential, client, within)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters re-raise it; mark it retrieved for the lone caller
            raise
        finally:
            del self._inflight[digest]
        future.set_result(verdict)
        return verdict

    async def _verify(
        self,
        digest: bytes,
        credential: SealedCredential,
        client: str | None,
        within: timedelta | None,
    ) -> CachedVerdict | Denied:
        try:
            reply = await self.authz.verify(
                credential, partition_key=digest, client=client, within=within
            )
        except (RpcTimeout, NoSealingKey):
            return Denied(Error.UNAVAILABLE, {"Retry-After": "1"})
        if isinstance(reply, RequestFailed):
            return Denied(Error.UNAVAILABLE, {"Retry-After": "1"})
        return self.cache.admit(digest, reply, utcnow())

    async def rate(self, who: Principal, route: str) -> dict[str, str] | Denied:
        """Check and count one request of this account on `route` against every policy that
        applies (R1, R2): the headers to answer with (R5), or the refusal (429, or 503 for a
        fail-closed policy without its owner). Answers to a legacy key carry the
        deprecation headers either way."""
        extra = self.deprecation if who.deprecated else {}
        return await self._rate("account", f"acct:{who.account.id}", route, extra)

    async def rate_anonymous(self, address: str, route: str) -> dict[str, str] | Denied:
        """The same for a request without valid credentials, per client address (R6)."""
        return await self._rate("address", f"addr:{address}", route, {})

    def _needs(self, scope: Scope, subject: str, route: str) -> tuple[Need, ...]:
        """The needs of a request of `subject` on `route`; remembered for the subjects seen
        lately (at most `MEMO`, all forgotten when full), so a hot subject's limit keys are
        not built anew on every request."""
        needs = self._memo.get((route, subject))
        if needs is not None:
            return needs
        applying = self._applying.get((scope, route))
        if applying is None:  # route ids are templates: bounded
            applying = tuple(p for p in self.policies if p.applies(route, scope))
            self._applying[(scope, route)] = applying
        needs = tuple([Need(p, subject) for p in applying])
        if len(self._memo) >= MEMO:
            self._memo.clear()
        self._memo[(route, subject)] = needs
        return needs

    async def _rate(
        self, scope: Scope, subject: str, route: str, extra: dict[str, str]
    ) -> dict[str, str] | Denied:
        needs = self._needs(scope, subject, route)
        if not needs:
            return extra
        decision = await self.limiter.admit(needs)
        now = utcnow()
        if isinstance(decision, Admit):
            for policy in decision.fallback:
                mode = next(n.policy.fail_mode for n in needs if n.policy.lease.name == policy)
                self.metrics.rate_fallback.labels(policy=policy, mode=mode).inc()
            self._count(needs, "allowed")
            return rate_headers(decision.states, now) | extra
        if isinstance(decision, Refuse):
            self._count(needs, "locked" if decision.locked else "limited")
            headers = rate_headers(decision.states, now)
            headers["Retry-After"] = str(seconds_until(decision.retry_at, now))
            return Denied(Error.TOO_MANY_REQUESTS, headers | extra)
        self.metrics.rate_fallback.labels(policy=decision.policy, mode="closed").inc()
        self._count(needs, "unavailable")
        return Denied(Error.UNAVAILABLE, {"Retry-After": "1"} | extra)

    def _count(self, needs: tuple[Need, ...], result: str) -> None:
        for need in needs:
            self.metrics.rate_decision(need.policy.lease.name, result).inc()


def rate_headers(states: tuple[RateState, ...], now: datetime) -> dict[str, str]:
    """R5: every policy in `RateLimit-Policy` and `RateLimit` (IETF httpapi draft), the
    tightest one (least remaining) in the classic `X-RateLimit-*`."""
    if not states:
        return {}
    if len(states) == 1:  # the common case, without the joins
        tightest = one = states[0]
        policies = f'"{one.policy}";q={one.limit};w={one.window_s}'
        left = f'"{one.policy}";r={one.remaining};t={seconds_until(one.reset_at, now, least=0)}'
    else:
        tightest = min(states, key=lambda s: s.remaining)
        policies = ", ".join(f'"{s.policy}";q={s.limit};w={s.window_s}' for s in states)
        left = ", ".join(
            f'"{s.policy}";r={s.remaining};t={seconds_until(s.reset_at, now, least=0)}'
            for s in states
        )
    return {
        "RateLimit-Policy": policies,
        "RateLimit": left,
        "X-RateLimit-Limit": str(tightest.limit),
        "X-RateLimit-Remaining": str(tightest.remaining),
        "X-RateLimit-Reset": str(math.ceil(tightest.reset_at.timestamp())),
    }


def seconds_until(at: datetime, now: datetime, *, least: int = 1) -> int:
    """Whole seconds to wait, rounded up: a client that obeys never comes back too early."""
    return max(least, math.ceil((at - now).total_seconds()))
