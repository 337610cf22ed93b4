"""A restarted owner always converges (SPEC R4, R9; ADR 0014), on the real processes: the
ratelimit instance that owns a locked-out subject's key is killed with SIGKILL and started
again, ten times, under traffic. Each time it is ready again within `BOUND_S` and stays put
(no second assignment after it settled), and the lockout holds on every api instance with a
Retry-After that counts down, never a 200 before the lock's end."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka.partitioner import murmur2

from authbus_dev.fleet import Instance
from authbus_shared.contracts import topics
from tests.e2e.conftest import System, wait_for

BOUND_S = 15.0  # kill -> ready and assigned for good
QUIET_S = 4.0  # no assignment for this long after ready (> 2 heartbeats): settled
RESTARTS = 10
ASSIGNED = b'"event":"partitions assigned, replaying"'


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def partition_of(key: str) -> int:
    """Kafka's default partitioner (murmur2 of the key), as the api's producer uses it."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % topics.RATELIMIT_LEASES.partitions


def owner_of(system: System, partition: int) -> Instance | None:
    owners = [
        r
        for r in system.fleet.instances("ratelimit")
        if system.fleet.process(r).running()
        and system.instance_metric(r, "ratelimit_owned_partitions", partition=str(partition))
    ]
    return owners[0] if len(owners) == 1 else None


def assignments_since(log: Path, offset: int) -> list[float]:
    """Unix times of the "partitions assigned" lines written after byte `offset` of `log`."""
    with log.open("rb") as f:
        f.seek(offset)
        lines = [line for line in f if ASSIGNED in line]
    return [datetime.fromisoformat(orjson.loads(line)["timestamp"]).timestamp() for line in lines]


@pytest.fixture
def background_traffic(system: System) -> Iterator[None]:
    """Requests without credentials from many client addresses at every api instance (each
    address is a limit key: asks on many partitions), until the test ends."""
    stop = threading.Event()

    async def send() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while not stop.is_set():
                batch = [
                    client.get(
                        f"{api.url}/v0/me",
                        headers={"X-Forwarded-For": f"203.0.113.{random.randrange(1, 255)}"},
                    )
                    for api in system.apis()
                ]
                await asyncio.gather(*batch, return_exceptions=True)
                await asyncio.sleep(0.1)

    thread = threading.Thread(target=lambda: asyncio.run(send()), daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


class Watch:
    """Polls the subject on every api instance in turn (every 0.2 s) while the test runs: a
    200 while a lock holds would be missed by checks between restarts."""

    def __init__(self, system: System, token: str) -> None:
        self.answers: list[tuple[float, str, int]] = []  # (Unix time, api, status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(system, token), daemon=True)

    def _poll(self, system: System, token: str) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                for api in system.apis():
                    try:
                        status = client.get(f"{api.url}/v0/me", headers=bearer(token)).status_code
                    except httpx.HTTPError:
                        status = 0
                    self.answers.append((time.time(), api.name, status))
                    time.sleep(0.2)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def admitted_during(self, locks: list[tuple[float, float]]) -> list[tuple[float, str, int]]:
        """Answers other than 429 well inside a lock (1 s of slack at both ends)."""
        return [
            a for a in self.answers if a[2] != 429 and any(s + 1 < a[0] < e - 1 for s, e in locks)
        ]


def lock_out(system: System, token: str) -> tuple[float, float]:
    """Spend the window (61 requests over every instance) until the owner locks the subject
    out; when the lock was seen and its end (Unix times), from the Retry-After of a 429."""
    locks = system.metric("ratelimit", "ratelimit_lockouts_total")
    apis = system.apis()

    def spent() -> bool:
        for i in range(61):
            httpx.get(f"{apis[i % len(apis)].url}/v0/me", headers=bearer(token), timeout=10)
        return system.metric("ratelimit", "ratelimit_lockouts_total") > locks

    wait_for(spent, timeout_s=30)
    answer = httpx.get(f"{apis[0].url}/v0/me", headers=bearer(token), timeout=10)
    assert answer.status_code == 429
    return time.time(), time.time() + int(answer.headers["retry-after"])


def assert_locked_everywhere(system: System, token: str, until: float) -> None:
    """Every api instance refuses the subject with the lock's true remaining time."""
    for api in system.apis():
        answer = httpx.get(f"{api.url}/v0/me", headers=bearer(token), timeout=10)
        left = until - time.time()
        assert answer.status_code == 429, (api.name, answer.status_code, round(left, 1))
        assert left - 2 <= int(answer.headers["retry-after"]) <= left + 2, (api.name, left)


def restart_and_settle(system: System, owner: Instance) -> float:
    """SIGKILL `owner`, start it again; seconds from the kill until it is ready and the
    group's last assignment, once no assignment has come for `QUIET_S` after it was ready."""
    logs = [system.fleet.process(r).log_file for r in system.fleet.instances("ratelimit")]
    offsets = [log.stat().st_size if log.exists() else 0 for log in logs]
    killed_at, killed_mono = time.time(), time.monotonic()
    system.fleet.kill(owner)
    system.fleet.start(owner)
    ready_s = system.fleet.wait_ready(owner, timeout_s=BOUND_S)
    time.sleep(QUIET_S)
    quiet_from = time.time() - QUIET_S
    assigned = [t for log, o in zip(logs, offsets, strict=True) for t in assignments_since(log, o)]
    assert assigned, "the restarted owner logged no assignment"
    assert max(assigned) < quiet_from, f"still rebalancing: {[t - killed_at for t in assigned]}"
    settled_s = max(max(assigned) - killed_at, time.monotonic() - killed_mono - QUIET_S)
    assert ready_s <= BOUND_S and settled_s <= BOUND_S, (ready_s, settled_s)
    return settled_s


@pytest.mark.usefixtures("ratelimit_restored", "background_traffic")
def test_the_owner_of_a_locked_out_key_killed_ten_times_converges_and_the_lock_holds(
    system: System,
) -> None:
    token = system.new_token(system.new_account())["token"]
    me = httpx.get(f"{system.apis()[0].url}/v0/me", headers=bearer(token), timeout=10)
    assert me.status_code == 200, me.text
    partition = partition_of(f"global:acct:{me.json()['id']}")
    locks = [lock_out(system, token)]
    times = []
    with Watch(system, token) as watch:
        for _ in range(RESTARTS):
            if locks[-1][1] - time.time() < BOUND_S + QUIET_S + 5:  # the lock ends soon
                time.sleep(max(0.0, locks[-1][1] + 1 - time.time()))
                locks.append(lock_out(system, token))
            owner = owner_of(system, partition)
            assert owner is not None, "the key's partition has no single owner"
            times.append(restart_and_settle(system, owner))
            assert owner_of(system, partition) is not None
            assert_locked_everywhere(system, token, locks[-1][1])
    print(f"converged {[round(t, 1) for t in times]} s after each SIGKILL")
    admitted = watch.admitted_during(locks)
    assert admitted == [], [
        (api, status, [(round(t - s, 1), round(e - t, 1)) for s, e in locks if s < t < e])
        for t, api, status in admitted
    ]
    assert len(watch.answers) > 100
