"""The transactional outbox (ADR 0015): authz's events are staged in MongoDB with the change
they announce, then published.

Algorithm:
- A command runs inside a unit of work (`store.atomically`); its events become outbox entries
  (the encoded envelope, its topic and partition key, `due_at` = commit + `relay_after_s`)
  written in the same transaction. So a committed change always has its events staged, and an
  undone one has none.
- Right after the commit the instance that made the change publishes them, in order, then
  removes them (`send`): the asker's reply goes after, so an asker told "revoked" knows the
  broadcast is on the log. A publish that fails leaves them staged.
- Every instance runs a relay (`relay`): every `relay_interval_s` it claims entries that are
  due (`claim_due`: `due_at` moved to now + `claim_s`, atomically per entry, so two relays
  rarely publish the same one), publishes them, oldest first, and removes them. Due entries
  are those of a writer that crashed between commit and publish, or whose publish failed, or
  of a relay that died while publishing (its claim expired).

Guarantee: an acknowledged change is broadcast at least once, within `relay_after_s` +
`relay_interval_s` (6 s by default) of its commit while any authz instance runs and the broker
is up; after every instance was down, within `relay_interval_s` of the first one's restart
(once `relay_after_s` has passed since the commit). Duplicates are possible (a writer slower
than `relay_after_s`, a relay slower than `claim_s`, a failed removal); the envelope id is the
same each time, and consumers are idempotent. Order: the writer publishes in commit order per
request; a relayed event may come after later events of its account.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from authbus_authz.core.ports import Clock, OutboxEntry, OutboxStore
from authbus_authz.core.results import Done
from authbus_authz.metrics import AuthzMetrics
from authbus_authz.settings import OutboxSettings
from authbus_shared.contracts.envelope import Contract, decode, encode, utcnow, wrap
from authbus_shared.contracts.events import (
    AccountChanged,
    AccountCreated,
    KeyIssued,
    KeyRevoked,
    KeyUsed,
    LoginFailed,
    LoginThrottled,
    TokenIssued,
    TokenRevoked,
)
from authbus_shared.kafka.producer import Publisher

log = structlog.get_logger(__name__)


class Unsent(Exception):
    """Events were committed but not all published: they stay staged for the relay."""


@dataclass
class Topics:
    audit: str
    changes: str
    keys: str


@dataclass
class Outbox:
    store: OutboxStore
    publisher: Publisher
    topics: Topics
    metrics: AuthzMetrics
    instance_id: str
    settings: OutboxSettings = field(default_factory=OutboxSettings)
    clock: Clock = utcnow
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def entries(self, done: Done) -> list[OutboxEntry]:
        """A command's events as outbox entries: changes, then audit, then published keys."""
        routed = [(self.topics.changes, e, account_of(e)) for e in done.changes]
        routed += [(self.topics.audit, e, account_of(e)) for e in done.audit]
        routed += [(self.topics.keys, k, k.kid) for k in done.published]
        return self._entries(routed)

    def audit(self, events: Iterable[Contract]) -> list[OutboxEntry]:
        return self._entries((self.topics.audit, e, account_of(e)) for e in events)

    def _entries(self, routed: Iterable[tuple[str, Contract, str | None]]) -> list[OutboxEntry]:
        now = self.clock()
        due = now + timedelta(seconds=self.settings.relay_after_s)
        staged = []
        for position, (topic, event, key) in enumerate(routed):
            envelope = wrap(event, producer=self.instance_id, now=now)
            entry = OutboxEntry(envelope.id, topic, key, encode(envelope), now, due, position)
            staged.append(entry)
        return staged

    async def stage(self, entries: Sequence[OutboxEntry]) -> None:
        if entries:
            await self.store.add_to_outbox(entries)

    async def send(self, entries: Sequence[OutboxEntry], *, by: str = "writer") -> None:
        """Publish in order and remove what was published; `Unsent` if a publish failed (it
        and the entries after it stay staged)."""
        published: list[str] = []
        try:
            for entry in entries:
                await self.publisher.publish(entry.topic, decode(entry.envelope), key=entry.key)
                self.metrics.outbox_published.labels(by=by).inc()
                published.append(entry.id)
        except Exception as exc:
            self.metrics.outbox_errors.labels(stage="publish").inc()
            raise Unsent(f"{len(entries) - len(published)} event(s) left to the relay") from exc
        finally:
            await self._remove(published)

    async def _remove(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            await self.store.remove_from_outbox(ids)
        except Exception as exc:  # published already; the relay will publish them again
            self.metrics.outbox_errors.labels(stage="remove").inc()
            log.warning("published events not removed from the outbox", error=repr(exc))

    async def relay_once(self, now: datetime | None = None) -> int:
        """Claim the due entries (a batch), publish and remove them; how many were claimed."""
        now = now or self.clock()
        until = now + timedelta(seconds=self.settings.claim_s)
        claimed = await self.store.claim_due(now, until, self.settings.batch)
        if claimed:
            log.info("relaying staged events", count=len(claimed))
            await self.send(claimed, by="relay")
        return len(claimed)

    async def relay(self) -> None:
        """Forever: relay what is due every `relay_interval_s`. Failures (store or broker
        away) are counted and tried again at the next round; never ends the process."""
        while True:
            try:
                while await self.relay_once() == self.settings.batch:
                    pass
            except Unsent as exc:  # counted under `publish`
                log.warning("outbox relay could not publish", error=repr(exc.__cause__))
            except Exception as exc:
                self.metrics.outbox_errors.labels(stage="relay").inc()
                log.warning("outbox relay round failed", error=repr(exc))
            await self.sleep(self.settings.relay_interval_s)


def account_of(event: Contract) -> str | None:
    """The partition key of an event: its account, so one account's events stay in order."""
    match event:
        case AccountCreated():
            return event.account.id
        case (
            AccountChanged()
            | TokenIssued()
            | TokenRevoked()
            | KeyIssued()
            | KeyRevoked()
            | KeyUsed()
            | LoginFailed()
            | LoginThrottled()
        ):
            return event.account_id
    return None
