"""Load one target with `hey`, pinned to the load generator's cores, and read its report;
the peak memory of the processes under test from /proc."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .procs import taskset


@dataclass(frozen=True)
class Target:
    """One request, sent again and again: what a row loads."""

    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Path | None = None  # sent as application/json


@dataclass(frozen=True)
class Loaded:
    """hey's summary of one load."""

    rps: float
    p50_ms: float
    p99_ms: float
    statuses: Mapping[int, int]  # HTTP status -> responses
    errors: int = 0  # requests without an answer (refused, reset, timed out)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def not_ok(self) -> int:
        """Answers other than 200, and requests without one."""
        return self.answered - self.statuses.get(200, 0) + self.errors


def hey_command(
    hey: Path, target: Target, *, seconds: float, concurrency: int, cpus: str, taskset: str
) -> list[str]:
    argv = [taskset, "-c", cpus, str(hey), "-z", f"{seconds:g}s", "-c", str(concurrency)]
    argv += ["-m", target.method]
    for name, value in target.headers.items():
        argv += ["-H", f"{name}: {value}"]
    if target.body is not None:
        argv += ["-D", str(target.body), "-T", "application/json"]
    return [*argv, target.url]


def parse_hey(out: str) -> Loaded:
    """hey's text report: requests per second, the 50th and 99th percentiles, the status
    histogram and the error histogram (`[count] message` lines after "Error distribution")."""

    def number(pattern: str) -> float:
        """A figure hey printed; NaN when it did not (hey leaves out a percentile it has too
        few answers for)."""
        found = re.search(pattern, out)
        return float(found.group(1)) if found else float("nan")

    statuses: dict[int, int] = {}
    for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out):
        statuses[int(code)] = statuses.get(int(code), 0) + int(count)
    _, _, error_part = out.partition("Error distribution:")
    errors = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]\s", error_part, re.MULTILINE))
    if "Requests/sec:" not in out:
        raise ValueError(f"not a hey report:\n{out}")
    return Loaded(
        rps=number(r"Requests/sec:\s+([\d.]+)"),
        p50_ms=number(r"50% in ([\d.]+) secs") * 1000,
        p99_ms=number(r"99% in ([\d.]+) secs") * 1000,
        statuses=statuses,
        errors=errors,
    )


def run_hey(hey: Path, target: Target, *, seconds: float, concurrency: int, cpus: str) -> Loaded:
    argv = hey_command(
        hey, target, seconds=seconds, concurrency=concurrency, cpus=cpus, taskset=taskset()
    )
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    return parse_hey(done.stdout)


def status_field(status_text: str, name: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS), in kB."""
    found = re.search(rf"^{name}:\s+(\d+) kB", status_text, re.MULTILINE)
    return int(found.group(1)) if found else None


def peak_rss_mib(pids: list[int]) -> float:
    """The summed peak resident set (VmHWM: since each process started) of `pids`, MiB."""
    total_kb = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total_kb += status_field(text, "VmHWM") or 0
    return total_kb / 1024
