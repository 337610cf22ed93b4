"""Part 2 of `bench.rate_limits` (see its docstring for how to run and read it): admitted
against allowed on the real system — a real broker, 2 real ratelimit processes, api instances
in this process wired as `authbus_api.runner` wires them — with the false refusals counted.

A false refusal is a 429 decided while the global admitted count of the key's window (all
instances) was under the limit. The instances share this event loop, so the order of their
verdicts is exact: the count at a refusal is the count of the verdicts returned before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import CollectorRegistry

from authbus_api.core.quota import Quota
from authbus_api.core.rates import Admit, Need, RatePolicy, Refuse
from authbus_api.core.verdict_cache import VerdictCache
from authbus_api.leases import KafkaLeases
from authbus_api.metrics import ApiMetrics
from authbus_api.rate import RateLimiter
from authbus_api.settings import RateSettings
from authbus_api.views import Views, holder_name
from authbus_dev.fleet import Fleet, Ports
from authbus_dev.ports import free_port_run
from authbus_shared.authz_client import AuthzKeys
from authbus_shared.contracts import topics
from authbus_shared.contracts.ratelimit import AcquireLease, LeaseGranted, LeasePolicy, ReleaseLease
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.kafka.consumers import BroadcastReader
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import RpcClient
from authbus_shared.settings import KafkaSettings

from .harness import local_infrastructure, running
from .verify_over_kafka.console import progress
from .verify_over_kafka.interrupts import run_async

WINDOW_S = 60
IN_FLIGHT = 32
MIN_SENT = 200
WARMUP_S = 5.0
SLOW_RUN_S = 50.0  # a row running longer may have crossed into the next window
UNEVEN = 0.8  # the share of the traffic on instance 0 in an "uneven" row
RATE = RateSettings()  # the api's defaults


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


def policy(name: str, limit: int) -> RatePolicy:
    return RatePolicy(
        LeasePolicy(name=name, limit=limit, window_s=WINDOW_S, lockout_s=WINDOW_S),
        scope="account",
    )


@dataclass
class CountingLeases:
    """The real port, counting per key the asks the limiter made."""

    inner: KafkaLeases
    asks: dict[str, int] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=dict)

    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        self.asks[ask.key] = self.asks.get(ask.key, 0) + 1
        try:
            return await self.inner.acquire(ask)
        except TimeoutError:
            self.timeouts[ask.key] = self.timeouts.get(ask.key, 0) + 1
            raise

    async def release(self, release: ReleaseLease) -> None:
        await self.inner.release(release)


@dataclass
class Api:
    """One in-process api instance's rate limiting, wired as `authbus_api.runner` does."""

    name: str
    leases: CountingLeases
    limiter: RateLimiter
    registry: CollectorRegistry
    work: asyncio.Task[None]

    def recalls(self) -> float:
        answered = {"outcome": "answered"}
        return self.registry.get_sample_value("api_rate_recalls_total", answered) or 0.0

    def check_alive(self) -> None:
        if self.work.done():
            error = None if self.work.cancelled() else self.work.exception()
            raise BenchError(f"{self.name}: the limiter's background work ended: {error!r}")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def start_api(stack: contextlib.AsyncExitStack, kafka: KafkaSettings, name: str) -> Api:
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    publisher = Publisher(kafka, client_id=name, metrics=metrics.kafka)
    await publisher.start()
    stack.push_async_callback(publisher.stop)
    rpc = RpcClient(
        kafka,
        publisher=publisher,
        reply_topic=resolve(topics.REPLIES, kafka),
        instance_id=name,
        metrics=metrics.kafka,
        client_id=name,
    )
    await rpc.start()
    stack.push_async_callback(rpc.stop)
    timeout = timedelta(milliseconds=RATE.ask_timeout_ms)
    leases_topic = resolve(topics.RATELIMIT_LEASES, kafka).name
    leases = CountingLeases(KafkaLeases(rpc, publisher, leases_topic, name, timeout, metrics))
    quota = Quota(
        holder_name(name),
        margin=timedelta(milliseconds=RATE.lease_margin_ms),
        release_idle=timedelta(milliseconds=RATE.release_idle_ms),
        fallback_for=timedelta(seconds=RATE.fallback_s),
        ask_budget=timeout,
    )
    cache = VerdictCache(max_entries=1, ttl=timedelta(1), negative_ttl=timedelta(1))
    views = Views(cache, AuthzKeys(), quota, metrics)
    reader = BroadcastReader(
        kafka,
        topics=[resolve(topics.RATELIMIT_DECISIONS, kafka).name],
        handler=views.on_decision,
        metrics=metrics.kafka,
        client_id=name,
        start_at="end",
    )
    await reader.start()
    stack.push_async_callback(reader.stop)
    limiter = RateLimiter(quota, leases)
    work = asyncio.create_task(limiter.run(), name=f"rate-limiter-{name}")
    stack.push_async_callback(_cancel, work)
    return Api(name, leases, limiter, registry, work)


