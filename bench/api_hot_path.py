"""The api's hot path against the servers it is built from (issue #5 item 9, issue #13 item
3), in one run.

    .venv/bin/python -m bench.api_hot_path [--seconds 10] [--concurrency 32] [--rounds 2]
        [--cores 1] [--profile]

The servers (`bench/hot_path_servers.py`), each one uvicorn worker in its own process,
configured as the api's runner configures uvicorn:
- `raw ASGI hello` and `bare FastAPI hello`: what one worker and the framework cost;
- `gated forward-auth`: the real api app answering `GET /v0/forward-auth` in nginx's dialect
  for `GET /v1/things/42`, a declared route that needs the scope `read`, with a cached Bearer
  credential, a rate check and the credential's use recorded;
- `gateway (proxied)`: the same app serving `GET /v1/things/42` itself: the same checks,
  then the request goes on to an upstream (a raw ASGI hello in a process of its own);
- `plain aiohttp proxy` and `plain httpx proxy`: the same upstream behind a proxy that checks
  nothing (aiohttp: the client the gateway uses; httpx: the issue's baseline).
Pinning (on 2 or more cores): every server runs on the last `--cores` CPUs (`taskset`), the
load generator and the upstream on the others, so the server under test has its cores to
itself. Each server is loaded by `hey` (Go, fetched into `.cache/go`) for `--seconds` at
`--concurrency` connections after a 2 s warm-up that is thrown away; `--rounds` runs every
row that many times, the order reversed each round. Every answer must be 200 (hey's status
histogram), else the row says so.

Printed per row and round: requests per second, p50 and p99 latency (hey's); then the mean of
the rounds and the targets, each met or missed:
- issue #13: the gated check at >= 0.5x the raw ASGI hello's req/s, p99 <= 1.5x its p99;
- issue #5: the gated check at >= 1.0x the bare FastAPI hello's req/s, p99 <= 2x its p99;
- and the gateway's cost against the plain proxies (ratios, no target).
`--profile` samples the two api rows with py-spy in the first round and prints where their
time goes, by layer and by function (`bench/hot_path_profile.py`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from authbus_dev.ports import free_port
from bench import hot_path_profile
from bench.hot_path_servers import AIOHTTP_PROXY, FASTAPI, GATED, GATEWAY, PROXY, RAW

REPO = Path(__file__).resolve().parents[1]
GO_CACHE = REPO / ".cache" / "go"
HEY = GO_CACHE / "bin" / "hey"
HEY_MODULE = "github.com/rakyll/hey@v0.1.4"
TOKEN = "bench-token"
ROWS = (RAW, FASTAPI, GATED, GATEWAY, AIOHTTP_PROXY, PROXY)
PATHS = {RAW: "/", FASTAPI: "/hello", GATED: "/v0/forward-auth", GATEWAY: "/v1/things/42"}
PATHS[PROXY] = PATHS[AIOHTTP_PROXY] = "/v1/things/42"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
HEADERS: dict[str, dict[str, str]] = {
    GATED: BEARER
    | {
        "X-Original-Method": "GET",  # nginx's auth_request dialect (the default)
        "X-Original-URI": "/v1/things/42?full=1",
    },
    GATEWAY: BEARER,
}


def ensure_hey() -> Path:
    """hey from the Go module proxy, into the cache (skipped when present)."""
    if HEY.exists():
        return HEY
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is needed to fetch hey (the load generator)")
    env = os.environ | {
        "GOPATH": str(GO_CACHE / "path"),
        "GOMODCACHE": str(GO_CACHE / "mod"),
        "GOBIN": str(HEY.parent),
        "GOFLAGS": "-modcacherw",
    }
    subprocess.run([go, "install", HEY_MODULE], env=env, check=True, timeout=600)
    return HEY


def wait_up(port: int, path: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=2)
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} not up")


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the servers get, and which the load generator (and upstream) get."""

    server: str | None = None
    load: str | None = None

    @classmethod
    def split(cls, cores: int) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            return cls()
        cores = max(1, min(cores, len(cpus) - 1))
        server, load = cpus[-cores:], cpus[:-cores]
        return cls(",".join(map(str, server)), ",".join(map(str, load)))

    def server_cmd(self, command: list[str]) -> list[str]:
        return ["taskset", "-c", self.server, *command] if self.server else command

    def load_cmd(self, command: list[str]) -> list[str]:
        return ["taskset", "-c", self.load, *command] if self.load else command


@dataclass(frozen=True)
class Load:
    seconds: float
    concurrency: int
    pinning: Pinning = Pinning()


def hey_figures(out: str) -> dict[str, float]:
    """Requests per second, p50/p99 ms and non-200 answers from hey's report."""

    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        if found is None:
            raise RuntimeError(f"hey printed no {pattern!r}:\n{out}")
        return float(found.group(1))

    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    return {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50": number(r"50% in ([\d.]+) secs") * 1000,
        "p99": number(r"99% in ([\d.]+) secs") * 1000,
        "non200": sum(int(n) for code, n in codes if code != "200"),
    }


def load(port: int, name: str, how: Load) -> dict[str, float]:
    """hey against one server."""
    args = [str(ensure_hey()), "-z", f"{how.seconds}s", "-c", str(how.concurrency)]
    for key, value in HEADERS.get(name, {}).items():
        args += ["-H", f"{key}: {value}"]
    command = how.pinning.load_cmd([*args, f"http://127.0.0.1:{port}{PATHS[name]}"])
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return hey_figures(out)


