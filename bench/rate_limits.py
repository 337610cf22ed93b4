"""Rate limits with quota leases (ADR 0010): what the check costs, and how close to the limit the
real system admits.

Run from the repository root (a few minutes on 2 cores):

    .venv/bin/python -m bench.rate_limits [--limits 60,1000,10000] [--instances 1,2,4]
        [--keep] [--skip-accuracy]

Part 1, the hot path (no infrastructure): the cost of one rate check when the leases have
units, in microseconds per call on this machine, next to what no check can beat. Each figure is
the median of 7 `timeit` repeats of about 0.1 s each (`perf_counter_ns` for the awaited ones;
the garbage collector is off while timing, as `timeit` does). Every row includes one Python
call, the baseline's too, so `x base` compares like with like. The rows:
- `baseline: dict + decrement`: a dict lookup and an int decrement, the least a local counter
  costs; `(2 keys)`: the same twice, the least for a request that two policies apply to (R2).
- `Quota.decide`: the core (`authbus_api.core.quota`) deciding one request whose lease has
  units: a lookup per policy, one unit taken from each, the header state built (R5). The lease
  was granted once, far more units than the timing spends, so no ask is ever due.
- `utcnow()`: the clock read that `RateLimiter.admit` adds to every decision.
- `await baseline`: awaiting a coroutine that does the baseline's work (what any awaited check
  costs); `RateLimiter.admit`: the async half on its fast path (units there: it awaits nothing),
  awaited in one event loop; it reads the clock and calls `Quota.decide`. A stub port counts
  lease asks: the fast path must make none (the run fails otherwise).

Part 2, accuracy (`--skip-accuracy` skips it): admitted against allowed, on the real system.
The bench starts a Kafka broker (`authbus_dev.infra`, on free loopback ports in a temp folder)
and 2 real ratelimit processes (`authbus_dev.fleet`, a fresh topic prefix); the api instances
are in this process, wired as `authbus_api.runner` wires them: each its own producer, reply
inbox (`RpcClient`), `KafkaLeases` (ask timeout: the api's default, 200 ms), `Quota` (the api's
default margin, release and fallback settings) and `RateLimiter` with its background `run()`
(top-ups, releases). A few seconds of lease asks on throwaway keys warm the broker and the
owners up first (not counted; their round trips are printed). Then for each limit L
(`--limits`, per minute) and instance count N (`--instances`): a fresh subject, the policy
`RatePolicy(LeasePolicy("bench", limit=L, window_s=60, lockout_s=60), scope="account")`, and
max(2 L, 200) requests sent round-robin over the N instances, 32 in flight, each
`await limiter.admit([Need(policy, subject)])`. All of it, stopped at the end, on an error and
on Ctrl-C; the temp folder (services' logs) is deleted unless `--keep` or after a failure.

How to read the accuracy table:
- `sent`: requests made; `admitted`: `Admit` verdicts, those from the local fallback window
  (R8, an ask unanswered in 200 ms) included; `fallback`: how many of them came from it (0
  while the owners answer); `refused`: 429 (`Refuse`); `503`: `Unavailable` (a fail-closed
  policy in fallback; this policy is fail-open, so 0).
- `allowed`: the limit L. `over %` = max(0, admitted - L) / L: more than the limit, which the
  bound of ADR 0010 (R4) rules out while the owners answer. `under %` = max(0, L - admitted) / L:
  requests refused although the window had room, the price of slices.
- `received`: units the owners granted to these instances for the key (replies that came in
  time); `unspent`: units still held at the end of the run (received - released - admitted from
  leases): slices stranded at an instance whose clients stopped sending; they go back after the
  release interval (1 s idle), too late for this run. `under %` is mostly this plus what the
  owner still had when the last requests were refused.
- `asks`: lease asks sent for the key (blocking and top-ups); `t/o`: those unanswered in time.
- `seconds`: the run of the requests; it must stay well under the 60 s window (a row that takes
  longer says so: part of it may have been in the next window).
- `check`: `ok` when admitted <= L, else `OVER`. The bound is exact (no tolerance): while the
  owners answer, N instances together admit at most L.
Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import shlex
import statistics
import sys
import time
import timeit
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import CollectorRegistry

from authbus_api.core.quota import Admit, Need, Quota, RatePolicy, Refuse, Unavailable
from authbus_api.leases import KafkaLeases
from authbus_api.metrics import ApiMetrics
from authbus_api.rate import RateLimiter
from authbus_api.settings import RateSettings
from authbus_dev import infra
from authbus_dev.fleet import Fleet, Ports
from authbus_dev.ports import free_port_run
from authbus_shared import logs
from authbus_shared.contracts import topics
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.contracts.ratelimit import (
    AcquireLease,
    LeaseGranted,
    LeasePolicy,
    ReleaseLease,
)
from authbus_shared.kafka.admin import ensure_topics, resolve
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import RpcClient
from authbus_shared.settings import KafkaSettings, LogSettings

from .harness import local_infrastructure, running
from .verify_over_kafka.console import cores, cpu_model, load_average, progress
from .verify_over_kafka.interrupts import catch_interrupts, run_async

MODULE = "bench.rate_limits"
REPEATS = 7
REPEAT_S = 0.1  # about this long per timed repeat
WINDOW_S = 60
IN_FLIGHT = 32
MIN_SENT = 200
WARMUP_S = 5.0
SLOW_RUN_S = 50.0  # a row running longer may have crossed into the next window
RATE = RateSettings()  # the api's defaults


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


# --- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    limits: tuple[int, ...]
    instances: tuple[int, ...]
    keep: bool
    skip_accuracy: bool


def _ints(low: int, high: int) -> Callable[[str], tuple[int, ...]]:
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
        if not values or any(not low <= v <= high for v in values):
            raise argparse.ArgumentTypeError(f"want integers in {low}..{high}: {text!r}")
        return values

    return parse


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="The rate check's cost, and admitted vs allowed on real Kafka and ratelimit.",
    )
    parser.add_argument(
        "--limits",
        type=_ints(1, 100_000),
        default=(60, 1000, 10_000),
        help="limits per minute, comma separated (default 60,1000,10000)",
    )
    parser.add_argument(
        "--instances",
        type=_ints(1, 16),
        default=(1, 2, 4),
        help="api instance counts, comma separated (default 1,2,4)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs)")
    parser.add_argument(
        "--skip-accuracy", action="store_true", help="only the hot path (no infrastructure)"
    )
    args = parser.parse_args(list(argv))
    return Options(args.limits, args.instances, args.keep, args.skip_accuracy)


def header(argv: Sequence[str]) -> None:
    lines = [
        f"rate limits with quota leases (ADR 0010), {cores()} cores",
        f"command: {shlex.join(['.venv/bin/python', '-m', MODULE, *argv])}",
        f"machine: {cores()} cores usable ({os.cpu_count()} online), {cpu_model()}; "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}; "
        f"Kafka {infra.KAFKA_VERSION}; load average at start {load_average()}",
    ]
    print("\n".join(lines), flush=True)


# --- part 1: the hot path ------------------------------------------------------------------


def _number(once_s: float) -> int:
    return max(1, int(REPEAT_S / max(once_s, 1e-8)))


def per_call_ns(fn: Callable[[], object]) -> float:
    """The median over REPEATS of the time per call, in ns (timeit: gc off while timing)."""
    number = _number(timeit.timeit(fn, number=1000) / 1000)
    return statistics.median(timeit.repeat(fn, number=number, repeat=REPEATS)) / number * 1e9


async def per_await_ns(fn: Callable[[], Awaitable[object]]) -> float:
    """The same for an awaited call, timed in the running event loop."""

    async def timed(number: int) -> int:
        gc_was = gc.isenabled()
        gc.disable()
        try:
            started = time.perf_counter_ns()
            for _ in range(number):
                await fn()
            return time.perf_counter_ns() - started
        finally:
            if gc_was:
                gc.enable()

    number = _number(await timed(1000) / 1000 / 1e9)
    samples = [await timed(number) for _ in range(REPEATS)]
    return statistics.median(samples) / number


@dataclass
class StubLeases:
    """The port on the fast path: never asked (counted, so the run can tell)."""

    asks: int = 0

    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        self.asks += 1
        raise TimeoutError("the fast path asked an owner")

    async def release(self, release: ReleaseLease) -> None:
        return None


def policy(name: str, limit: int) -> RatePolicy:
    return RatePolicy(
        LeasePolicy(name=name, limit=limit, window_s=WINDOW_S, lockout_s=WINDOW_S),
        scope="account",
    )


def funded_quota(instance: str, needs: Sequence[Need], units: int) -> Quota:
    """A Quota whose leases for `needs` hold `units` each, for an hour from now."""
    quota = Quota(
        instance,
        margin=timedelta(milliseconds=RATE.lease_margin_ms),
        release_idle=timedelta(milliseconds=RATE.release_idle_ms),
        fallback_for=timedelta(seconds=RATE.fallback_s),
    )
    now = utcnow()
    for need in needs:
        decision = quota.decide([need], now)
        if isinstance(decision, Admit | Refuse | Unavailable):
            raise BenchError(f"a new quota decided without asking: {decision!r}")
        for ask in decision.asks:
            grant = LeaseGranted(
                key=ask.key,
                granted=units,
                window_start=now,
                window_end=now + timedelta(hours=1),
                remaining=0,
            )
            if not quota.granted(ask, grant, now):
                raise BenchError("the grant gave no spendable units")
    return quota


@dataclass(frozen=True)
class CostRow:
    name: str
    ns: float


def print_costs(rows: Sequence[CostRow]) -> None:
    base = rows[0].ns
    print(
        f"\nhot path: per call, median of {REPEATS} repeats of ~{REPEAT_S:g} s "
        "(every row includes one Python call)",
        flush=True,
    )
    print(f"{'':<48}{'us/call':>9}{'x base':>9}", flush=True)
    for row in rows:
        print(f"{row.name:<48}{row.ns / 1000:>9.3f}{row.ns / base:>9.1f}", flush=True)


def sync_costs() -> list[CostRow]:
    subject = "acct:hot"
    one = [Need(policy("hot-a", 100_000_000), subject)]
    two = [*one, Need(policy("hot-b", 100_000_000), subject)]
    units = 10**9  # far more than the timing spends (a few million calls)
    quota = funded_quota("bench-hot", two, units)
    now = utcnow()
    counts = {one[0].key: units, two[1].key: units}
    key_a, key_b = one[0].key, two[1].key

    def baseline() -> None:
        counts[key_a] -= 1

    def baseline_two() -> None:
        counts[key_a] -= 1
        counts[key_b] -= 1

    if not isinstance(quota.decide(one, now), Admit):
        raise BenchError("Quota.decide is not on its fast path")
    rows = [
        CostRow("baseline: dict + decrement", per_call_ns(baseline)),
        CostRow("baseline: dict + decrement (2 keys)", per_call_ns(baseline_two)),
        CostRow("Quota.decide, 1 policy", per_call_ns(lambda: quota.decide(one, now))),
        CostRow("Quota.decide, 2 policies (R2)", per_call_ns(lambda: quota.decide(two, now))),
        CostRow("utcnow() (the clock read admit adds)", per_call_ns(utcnow)),
    ]
    if not isinstance(quota.decide(two, now), Admit):
        raise BenchError("Quota.decide ran out of units while timing")
    return rows


async def async_costs() -> list[CostRow]:
    subject = "acct:hot"
    one = [Need(policy("hot-a", 100_000_000), subject)]
    two = [*one, Need(policy("hot-b", 100_000_000), subject)]
    units = 10**9
    stub = StubLeases()
    limiter = RateLimiter(funded_quota("bench-hot-async", two, units), stub)
    counts = {one[0].key: units}
    key_a = one[0].key

    async def baseline() -> None:
        counts[key_a] -= 1

    async def admit_one() -> object:
        return await limiter.admit(one)

    async def admit_two() -> object:
        return await limiter.admit(two)

    rows = [
        CostRow("await baseline (a coroutine: dict + decrement)", await per_await_ns(baseline)),
        CostRow("RateLimiter.admit, 1 policy (fast path)", await per_await_ns(admit_one)),
        CostRow("RateLimiter.admit, 2 policies (R2)", await per_await_ns(admit_two)),
    ]
    last = await limiter.admit(two)
    if stub.asks or not isinstance(last, Admit) or last.fallback:
        raise BenchError(f"RateLimiter.admit left its fast path ({stub.asks} asks, {last!r})")
    return rows


def hot_path() -> None:
    progress("timing the hot path")
    rows = sync_costs()
    rows += run_async(async_costs())
    print_costs(rows)


# --- part 2: accuracy against the real system ----------------------------------------------


@dataclass
class CountingLeases:
    """The real port, counting per key what the limiter asked for and got."""

    inner: KafkaLeases
    asks: dict[str, int] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    released: dict[str, int] = field(default_factory=dict)

    async def acquire(self, ask: AcquireLease) -> LeaseGranted:
        self.asks[ask.key] = self.asks.get(ask.key, 0) + 1
        try:
            reply = await self.inner.acquire(ask)
        except TimeoutError:
            self.timeouts[ask.key] = self.timeouts.get(ask.key, 0) + 1
            raise
        self.received[ask.key] = self.received.get(ask.key, 0) + reply.granted
        return reply

    async def release(self, release: ReleaseLease) -> None:
        self.released[release.key] = self.released.get(release.key, 0) + release.unused
        await self.inner.release(release)


@dataclass
class Api:
    """One in-process api instance's rate limiting, wired as `authbus_api.runner` does."""

    name: str
    leases: CountingLeases
    limiter: RateLimiter
    work: asyncio.Task[None]

    def check_alive(self) -> None:
        if self.work.done():
            error = None if self.work.cancelled() else self.work.exception()
            raise BenchError(f"{self.name}: the limiter's background work ended: {error!r}")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def start_api(stack: contextlib.AsyncExitStack, kafka: KafkaSettings, name: str) -> Api:
    metrics = ApiMetrics(CollectorRegistry())
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
    leases = CountingLeases(
        KafkaLeases(
            rpc,
            publisher,
            resolve(topics.RATELIMIT_LEASES, kafka).name,
            name,
            timedelta(milliseconds=RATE.ask_timeout_ms),
            metrics,
        )
    )
    quota = Quota(
        name,
        margin=timedelta(milliseconds=RATE.lease_margin_ms),
        release_idle=timedelta(milliseconds=RATE.release_idle_ms),
        fallback_for=timedelta(seconds=RATE.fallback_s),
    )
    limiter = RateLimiter(quota, leases)
    work = asyncio.create_task(limiter.run(), name=f"rate-limiter-{name}")
    stack.push_async_callback(_cancel, work)
    return Api(name, leases, limiter, work)


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
    timeouts = [0]
    asks = [0]

    async def asking(api: Api) -> None:
        i = 0
        while time.monotonic() < deadline:
            subject = f"acct:warm-{run}-{api.name}-{i}"
            i += 1
            ask = AcquireLease(
                key=f"{warm.name}:{subject}",
                subject=subject,
                policy=warm,
                instance=api.name,
                want=1,
            )
            sent = time.perf_counter()
            asks[0] += 1
            try:
                await api.leases.inner.acquire(ask)
            except TimeoutError:
                timeouts[0] += 1
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
        f"\nwarm-up: {asks[0]} lease asks in {seconds:g} s from {len(apis)} instances "
        f"(one at a time each), {timeouts[0]} unanswered in {RATE.ask_timeout_ms} ms; "
        f"round trip over the last half: {rtt}",
        flush=True,
    )