def _percentile(sorted_ms: Sequence[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(p / 100 * len(sorted_ms)))]


async def warm_up(apis: Sequence[Api], seconds: float) -> None:
    """Lease asks on throwaway keys (spread over both owners' partitions) from every instance,
    one at a time each; prints the round trips of the second half."""
    warm = LeasePolicy(name="warmup", limit=1_000_000, window_s=WINDOW_S)
    run = uuid.uuid4().hex[:8]
    started = time.monotonic()
    half, deadline = started + seconds / 2, started + seconds
    late: list[float] = []
    timeouts = asks = 0

    async def asking(api: Api) -> None:
        nonlocal timeouts, asks
        i = 0
        while time.monotonic() < deadline:
            subject = f"acct:warm-{run}-{api.name}-{i}"
            i += 1
            key = f"{warm.name}:{subject}"
            ask = AcquireLease(key=key, subject=subject, policy=warm, instance=api.name, want=1)
            sent = time.perf_counter()
            asks += 1
            try:
                await api.leases.inner.acquire(ask)
            except TimeoutError:
                timeouts += 1
                continue
            if time.monotonic() >= half:
                late.append((time.perf_counter() - sent) * 1000)

    await asyncio.gather(*(asking(api) for api in apis))
    late.sort()
    rtt = (
        f"p50 {_percentile(late, 50):.2f} ms, p99 {_percentile(late, 99):.2f} ms, "
        f"max {late[-1]:.2f} ms"
        if late
        else "none answered"
    )
    print(
        f"\nwarm-up: {asks} lease asks in {seconds:g} s from {len(apis)} instances "
        f"(one at a time each), {timeouts} unanswered in {RATE.ask_timeout_ms} ms; "
        f"round trip over the last half: {rtt}",
        flush=True,
    )


@dataclass
class Tally:
    admitted: int = 0  # so far, every instance: the window's global count
    fallback: int = 0
    refused: int = 0
    false_refusals: int = 0  # refused while `admitted` was under the limit
    unavailable: int = 0
    errors: int = 0
    first_error: str = ""


def targets(apis: Sequence[Api], total: int, spread: str) -> list[Api]:
    """Which instance each request goes to: round-robin, or 80% on the first (seeded)."""
    if spread == "even" or len(apis) == 1:
        return [apis[i % len(apis)] for i in range(total)]
    rng = random.Random(total)
    return [apis[0] if rng.random() < UNEVEN else rng.choice(apis[1:]) for _ in range(total)]


async def burst(to: Sequence[Api], needs: Sequence[Need], limit: int) -> Tally:
    """Request i to `to[i]`, IN_FLIGHT at a time (each worker yields to the others between
    its requests, as separate HTTP requests would)."""
    tally = Tally()
    order = iter(to)  # shared by the workers: each request is made once

    async def worker() -> None:
        for api in order:
            # A request on the fast path awaits nothing: without this yield one worker would
            # make every request in a row, and IN_FLIGHT would only hold for the slow ones.
            await asyncio.sleep(0)
            try:
                decision = await api.limiter.admit(needs)
            except Exception as exc:  # counted and shown: the row must still finish
                tally.errors += 1
                tally.first_error = tally.first_error or repr(exc)
                continue
            if isinstance(decision, Admit):
                tally.admitted += 1
                tally.fallback += 1 if decision.fallback else 0
            elif isinstance(decision, Refuse):
                tally.refused += 1
                tally.false_refusals += 1 if tally.admitted < limit else 0
            else:
                tally.unavailable += 1

    await asyncio.gather(*(worker() for _ in range(min(IN_FLIGHT, len(to)))))
    return tally


