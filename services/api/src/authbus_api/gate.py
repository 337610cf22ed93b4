"""The gate every protected request passes: who is it (authn), and may it go on (rate).

Hot path: the credential's digest is in the verdict cache and the rate view says yes; no Kafka,
no argon2, no MongoDB. Cold path: a cache miss asks authz over Kafka; concurrent requests with
the same credential share one question (single flight). Authentication fails closed: no reply
in time, or authz failing, is a 503 and never a guessed yes.

Verdicts and rate admissions become HTTP answers in exactly one place: `ApiError` here, rendered
by the app's error handler.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from authbus_api.core.credentials import Unreadable, parse_authorization
from authbus_api.core.errors import Error
from authbus_api.core.rate_view import Admission, RateView
from authbus_api.core.verdict_cache import CredentialDigest, VerdictCache
from authbus_api.metrics import ApiMetrics
from authbus_shared.authz_client import NoSealingKey, Verdict
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialVerified,
    Outcome,
    RequestFailed,
    SealedCredential,
)
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.kafka.rpc import RpcTimeout

CHALLENGE = 'Bearer realm="authbus", Basic realm="authbus", charset="UTF-8"'
INVALID_CHALLENGE = (
    'Bearer realm="authbus", error="invalid_token", Basic realm="authbus", charset="UTF-8"'
)


class Authz(Protocol):
    """Where verdicts come from (AuthzClient over Kafka; a twin in unit tests)."""

    async def verify(
        self, credential: SealedCredential, *, partition_key: bytes, client: str | None = None
    ) -> Verdict: ...


class HitSink(Protocol):
    """Where admitted hits go (HitShipper to ratelimit; a twin in unit tests)."""

    def add(self, key: str, at: datetime) -> None: ...


class UsageSink(Protocol):
    """Where credential uses go (UsageReporter to authz; a twin in unit tests)."""

    def used(self, who: Principal, at: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid credential belongs to, and what it may do."""

    account: AccountView
    method: AuthMethod
    scopes: tuple[str, ...]
    credential_id: str | None
    mfa: bool = False
    deprecated: bool = False


class ApiError(Exception):
    """An answer from the error catalog, with extra headers."""

    def __init__(self, error: Error, headers: dict[str, str] | None = None) -> None:
        super().__init__(error.value)
        self.error = error
        self.headers = headers or {}


def unauthorized(error: Error) -> ApiError:
    challenge = CHALLENGE if error is Error.MISSING_TOKEN else INVALID_CHALLENGE
    return ApiError(error, {"WWW-Authenticate": challenge})


@dataclass
class Gate:
    cache: VerdictCache
    digest: CredentialDigest
    authz: Authz
    rate: RateView
    hits: HitSink
    usage: UsageSink
    metrics: ApiMetrics
    deprecation: dict[str, str] = field(default_factory=dict)  # headers for legacy-key answers
    _inflight: dict[bytes, asyncio.Future[CredentialVerified]] = field(default_factory=dict)

    async def authenticate(self, authorization: str | None) -> Principal:
        """Who is asking, or raises the ApiError to answer."""
        credential = parse_authorization(authorization)
        if isinstance(credential, Unreadable):
            self.metrics.verdicts.labels(outcome=credential.value).inc()
            raise unauthorized(
                Error.MISSING_TOKEN if credential is Unreadable.MISSING else Error.INVALID_TOKEN
            )
        digest = self.digest(credential)
        verdict = self.cache.get(digest, utcnow())
        self.metrics.cache.labels(result="miss" if verdict is None else "hit").inc()
        if verdict is None:
            verdict = await self._ask(digest, credential)
        self.metrics.verdicts.labels(outcome=verdict.outcome.value).inc()
        if verdict.outcome is Outcome.VALID and verdict.account and verdict.method:
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
        if verdict.outcome is Outcome.NEEDS_TOKEN:
            raise unauthorized(Error.TOKEN_REQUIRED)
        if verdict.outcome is Outcome.THROTTLED:
            raise ApiError(Error.LOGIN_THROTTLED, {"Retry-After": str(verdict.retry_after_s or 1)})
        raise unauthorized(Error.INVALID_TOKEN)

    async def _ask(self, digest: bytes, credential: SealedCredential) -> CredentialVerified:
        running = self._inflight.get(digest)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[CredentialVerified] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            verdict = await self._verify(digest, credential)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters re-raise it; mark it retrieved for the lone caller
            raise
        finally:
            del self._inflight[digest]
        future.set_result(verdict)
        return verdict

    async def _verify(self, digest: bytes, credential: SealedCredential) -> CredentialVerified:
        try:
            reply = await self.authz.verify(credential, partition_key=digest)
        except (RpcTimeout, NoSealingKey) as exc:
            raise ApiError(Error.UNAVAILABLE, {"Retry-After": "1"}) from exc
        if isinstance(reply, RequestFailed):
            raise ApiError(Error.UNAVAILABLE, {"Retry-After": "1"})
        return self.cache.admit(digest, reply, utcnow())

    def limit(self, who: Principal) -> dict[str, str]:
        """Check and count one request of this account: the headers to answer with, or raises
        ApiError(429). Answers to a legacy key carry the deprecation headers either way."""
        key = f"acct:{who.account.id}"
        now = utcnow()
        admission = self.rate.check(key, now)
        headers = rate_headers(admission) | (self.deprecation if who.deprecated else {})
        if not admission.allowed:
            self.metrics.rate.labels(result="limited").inc()
            raise ApiError(Error.TOO_MANY_REQUESTS, headers)
        self.metrics.rate.labels(result="allowed").inc()
        self.rate.admitted(key)
        self.hits.add(key, now)
        return headers


def rate_headers(admission: Admission) -> dict[str, str]:
    headers: dict[str, str] = {}
    if admission.limit is not None:
        headers["X-RateLimit-Limit"] = str(admission.limit)
    if admission.remaining is not None:
        headers["X-RateLimit-Remaining"] = str(admission.remaining)
    if admission.reset_at is not None:
        headers["X-RateLimit-Reset"] = str(int(admission.reset_at.timestamp()))
    if admission.retry_after_s is not None:
        headers["Retry-After"] = str(admission.retry_after_s)
    return headers
