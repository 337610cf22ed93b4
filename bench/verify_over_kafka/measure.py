"""One row of the table: a warm-up, a measured stretch at one load, CPU and authz's metrics
read around it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from authbus_dev.fleet import Fleet

from . import cpu, interrupts
from .console import progress
from .kinds import BenchError
from .load import Call, Load, falling_behind, offer, percentile
from .options import Options

VERIFY_METRIC = "authz_verify_duration_seconds"


@dataclass(frozen=True)
class Row:
    kind: str
    authz: str
    load: Load
    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rate: float  # completed per second (closed: throughput; open: the achieved rate)
    bad: int
    cpu_ms: dict[str, float]
    authz_ms: float | None = None
    split: str = "-"
    behind: str | None = None  # open loop: why it did not keep up with the offered rate
    late_p99_ms: float = 0.0  # open loop: sends behind their schedule (the asker's loop busy)


@dataclass(frozen=True)
class Measured:
    """What is measured: `call` under `kind`'s name; with a fleet, authz's metrics of
    verifications labelled `metric_kind` are read too."""

    kind: str
    call: Call
    pids: cpu.Pids
    fleet: Fleet | None = None
    metric_kind: str = ""


async def measure_all(what: Measured, opts: Options, add: Callable[[Row], None]) -> None:
    """Every row of one kind or baseline (closed loops, then open loops), each handed to `add`
    as soon as it is measured."""
    authz = f", {len(what.fleet.instances('authz'))} authz" if what.fleet else ""
    for load in opts.loads(what.kind):
        interrupts.check()
        progress(f"{what.kind}{authz}, {load.label}")
        add(await measure_row(what, load, seconds=opts.seconds, warmup=opts.warmup))


async def measure_row(what: Measured, load: Load, *, seconds: float, warmup: float) -> Row:
    if warmup > 0:
        await offer(what.call, load, warmup)
    checks_before = await verify_totals(what.fleet, what.metric_kind)
    cpu_before = cpu.snapshot(what.pids)
    sampled = await offer(what.call, load, seconds)
    cpu_after = cpu.snapshot(what.pids)
    checks_after = await verify_totals(what.fleet, what.metric_kind)
    ordered = sorted(sampled.latencies)
    if not ordered:
        raise BenchError(f"{what.kind}: no request completed")
    authz_ms, split = authz_side(checks_before, checks_after)
    late = sorted(sampled.late)
    return Row(
        kind=what.kind,
        authz=str(len(what.fleet.instances("authz"))) if what.fleet else "-",
        load=load,
        n=len(ordered),
        p50_ms=percentile(ordered, 0.50) * 1e3,
        p99_ms=percentile(ordered, 0.99) * 1e3,
        max_ms=ordered[-1] * 1e3,
        rate=sampled.rate,
        bad=sampled.bad,
        cpu_ms=cpu.per_request(cpu_before, cpu_after, len(ordered)),
        authz_ms=authz_ms,
        split=split,
        behind=falling_behind(sampled, load),
        late_p99_ms=percentile(late, 0.99) * 1e3 if late else 0.0,
    )


async def verify_totals(fleet: Fleet | None, kind: str) -> list[tuple[float, float]]:
    """(count, sum of seconds) of authz's verify-duration histogram for `kind`, per instance."""
    if fleet is None:
        return []
    totals = []
    async with httpx.AsyncClient(timeout=5.0) as http:
        for instance in fleet.instances("authz"):
            text = (await http.get(f"{instance.url}/metrics")).text
            totals.append(_histogram_totals(text, kind))
    return totals


def _histogram_totals(text: str, kind: str) -> tuple[float, float]:
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("kind") != kind:
                continue
            if sample.name == f"{VERIFY_METRIC}_count":
                count += sample.value
            elif sample.name == f"{VERIFY_METRIC}_sum":
                total += sample.value
    return count, total


def authz_side(
    before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> tuple[float | None, str]:
    """Mean check time in ms over the stretch, and each instance's share of the checks."""
    counts = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    seconds = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    done = sum(counts)
    if done <= 0:
        return None, "-"
    split = "/".join(f"{100 * c / done:.0f}" for c in counts) if len(counts) > 1 else "-"
    return seconds / done * 1e3, split
