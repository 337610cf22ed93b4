"""ratelimit's Kafka boundary: RecordHits in (from the partitions this instance owns),
RateDecided out (broadcast to every api instance)."""

from __future__ import annotations

from dataclasses import dataclass

from authbus_ratelimit.core.fixed_window import Decision, FixedWindow
from authbus_ratelimit.metrics import RatelimitMetrics
from authbus_shared.contracts.envelope import Envelope, MessageDecodeError, payload_of, utcnow, wrap
from authbus_shared.contracts.ratelimit import RateDecided, RecordHits
from authbus_shared.kafka.producer import Publisher


def decided(d: Decision) -> RateDecided:
    return RateDecided(
        key=d.key,
        policy=d.policy.name,
        limit=d.policy.limit,
        window_s=int(d.policy.window.total_seconds()),
        count=d.count,
        remaining=d.remaining,
        reset_at=d.reset_at,
        blocked_until=d.blocked_until,
    )


@dataclass
class RatelimitHandlers:
    counter: FixedWindow
    publisher: Publisher
    decisions_topic: str
    metrics: RatelimitMetrics
    instance_id: str

    async def handle(self, envelope: Envelope) -> None:
        hits = payload_of(envelope)
        if not isinstance(hits, RecordHits):
            raise MessageDecodeError(f"ratelimit does not handle {envelope.type}")
        decision = self.counter.record(hits.key, hits.hits, hits.first_at)
        policy = decision.policy.name
        self.metrics.hits.labels(policy=policy).inc(hits.hits)
        state = (
            "blocked"
            if decision.blocked_until
            else "exhausted"
            if not decision.remaining
            else "open"
        )
        self.metrics.decisions.labels(policy=policy, state=state).inc()
        self.metrics.keys.labels(policy=policy).set(len(self.counter))
        event = wrap(decided(decision), producer=self.instance_id, now=utcnow())
        await self.publisher.publish(self.decisions_topic, event, key=hits.key)

    def sweep(self) -> None:
        self.counter.sweep(utcnow())
        self.metrics.keys.labels(policy=self.counter.policy.name).set(len(self.counter))
