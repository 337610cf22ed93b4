"""authz's heartbeats on the changes feed (SPEC A12): one per partition every period, stamped
with authz's clock; while the broker does not take one, that partition gets no more."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from authbus_authz.heartbeat import beat
from authbus_shared.contracts.envelope import Envelope, payload_of
from authbus_shared.contracts.events import ChangesHeartbeat


@dataclass
class HeldPublisher:
    """Takes sends and acknowledges them only when told."""

    sent: list[tuple[int, ChangesHeartbeat]] = field(default_factory=list)
    futures: list[asyncio.Future[None]] = field(default_factory=list)

    def enqueue(self, topic: str, envelope: Envelope, **where: Any) -> asyncio.Future[None]:
        event = payload_of(envelope)
        assert isinstance(event, ChangesHeartbeat) and topic == "changes"
        self.sent.append((where["partition"], event))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


async def test_each_partition_gets_a_stamped_heartbeat_and_no_second_until_the_first_is_taken() -> (
    None
):
    publisher = HeldPublisher()
    task = asyncio.create_task(
        beat(publisher, "changes", 3, instance_id="authz-1", every_s=0.01)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.1)

    assert sorted(p for p, _ in publisher.sent) == [0, 1, 2]  # held: nothing more
    assert all(e.partition == p and e.instance == "authz-1" for p, e in publisher.sent)
    publisher.futures[1].set_result(None)  # the broker takes partition 1's
    publisher.futures[2].set_exception(ConnectionError("broker away"))
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    later = [p for p, _ in publisher.sent[3:]]
    assert 0 not in later and 1 in later and 2 in later
    assert publisher.sent[3][1].at > publisher.sent[0][1].at
