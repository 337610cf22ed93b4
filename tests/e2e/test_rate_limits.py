"""Rate limits over HTTP on the real processes: four api instances, two ratelimit instances,
quota leases over the real broker (SPEC R1, R3, R4, R5, R6, R8; ADR 0010)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from aiokafka.partitioner import murmur2

from authbus_dev.fleet import Instance
from authbus_shared.contracts import topics
from tests.e2e.conftest import System, wait_for

JSON = {"Accept": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fire(apis: list[Instance], headers: dict[str, str], n: int) -> list[httpx.Response]:
    """`n` requests to /v0/me, spread round-robin over `apis`, 16 at a time: a client firing
    at every instance at once."""

    async def run() -> list[httpx.Response]:
        slots = asyncio.Semaphore(16)
        async with httpx.AsyncClient(timeout=10) as client:

            async def one(i: int) -> httpx.Response:
                async with slots:
                    return await client.get(f"{apis[i % len(apis)].url}/v0/me", headers=headers)

            return list(await asyncio.gather(*(one(i) for i in range(n))))

    return asyncio.run(run())


def statuses(answers: list[httpx.Response]) -> dict[int, int]:
    counted: dict[int, int] = {}
    for answer in answers:
        counted[answer.status_code] = counted.get(answer.status_code, 0) + 1
    return counted


def new_token(system: System) -> tuple[str, str]:
    """A fresh account's token and account id."""
    token = system.new_token(system.new_account())["token"]
    me = httpx.get(f"{system.apis()[0].url}/v0/me", headers=bearer(token) | JSON, timeout=10)
    assert me.status_code == 200, me.text
    return token, me.json()["id"]


def owner_of(system: System, key: str) -> Instance | None:
    """The ratelimit instance that owns `key`'s partition (the producer's murmur2
    partitioner); None while it moves."""
    partition = (murmur2(key.encode()) & 0x7FFFFFFF) % topics.RATELIMIT_LEASES.partitions
    owners = [
        r
        for r in system.fleet.instances("ratelimit")
        if system.fleet.process(r).running()
        and system.instance_metric(r, "ratelimit_owned_partitions", partition=str(partition))
    ]
    return owners[0] if len(owners) == 1 else None


@pytest.fixture
def ratelimit_restored(system: System) -> Iterator[None]:
    """Whatever a test stops or kills, every ratelimit instance runs again after it."""
    yield
    for instance in system.fleet.instances("ratelimit"):
        system.fleet.start(instance)
    for instance in system.fleet.instances("ratelimit"):
        system.fleet.wait_ready(instance)


def test_sixty_a_minute_holds_when_a_client_fires_at_every_instance_at_once(
    system: System,
) -> None:
    """R1, R4: never more than the limit in a window, whatever the spread."""
    token, _ = new_token(system)  # one request spent here

    answers = fire(system.apis(), bearer(token), 120)

    assert statuses(answers) == {200: 59, 429: 61}
    assert all(a.headers["retry-after"] for a in answers if a.status_code == 429)
    admitted = [a for a in answers if a.status_code == 200]
    assert all(a.headers["ratelimit-policy"] == '"global";q=60;w=60' for a in admitted)


def test_a_thousand_a_minute_per_address_stays_within_one_percent(system: System) -> None:
    """R4, R6: a large limit, requests without credentials counted per client address."""
    client = {"X-Forwarded-For": f"198.51.100.{uuid.uuid4().int % 250 + 1}"}

    asks = {
        o: system.metric("api", "api_rate_lease_asks_total", outcome=o)
        for o in ("granted", "empty", "timeout")
    }

    answers = fire(system.apis(), client, 1200)

    counted = statuses(answers)
    asks = {
        o: system.metric("api", "api_rate_lease_asks_total", outcome=o) - n for o, n in asks.items()
    }
    assert set(counted) == {401, 429}
    assert 950 <= counted[401] <= 1000, asks  # never over; a little stranded at most


def test_the_lockout_reaches_every_instance_with_the_true_remaining_time(system: System) -> None:
    """R3, R5: breached on one instance, refused on all four, Retry-After counting down."""
    token, _ = new_token(system)
    first = system.apis()[0]
    fire([first], bearer(token), 61)

    def retry_afters() -> list[int]:
        answers = [httpx.get(f"{a.url}/v0/me", headers=bearer(token)) for a in system.apis()]
        assert {a.status_code for a in answers} == {429}
        return [int(a.headers["retry-after"]) for a in answers]

    wait_for(lambda: all(a.status_code == 429 for a in fire(system.apis(), bearer(token), 4)))
    now = retry_afters()
    time.sleep(2.0)
    later = retry_afters()

    assert all(55 <= r <= 60 for r in now)
    assert all(1 <= n - lat <= 3 for n, lat in zip(now, later, strict=True))


@pytest.mark.usefixtures("ratelimit_restored")
def test_killing_the_owner_mid_window_loses_no_count(system: System) -> None:
    """R4 with a crash: the survivor replays the partition; the window's count holds."""
    token, account = new_token(system)
    before = fire(system.apis(), bearer(token), 29)
    owner = owner_of(system, f"global:acct:{account}")
    assert owner is not None
    survivor = next(r for r in system.fleet.instances("ratelimit") if r != owner)
    partitions_before = system.instance_metric(survivor, "ratelimit_owned_partitions")

    system.fleet.kill(owner)
    wait_for(lambda: owner_of(system, f"global:acct:{account}") == survivor)
    wait_for(lambda: httpx.get(f"{survivor.url}/readyz").status_code == 200)
    after = fire(system.apis(), bearer(token), 60)

    assert statuses(before) == {200: 29}
    assert statuses(after) == {200: 30, 429: 30}  # 1 + 29 + 30 = the limit, not a request more
    assert system.instance_metric(survivor, "ratelimit_owned_partitions") > partitions_before


@pytest.mark.usefixtures("ratelimit_restored")
def test_with_ratelimit_unreachable_the_api_falls_back_and_enforcement_returns(
    system: System,
) -> None:
    """R8: fail-open fallback while no owner answers, counted in metrics; then exact again."""
    token, _ = new_token(system)
    api = system.apis()[0]
    fallbacks = system.instance_metric(api, "api_rate_fallback_total", policy="global")
    for instance in system.fleet.instances("ratelimit"):
        system.fleet.stop(instance)

    during = fire([api], bearer(token), 10)

    assert statuses(during) == {200: 10}  # fail-open: the local window admits
    fell_back = system.instance_metric(api, "api_rate_fallback_total", policy="global") - fallbacks
    assert fell_back >= 1
    for instance in system.fleet.instances("ratelimit"):
        system.fleet.start(instance)
    for instance in system.fleet.instances("ratelimit"):
        system.fleet.wait_ready(instance)
    time.sleep(2.5)  # the key's fallback period (AUTHBUS_API_RATE__FALLBACK_S) ends

    after = fire([api], bearer(token), 70)

    # The owner's window is the one from before the outage: it counts the first request and
    # those admitted from the slice this instance still held, not what fallback admitted.
    counted = 1 + 10 - int(fell_back)
    assert statuses(after) == {200: 60 - counted, 429: 10 + counted}
