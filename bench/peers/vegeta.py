"""Load with vegeta, which sends each request with its own headers (hey sends one request
again and again): the uncached row gives every request a token never seen before.

Closed loop as hey's: `-rate=0` (as fast as answered) with `-workers` = `-max-workers` = the
run's concurrency, pinned to the load generator's cores. The targets are read lazily
(`-lazy`): the file is used once through and the attack stops when it runs out, instead of
starting again from the top (a second use of a token would be a cache hit). Its report
(`vegeta report -type=json`, durations in ns) becomes the same `Loaded` as hey's: req/s is
vegeta's throughput (answers 2xx/3xx per second, waiting for the last included), p50 and p99,
the status histogram; status code 0 counts requests without an answer.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .load import Loaded
from .procs import BenchError, taskset

RAN_OUT = "no targets to attack"  # vegeta's error when a lazy targets file is used up


def targets(url: str, tokens: Sequence[str], headers: Callable[[str], Mapping[str, str]]) -> str:
    """vegeta's http targets format: per token `GET url`, its headers, a blank line."""
    blocks = []
    for token in tokens:
        lines = [f"GET {url}", *(f"{name}: {value}" for name, value in headers(token).items())]
        if any("\n" in line for line in lines):
            raise ValueError("a target line with a line break")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def attack_command(
    vegeta: Path,
    targets_file: Path,
    results: Path,
    *,
    seconds: float,
    concurrency: int,
    cpus: str,
    taskset: str,
) -> list[str]:
    return [
        taskset,
        "-c",
        cpus,
        str(vegeta),
        "attack",
        "-format=http",
        f"-targets={targets_file}",
        "-lazy",
        "-rate=0",
        f"-workers={concurrency}",
        f"-max-workers={concurrency}",
        f"-duration={seconds:g}s",
        f"-output={results}",
    ]


def parse_report(text: str) -> tuple[Loaded, list[str]]:
    """vegeta's JSON report: the load's summary, and the distinct errors it met."""
    report: dict[str, Any] = json.loads(text)
    if "latencies" not in report or "status_codes" not in report:
        raise ValueError(f"not a vegeta report:\n{text[:300]}")
    codes = {int(code): int(count) for code, count in report["status_codes"].items()}
    latencies = report["latencies"]
    loaded = Loaded(
        rps=float(report["throughput"]),
        p50_ms=latencies["50th"] / 1e6,
        p99_ms=latencies["99th"] / 1e6,
        statuses={code: count for code, count in codes.items() if code != 0},
        errors=codes.get(0, 0),
    )
    return loaded, list(report.get("errors") or [])


def run_vegeta(
    vegeta: Path,
    url: str,
    tokens: Sequence[str],
    headers: Callable[[str], Mapping[str, str]],
    folder: Path,
    *,
    seconds: float,
    concurrency: int,
    cpus: str,
) -> Loaded:
    """One load of `url`, a token of `tokens` per request, each used at most once; fails if
    the tokens ran out before `seconds` were over."""
    folder.mkdir(exist_ok=True)
    run = len(list(folder.glob("*.targets")))
    targets_file, results = folder / f"{run}.targets", folder / f"{run}.bin"
    targets_file.write_text(targets(url, tokens, headers))
    argv = attack_command(
        vegeta,
        targets_file,
        results,
        seconds=seconds,
        concurrency=concurrency,
        cpus=cpus,
        taskset=taskset(),
    )
    subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    report = subprocess.run(
        [str(vegeta), "report", "-type=json", str(results)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded, errors = parse_report(report.stdout)
    if RAN_OUT in errors:
        raise BenchError(
            f"the {len(tokens)} fresh tokens for {seconds:g} s ran out (more than "
            f"{len(tokens) / seconds:,.0f} answers/s): mint more with --uncached-tokens"
        )
    return loaded
