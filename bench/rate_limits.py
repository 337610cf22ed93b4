"""Rate limits with quota leases (ADR 0010): what the check costs, and how close to the limit the
real system admits.

Run from the repository root (a few minutes on 2 cores):

    .venv/bin/python -m bench.rate_limits [--limits 5,60,1000,10000] [--instances 1,2,4]
        [--spreads even,uneven] [--keep] [--skip-accuracy]

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
  lease asks: the fast path must make none (the run fails otherwise). Target: <= 5 us.

Part 2, accuracy (`--skip-accuracy` skips it): admitted against allowed, on the real system.
The bench starts a Kafka broker (`authbus_dev.infra`, on free loopback ports in a temp folder)
and 2 real ratelimit processes (`authbus_dev.fleet`, a fresh topic prefix); the api instances
are in this process, wired as `authbus_api.runner` wires them: each its own producer, reply
inbox (`RpcClient`), `KafkaLeases` (ask timeout: the api's default, 200 ms), `Quota` (the api's
default margin, release and fallback settings, a holder name new per start), `RateLimiter`
with its background `run()` (top-ups, releases, recall answers), and a reader of
`ratelimit.decisions.v1` (`Views.on_decision`: lockouts and recalls). A few seconds of lease
asks on throwaway keys warm the broker and the owners up first (not counted; their round trips
are printed). Then for each limit L (`--limits`, per minute), spread (`--spreads`) and
instance count N (`--instances`): a fresh subject, the policy
`RatePolicy(LeasePolicy("bench", limit=L, window_s=60, lockout_s=60), scope="account")`, and
max(2 L, 200) requests, 32 in flight, each `await limiter.admit([Need(policy, subject)])`;
`even`: request i on instance i mod N; `uneven`: 80% on instance 0, the rest spread at random
over the others (seeded). All of it, stopped at the end, on an error and on Ctrl-C; the temp
folder (services' logs) is deleted unless `--keep` or after a failure.

How to read the accuracy table:
- `sent`: requests made; `admitted`: `Admit` verdicts, those from the local fallback window
  (R8, an ask unanswered in 200 ms) included; `fallback`: how many of them came from it (0
  while the owners answer); `refused`: 429 (`Refuse`; after the breach, the lockout's); `503`:
  `Unavailable` (a fail-closed policy in fallback; this policy is fail-open, so 0).
- `allowed`: the limit L. `over`: max(0, admitted - L), more than the limit, which the bound of
  ADR 0010 rules out while the owners answer. `false 429`: requests refused while the global
  admitted count (all instances, at the moment the refusal was decided: one event loop, so the
  order is exact) was under L — what R9 rules out while every holder answers recalls in time.
- `asks`: lease asks sent for the key (blocking, top-ups and recall retries); `asks/adm`: lease
  round trips per admitted request; `t/o`: asks unanswered in time; `recalls`: recalls the
  instances answered.
- `seconds`: the run of the requests; it must stay well under the 60 s window (a row that takes
  longer says so: part of it may have been in the next window).
- `check`: `ok` when admitted = L and no false 429, `OVER` or `UNDER` otherwise.
Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shlex
import statistics
import sys
import time
import timeit
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from authbus_api.core.quota import Quota
from authbus_api.core.rates import Admit, Need, Refuse, Unavailable
from authbus_api.rate import RateLimiter
from authbus_dev import infra
from authbus_shared import logs
from authbus_shared.contracts.envelope import utcnow
from authbus_shared.contracts.ratelimit import AcquireLease, LeaseGranted, ReleaseLease
from authbus_shared.settings import LogSettings

from .rate_accuracy import RATE, BenchError, accuracy, policy
from .verify_over_kafka.console import cores, cpu_model, load_average, progress
from .verify_over_kafka.interrupts import catch_interrupts, run_async

MODULE = "bench.rate_limits"
REPEATS = 7
REPEAT_S = 0.1  # about this long per timed repeat
TARGET_US = 5.0  # the hot path's budget per rate check (issue #9)


# --- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    limits: tuple[int, ...]
    instances: tuple[int, ...]
    spreads: tuple[str, ...]
    keep: bool
    skip_accuracy: bool


SPREADS = ("even", "uneven")


def _spreads(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values or any(v not in SPREADS for v in values):
        raise argparse.ArgumentTypeError(f"want some of {','.join(SPREADS)}: {text!r}")
    return values


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
        default=(5, 60, 1000, 10_000),
        help="limits per minute, comma separated (default 5,60,1000,10000)",
    )
    parser.add_argument(
        "--instances",
        type=_ints(1, 16),
        default=(1, 2, 4),
        help="api instance counts, comma separated (default 1,2,4)",
    )
    parser.add_argument(
        "--spreads",
        type=_spreads,
        default=SPREADS,
        help="even (round-robin), uneven (80%% on one instance); default both",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs)")
    parser.add_argument(
        "--skip-accuracy", action="store_true", help="only the hot path (no infrastructure)"
    )
    args = parser.parse_args(list(argv))
    return Options(args.limits, args.instances, args.spreads, args.keep, args.skip_accuracy)


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
    admit = next(r for r in rows if r.name.startswith("RateLimiter.admit, 1 policy"))
    verdict = "ok" if admit.ns / 1000 <= TARGET_US else "OVER"
    print(
        f"RateLimiter.admit, 1 policy: {admit.ns / 1000:.3f} us, target <= {TARGET_US:g} us: "
        f"{verdict}",
        flush=True,
    )


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
            accuracy(opts.limits, opts.instances, opts.spreads, keep=opts.keep)
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
