"""CPU time per process group, from Linux /proc: what each request cost, and who paid it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from authbus_dev import infra
from authbus_dev.fleet import Fleet

GROUPS = ("kafka", "mongo", "authz", "bench", "other")

# The processes to account, by group: kafka, mongo, authz (all instances), bench (this one).
Pids = Callable[[], dict[str, list[int]]]
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def process_ids(cfg: infra.InfraConfig, fleet: Fleet | None) -> Pids:
    def pids() -> dict[str, list[int]]:
        found: dict[str, list[int | None]] = {
            "kafka": [infra.kafka_process(cfg).pid()],
            "mongo": [infra.mongo_process(cfg).pid()],
            "authz": [fleet.process(i).pid() for i in fleet.instances("authz")] if fleet else [],
            "bench": [os.getpid()],
        }
        return {name: [p for p in ps if p is not None] for name, ps in found.items()}

    return pids


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime (stat fields 14, 15)


def machine_busy_s() -> float:
    """CPU seconds the whole machine was busy (all cores), from the first line of /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) * TICK_S  # user..steal; guest time is inside user


def snapshot(pids: Pids) -> dict[str, float]:
    groups = {name: sum(process_cpu_s(p) for p in ps) for name, ps in pids().items()}
    groups["other"] = machine_busy_s() - sum(groups.values())
    return groups


def per_request(
    before: dict[str, float], after: dict[str, float], requests: int
) -> dict[str, float]:
    """CPU ms per request, by group. `other` is a difference of two readings taken a moment
    apart, so it can come out a hair below 0: shown as 0."""
    used = {name: (after[name] - before[name]) * 1e3 / requests for name in after}
    used["other"] = max(0.0, used["other"])
    return used