ACCURACY_COLUMNS = (
    f"{'limit/min':>9}{'api':>4}{'spread':>7}{'sent':>7}{'admitted':>9}{'allowed':>8}"
    f"{'over':>5}{'false 429':>10}{'fallback':>9}{'refused':>8}{'503':>4}{'asks':>6}"
    f"{'asks/adm':>9}{'t/o':>4}{'recalls':>8}{'seconds':>8}  check"
)


async def accuracy_row(apis: Sequence[Api], limit: int, spread: str) -> list[str]:
    """One (limit, spread, instances) row; returns its notes."""
    needs = [Need(policy("bench", limit), f"acct:bench-{uuid.uuid4().hex[:12]}")]
    key = needs[0].key
    sent = max(2 * limit, MIN_SENT)
    recalls = sum(api.recalls() for api in apis)
    started = time.perf_counter()
    tally = await burst(targets(apis, sent, spread), needs, limit)
    seconds = time.perf_counter() - started
    for api in apis:
        api.check_alive()
    asks = sum(api.leases.asks.get(key, 0) for api in apis)
    timeouts = sum(api.leases.timeouts.get(key, 0) for api in apis)
    recalls = sum(api.recalls() for api in apis) - recalls
    over = max(0, tally.admitted - limit)
    exact = tally.admitted == limit and not tally.false_refusals
    check = "ok" if exact else ("OVER" if over else "UNDER")
    print(
        f"{limit:>9}{len(apis):>4}{spread:>7}{sent:>7}{tally.admitted:>9}{limit:>8}{over:>5}"
        f"{tally.false_refusals:>10}{tally.fallback:>9}{tally.refused:>8}{tally.unavailable:>4}"
        f"{asks:>6}{asks / max(1, tally.admitted):>9.3f}{timeouts:>4}{recalls:>8.0f}"
        f"{seconds:>8.2f}  {check}",
        flush=True,
    )
    notes = []
    where = f"limit {limit}, {len(apis)} api, {spread}"
    if tally.errors:
        notes.append(f"{where}: {tally.errors} admit calls raised, first: {tally.first_error}")
    if seconds > SLOW_RUN_S:
        notes.append(f"{where}: {seconds:.1f} s, part of it may be in the next window")
    return notes


async def measure(
    kafka: KafkaSettings,
    limits: Sequence[int],
    instances: Sequence[int],
    spreads: Sequence[str],
    tag: str,
) -> list[str]:
    specs = (topics.REPLIES, topics.RATELIMIT_LEASES, topics.RATELIMIT_DECISIONS)
    await ensure_topics(kafka, [resolve(spec, kafka) for spec in specs])
    notes: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        count = max(instances)
        progress(f"starting {count} in-process api instances")
        apis = [await start_api(stack, kafka, f"bench-api-{i}-{tag}") for i in range(count)]
        progress(f"warming up ({WARMUP_S:g} s of lease asks)")
        await warm_up(apis, WARMUP_S)
        print(
            f"\naccuracy: {WINDOW_S} s windows, lockout {WINDOW_S} s, 2 ratelimit owners, "
            f"{IN_FLIGHT} requests in flight; even: round-robin over the api instances, "
            f"uneven: {UNEVEN:.0%} on one; ask timeout {RATE.ask_timeout_ms} ms",
            flush=True,
        )
        print(ACCURACY_COLUMNS, flush=True)
        for limit in limits:
            for spread in spreads:
                for n in instances:
                    if spread == "uneven" and n == 1:
                        continue  # the same row as "even"
                    progress(f"limit {limit}/min, {spread}, over {n} api instances")
                    notes += await accuracy_row(apis[:n], limit, spread)
        progress("stopping the in-process api instances")
    return notes


def accuracy(
    limits: Sequence[int], instances: Sequence[int], spreads: Sequence[str], *, keep: bool
) -> None:
    # ratelimit needs no database
    with local_infrastructure("authbus-bench-rate-", keep=keep, mongo=False) as cfg:
        tag = uuid.uuid4().hex[:6]
        prefix = f"bench{tag}."
        fleet = Fleet(
            cfg,
            {"ratelimit": 2},
            Ports(ratelimit=free_port_run(2)),
            {"KAFKA__TOPIC_PREFIX": prefix},
        )
        with running(fleet, "2 ratelimit"):
            kafka = KafkaSettings(bootstrap_servers=cfg.bootstrap, topic_prefix=prefix)
            notes = run_async(measure(kafka, limits, instances, spreads, tag))
        for note in notes:
            print(f"note: {note}", flush=True)
