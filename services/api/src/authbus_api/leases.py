"""The rate limiter's port to ratelimit over Kafka (ADR 0010): lease asks are requests on
`ratelimit.leases.v1`, keyed by the limit key so the key's owner answers them in order;
releases (idle slices, answers to recalls) are sent without waiting, on the same producer and
partition as the asks, so the owner reads this instance's messages in the order they were sent
(the exactness of ADR 0010 relies on it; an unsent release only strands a few units)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from authbus_api.metrics import ApiMetrics
from authbus_shared.contracts.envelope import payload_of, utcnow, wrap
from authbus_shared.contracts.ratelimit import AcquireLease, LeaseGranted, ReleaseLease
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import RpcClient, RpcTimeout


@dataclass
class KafkaLeases:
    rpc: RpcClient
    publisher: Publisher
    topic: str
    instance_id: str
    timeout: timedelta

    metrics: ApiMetrics | None = None

    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        kind = "prefetch" if ask.prefetch else "blocking"
        try:
            envelope = await self.rpc.request(self.topic, ask, key=ask.key, timeout=self.timeout)
        except TimeoutError:
            self._count(kind, "timeout")
            raise
        reply = payload_of(envelope)
        if not isinstance(reply, LeaseGranted):
            self._count(kind, "timeout")
            raise RpcTimeout(f"unexpected reply to a lease ask: {reply.TYPE}")
        self._count(kind, _outcome(reply))
        return reply

    def _count(self, kind: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.lease_asks.labels(kind=kind, outcome=outcome).inc()

    async def release(self, release: ReleaseLease) -> None:
        envelope = wrap(release, producer=self.instance_id, now=utcnow())
        self.publisher.send_nowait(self.topic, envelope, key=release.key)


def _outcome(reply: LeaseGranted) -> str:
    if reply.granted:
        return "granted"
    return "recalling" if reply.retry_after_ms else "empty"