@contextmanager
def server(name: str, pinned: list[str], upstream: str = "") -> Iterator[tuple[int, int]]:
    """One server (`bench.hot_path_servers`) on a free port, stopped on the way out: its
    port and pid (`taskset` execs the server: the same process)."""
    port = free_port()
    command = [sys.executable, "-m", "bench.hot_path_servers", name, str(port), upstream]
    process = subprocess.Popen(pinned + command, cwd=REPO)
    try:
        wait_up(port, PATHS.get(name, "/"), HEADERS.get(name, {}))  # gated: now cached
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(10)


def measure(name: str, how: Load, upstream: str, profile: Path | None = None) -> dict[str, float]:
    """One row: a warm-up thrown away, then the load (sampled by py-spy into `profile`)."""
    pin = how.pinning.server_cmd([])
    with server(name, pin, upstream) as (port, pid):
        load(port, name, Load(2, how.concurrency, how.pinning))  # warm-up, thrown away
        if profile is None:
            return load(port, name, how)
        sampler = hot_path_profile.record(pid, how.seconds - 1, profile, how.pinning.load_cmd([]))
        try:
            return load(port, name, how)
        finally:
            sampler.wait(30)


def mean(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(run[key] for run in runs) for key in runs[0]}


COLUMNS = ("req/s", "p50 ms", "p99 ms", "x raw req/s", "x raw p99", "non-200")


def row(label: str, r: dict[str, float], raw: dict[str, float]) -> str:
    values = (
        f"{r['rps']:.0f}",
        f"{r['p50']:.2f}",
        f"{r['p99']:.2f}",
        f"{r['rps'] / raw['rps']:.2f}",
        f"{r['p99'] / raw['p99']:.2f}",
        f"{int(r['non200'])}",
    )
    return f"{label:<30}" + "".join(f"{v:>13}" for v in values)


def verdicts(results: dict[str, dict[str, float]]) -> list[str]:
    raw, fastapi, gated = results[RAW], results[FASTAPI], results[GATED]
    ok = not gated["non200"]
    issue13 = ok and gated["rps"] >= 0.5 * raw["rps"] and gated["p99"] <= 1.5 * raw["p99"]
    issue5 = ok and gated["rps"] >= fastapi["rps"] and gated["p99"] <= 2 * fastapi["p99"]
    gateway, proxy, httpx_proxy = results[GATEWAY], results[AIOHTTP_PROXY], results[PROXY]
    return [
        f"gated {gated['rps'] / raw['rps']:.2f}x the raw hello's req/s, p99 "
        f"{gated['p99'] / raw['p99']:.2f}x (issue #13 target: >= 0.5x, <= 1.5x): "
        + ("met" if issue13 else "MISSED"),
        f"gated {gated['rps'] / fastapi['rps']:.2f}x the bare FastAPI hello's req/s, p99 "
        f"{gated['p99'] / fastapi['p99']:.2f}x (issue #5 target: >= 1.0x, <= 2x): "
        + ("met" if issue5 else "MISSED"),
        f"gateway {gateway['rps'] / proxy['rps']:.2f}x the plain aiohttp proxy's req/s, p99 "
        f"{gateway['p99'] / proxy['p99']:.2f}x; {gateway['rps'] / httpx_proxy['rps']:.2f}x the "
        f"plain httpx proxy's, p99 {gateway['p99'] / httpx_proxy['p99']:.2f}x (no target)",
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.api_hot_path")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1, help="CPUs for the server under test")
    parser.add_argument("--profile", action="store_true", help="py-spy the api rows (round 1)")
    opts = parser.parse_args(args)
    how = Load(opts.seconds, opts.concurrency, Pinning.split(opts.cores))
    ensure_hey()
    print(
        f"api hot path: {os.cpu_count()} cores (server on CPUs {how.pinning.server or 'any'}, "
        f"hey and the upstream on {how.pinning.load or 'any'}), Python "
        f"{sys.version.split()[0]}, one uvicorn worker per server, hey {how.seconds:g} s at "
        f"{how.concurrency} connections, {opts.rounds} rounds (order reversed each round)"
    )
    print(f"command: python -m bench.api_hot_path {' '.join(args)}\n")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ROWS}
    profiles = {name: Path(tempfile.mkdtemp()) / "stacks.txt" for name in (GATED, GATEWAY)}
    with server(RAW, how.pinning.load_cmd([])) as (upstream_port, _):
        upstream = f"http://127.0.0.1:{upstream_port}"
        for round_ in range(opts.rounds):
            order = ROWS if round_ % 2 == 0 else tuple(reversed(ROWS))
            for name in order:
                sampled = profiles.get(name) if opts.profile and round_ == 0 else None
                runs[name].append(measure(name, how, upstream, sampled))
    print(f"{'server (round)':<30}" + "".join(f"{c:>13}" for c in COLUMNS))
    for round_ in range(opts.rounds):
        raw = runs[RAW][round_]
        for name in ROWS:
            print(row(f"{name} ({round_ + 1})", runs[name][round_], raw))
    results = {name: mean(r) for name, r in runs.items()}
    print()
    for name in ROWS:
        print(row(f"{name} (mean)", results[name], results[RAW]))
    print()
    for line in verdicts(results):
        print(line)
    if opts.profile:
        for name, stacks in profiles.items():
            print(f"\nwhere the time goes: {name} (py-spy, round 1; raw stacks: {stacks})")
            lines = stacks.read_text().splitlines() if stacks.exists() else []
            print("\n".join(hot_path_profile.summary(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