@dataclass
class Tally:
    admitted: int = 0
    fallback: int = 0
    refused: int = 0
    unavailable: int = 0
    errors: int = 0
    first_error: str = ""


async def burst(apis: Sequence[Api], needs: Sequence[Need], total: int) -> Tally:
    """`total` requests, request i to instance i mod N, IN_FLIGHT at a time (each worker
    yields to the others between its requests, as separate HTTP requests would)."""
    tally = Tally()
    order = iter(range(total))  # shared by the workers: each request is made once

    async def worker() -> None:
        for i in order:
            # A request on the fast path awaits nothing: without this yield one worker would
            # make every request in a row, and IN_FLIGHT would only hold for the slow ones.
            await asyncio.sleep(0)
            try:
                decision = await apis[i % len(apis)].limiter.admit(needs)
            except Exception as exc:  # counted and shown: the row must still finish
                tally.errors += 1
                tally.first_error = tally.first_error or repr(exc)
                continue
            if isinstance(decision, Admit):
                tally.admitted += 1
                tally.fallback += 1 if decision.fallback else 0
            elif isinstance(decision, Refuse):
                tally.refused += 1
            else:
                tally.unavailable += 1

    await asyncio.gather(*(worker() for _ in range(min(IN_FLIGHT, total))))
    return tally


