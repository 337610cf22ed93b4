"""A `PartitionOwner` in a process of its own, for tests that SIGKILL it and start it again.

    python -m tests.integration.owner_member BOOTSTRAP TOPIC GROUP INSTANCE [STATIC]

It joins group GROUP on TOPIC as member INSTANCE (static membership when STATIC is "static"),
replays what it is given, and prints one JSON line per event on stdout: `{"assigned": [...]}`
after each assignment (the partitions it was given), `{"revoked": [...]}`, and every 100 ms
`{"owned": [...], "caught_up": bool}`. It runs until killed.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta
from typing import TextIO

import orjson
from prometheus_client import CollectorRegistry

from authbus_shared import logs
from authbus_shared.contracts.envelope import Envelope
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.owner import PartitionOwner
from authbus_shared.settings import KafkaSettings, LogSettings

HORIZON = timedelta(hours=1)


class Printed:
    """The member's events, as JSON lines on `out`."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.handled = 0

    def say(self, **fields: object) -> None:
        self._out.write(orjson.dumps(fields).decode() + "\n")
        self._out.flush()

    async def handle(self, partition: int, envelope: Envelope, at: datetime) -> None:
        self.handled += 1


async def main(bootstrap: str, topic: str, group: str, instance: str, static: bool) -> None:
    logs.configure(
        LogSettings(format="console"), service="member", instance=instance, stream=sys.stderr
    )
    printed = Printed(sys.stdout)
    owner = PartitionOwner(
        KafkaSettings(bootstrap_servers=bootstrap),
        group_id=group,
        topic=topic,
        handler=printed.handle,
        on_assigned=lambda p: printed.say(assigned=[p]),
        on_revoked=lambda p: printed.say(revoked=[p]),
        replay_horizon=HORIZON,
        metrics=KafkaMetrics("member", CollectorRegistry()),
        client_id=instance,
        group_instance_id=instance if static else None,
    )
    await owner.start()
    while True:
        printed.say(owned=sorted(owner.partitions), caught_up=owner.caught_up)
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    bootstrap, topic, group, instance, *mode = sys.argv[1:]
    asyncio.run(main(bootstrap, topic, group, instance, mode == ["static"]))
