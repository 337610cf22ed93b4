"""What an api instance learns from the broadcast topics, and keeps in memory so the common
request needs no round trip: authz's public keys, credential changes (into the verdict cache),
and the owners' rate decisions (into the rate limiter's quota): lockouts, and recalls of the
units this instance holds unspent, which the quota answers at once (ADR 0010)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from authbus_api.core.freshness import Freshness, StalenessPolicy, Trust
from authbus_api.core.quota import Quota
from authbus_api.core.verdict_cache import VerdictCache
from authbus_api.metrics import ApiMetrics
from authbus_api.settings import ApiSettings
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.contracts import topics
from authbus_shared.contracts.envelope import Envelope, new_id, payload_of, utcnow
from authbus_shared.contracts.events import (
    AccountChanged,
    ChangesHeartbeat,
    KeyRevoked,
    TokenRevoked,
)
from authbus_shared.contracts.ratelimit import RecallLease, SubjectLocked, SubjectUnlocked
from authbus_shared.contracts.topics import TopicSpec
from authbus_shared.kafka.consumers import Handler, StartAt

Readers = dict[str, tuple[str, Handler, StartAt]]


@dataclass
class Views:
    cache: VerdictCache
    keys: AuthzKeys
    quota: Quota
    metrics: ApiMetrics
    clock: Callable[[], datetime] = utcnow
    trust: Trust = field(
        default_factory=lambda: Trust(Freshness(partitions=topics.AUTH_CHANGES.partitions))
    )

    @classmethod
    def new(cls, settings: ApiSettings, metrics: ApiMetrics) -> Views:
        cache = VerdictCache(
            max_entries=settings.cache_max_entries,
            ttl=timedelta(seconds=settings.cache_ttl_s),
            negative_ttl=timedelta(seconds=settings.cache_negative_ttl_s),
        )
        quota = Quota(
            holder_name(settings.instance_id),
            margin=timedelta(milliseconds=settings.rate.lease_margin_ms),
            release_idle=timedelta(milliseconds=settings.rate.release_idle_ms),
            fallback_for=timedelta(seconds=settings.rate.fallback_s),
            ask_budget=timedelta(milliseconds=settings.rate.ask_timeout_ms),
        )
        stale = settings.staleness
        trust = Trust(
            Freshness(
                partitions=topics.AUTH_CHANGES.partitions,
                skew=timedelta(milliseconds=stale.clock_skew_ms),
            ),
            StalenessPolicy(
                bound=timedelta(seconds=stale.bound_s), grace=timedelta(seconds=stale.grace_s)
            ),
            probe_every=timedelta(seconds=stale.probe_every_s),
        )
        views = cls(cache, AuthzKeys(), quota, metrics, trust=trust)
        metrics.feed_age.set_function(views.feed_age)
        return views

    def feed_age(self) -> float:
        age = self.trust.freshness.age(self.clock())
        return -1.0 if age is None else age.total_seconds()

    def readers(self, t: dict[str, TopicSpec], settings: ApiSettings) -> Readers:
        """One broadcast reader per topic: name -> (topic, handler, where to start)."""
        lookback = timedelta(seconds=settings.decisions_lookback_s)
        return {
            "authz_keys": (t[topics.AUTHZ_KEYS.name].name, self.keys.handle, "beginning"),
            "auth_changes": (t[topics.AUTH_CHANGES.name].name, self.on_change, "end"),
            "rate_decisions": (
                t[topics.RATELIMIT_DECISIONS.name].name,
                self.on_decision,
                lookback,
            ),
        }

    async def on_change(self, envelope: Envelope) -> None:
        event = payload_of(envelope)
        match event:
            case ChangesHeartbeat():
                self.trust.freshness.heard(event.partition, event.at)
                return
            case TokenRevoked():
                self.cache.revoke(event.token_id, utcnow())
            case KeyRevoked():
                self.cache.revoke(event.key_id, utcnow())
            case AccountChanged():
                self.cache.account_changed(event.account_id, event.at, utcnow())
        self.metrics.invalidations.labels(event=event.TYPE).inc()

    async def on_decision(self, envelope: Envelope) -> None:
        event = payload_of(envelope)
        now = self.clock()
        match event:
            case SubjectLocked() if event.until > now:
                self.quota.locked(event)
                self.metrics.lockouts.inc()
            case SubjectUnlocked():
                self.quota.unlocked(event.subject)
            case RecallLease() if self.quota.instance in event.holders:
                answered = self.quota.recalled(event, now)
                self.metrics.recalls.labels(outcome="answered" if answered else "ignored").inc()


def holder_name(instance_id: str) -> str:
    """The name this process holds leases under: the instance id and a new suffix for every
    start, so a restarted instance (the same id) is a new holder. Whatever its previous run
    held but had not reported spent stays counted as spent until the window ends; the new run
    can never give it back by saying it holds nothing (ADR 0010, "Exact both ways")."""
    return f"{instance_id}#{new_id()[:8]}"