ACCURACY_COLUMNS = (
    f"{'limit/min':>9}{'api':>5}{'sent':>7}{'admitted':>9}{'allowed':>8}{'over %':>8}"
    f"{'under %':>8}{'fallback':>9}{'refused':>8}{'503':>5}{'received':>9}{'unspent':>8}"
    f"{'asks':>6}{'t/o':>5}{'seconds':>8}  check"
)


async def accuracy_row(apis: Sequence[Api], limit: int) -> list[str]:
    """One (limit, instances) row; returns its notes."""
    rate = policy("bench", limit)
    subject = f"acct:bench-{uuid.uuid4().hex[:12]}"
    needs = [Need(rate, subject)]
    key = needs[0].key
    sent = max(2 * limit, MIN_SENT)
    started = time.perf_counter()
    tally = await burst(apis, needs, sent)
    seconds = time.perf_counter() - started
    for api in apis:
        api.check_alive()

    def total(of: Callable[[CountingLeases], dict[str, int]]) -> int:
        return sum(of(api.leases).get(key, 0) for api in apis)

    received = total(lambda c: c.received)
    released = total(lambda c: c.released)
    unspent = received - released - (tally.admitted - tally.fallback)
    over = max(0, tally.admitted - limit) / limit * 100
    under = max(0, limit - tally.admitted) / limit * 100
    check = "ok" if tally.admitted <= limit else "OVER"
    print(
        f"{limit:>9}{len(apis):>5}{sent:>7}{tally.admitted:>9}{limit:>8}{over:>8.2f}"
        f"{under:>8.2f}{tally.fallback:>9}{tally.refused:>8}{tally.unavailable:>5}"
        f"{received:>9}{unspent:>8}{total(lambda c: c.asks):>6}"
        f"{total(lambda c: c.timeouts):>5}{seconds:>8.2f}  {check}",
        flush=True,
    )
    notes = []
    where = f"limit {limit}, {len(apis)} api"
    if tally.errors:
        notes.append(f"{where}: {tally.errors} admit calls raised, first: {tally.first_error}")
    if seconds > SLOW_RUN_S:
        notes.append(f"{where}: {seconds:.1f} s, part of it may be in the next window")
    if released:
        notes.append(f"{where}: {released} units released during the run")
    return notes


