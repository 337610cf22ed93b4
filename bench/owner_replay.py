"""How long a new owner takes to replay (ADR 0014: the replay is part of the convergence bound).

    .venv/bin/python -m bench.owner_replay [--asks 0,50000,200000]

For each count: a fresh leases topic on a real broker filled with that many lease asks (5,000
keys, the built-in policy, four asking instances, no reply awaited: what a replay finds), then
ratelimit's `run()` in this process, timed until its `/readyz` answers 200 (it owns all twelve
partitions and has replayed them). The row with 0 asks is the start itself (group join, topic
checks); the others add the replay. Prints asks, seconds to ready, and asks per second of replay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
import uuid

import httpx
from aiokafka import AIOKafkaProducer

from authbus_dev.ports import free_port
from authbus_ratelimit.runner import run
from authbus_ratelimit.settings import RatelimitSettings
from authbus_shared import logs
from authbus_shared.contracts import topics
from authbus_shared.contracts.envelope import encode, utcnow, wrap
from authbus_shared.contracts.ratelimit import AcquireLease
from authbus_shared.horizon import SEED_POLICIES
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.settings import KafkaSettings, LogSettings, OpsSettings
from bench.harness import local_infrastructure

KEYS = 5000


async def fill(kafka: KafkaSettings, asks: int) -> None:
    leases = resolve(topics.RATELIMIT_LEASES, kafka)
    others = [resolve(t, kafka) for t in (topics.RATELIMIT_DECISIONS, topics.REPLIES)]
    await ensure_topics(kafka, [leases, *others])
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=20)
    await producer.start()
    try:
        for i in range(asks):
            subject = f"acct:{random.randrange(KEYS)}"
            key = f"global:{subject}"
            ask = AcquireLease(
                key=key, subject=subject, policy=SEED_POLICIES[0], instance=f"api-{i % 4}", want=4
            )
            await producer.send(
                leases.name, encode(wrap(ask, producer="bench", now=utcnow())), key=key.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


async def time_to_ready(kafka: KafkaSettings) -> float:
    port = free_port()
    settings = RatelimitSettings(
        kafka=kafka, instance_id="replayer", ops=OpsSettings(host="127.0.0.1", port=port)
    )
    started = time.monotonic()
    service = asyncio.create_task(run(settings))
    try:
        async with httpx.AsyncClient() as client, asyncio.timeout(600):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        return time.monotonic() - started
                await asyncio.sleep(0.05)
    finally:
        service.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await service


async def measure(bootstrap: str, counts: list[int]) -> None:
    print(f"{'asks':>9} {'ready (s)':>10} {'replay (asks/s)':>16}")
    base = None
    for asks in counts:
        kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
        await fill(kafka, asks)
        took = await time_to_ready(kafka)
        base = took if base is None else base
        rate = f"{asks / (took - base):>16,.0f}" if asks and took > base else f"{'-':>16}"
        print(f"{asks:>9,} {took:>10.2f} {rate}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asks", default="0,50000,200000", help="comma-separated counts")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs)")
    args = parser.parse_args()
    counts = [int(n) for n in args.asks.split(",")]
    logs.configure(LogSettings(level="WARNING", format="console"), service="bench", instance="-")
    with local_infrastructure("authbus-replay-", keep=args.keep, mongo=False) as cfg:
        asyncio.run(measure(cfg.bootstrap, counts))


if __name__ == "__main__":
    main()