async def measure(kafka: KafkaSettings, opts: Options, tag: str) -> list[str]:
    specs = (topics.REPLIES, topics.RATELIMIT_LEASES, topics.RATELIMIT_DECISIONS)
    await ensure_topics(kafka, [resolve(spec, kafka) for spec in specs])
    notes: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        count = max(opts.instances)
        progress(f"starting {count} in-process api instances")
        apis = [await start_api(stack, kafka, f"bench-api-{i}-{tag}") for i in range(count)]
        progress(f"warming up ({WARMUP_S:g} s of lease asks)")
        await warm_up(apis, WARMUP_S)
        print(
            f"\naccuracy: {WINDOW_S} s windows, lockout {WINDOW_S} s, 2 ratelimit owners, "
            f"requests round-robin over the api instances, {IN_FLIGHT} in flight; "
            f"ask timeout {RATE.ask_timeout_ms} ms",
            flush=True,
        )
        print(ACCURACY_COLUMNS, flush=True)
        for limit in opts.limits:
            for n in opts.instances:
                progress(f"limit {limit}/min over {n} api instances")
                notes += await accuracy_row(apis[:n], limit)
        progress("stopping the in-process api instances")
    return notes


def accuracy(opts: Options) -> None:
    # ratelimit needs no database
    with local_infrastructure("authbus-bench-rate-", keep=opts.keep, mongo=False) as cfg:
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
            notes = run_async(measure(kafka, opts, tag))
        for note in notes:
            print(f"note: {note}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(args)
    quiet = LogSettings(level="WARNING", format="console")
    logs.configure(quiet, service="bench", instance="bench", stream=sys.stderr)
    catch_interrupts()
    started = time.monotonic()
    header(args)
    try:
        hot_path()
        if not opts.skip_accuracy:
            accuracy(opts)
    except KeyboardInterrupt:
        progress("interrupted; everything started was stopped")
        return 130
    except BenchError as exc:
        progress(f"failed: {exc}")
        return 1
    print(f"\ntook {time.monotonic() - started:.0f} s; load average at end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
