"""Where a server's time goes under load (issue #13 item 3): py-spy samples the process while
`bench.api_hot_path --profile` loads it, and this module sums the samples.

py-spy (a dev dependency) reads the process's stacks from outside at `RATE` samples a second,
native time included: a frame's self time covers the system calls it makes. Idle samples
(the event loop waiting in `select`/`epoll`) are dropped, so the shares are of busy time.

Printed: the busy time by layer (the innermost frame that belongs to a known layer takes the
sample), then the functions with the most self time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

RATE = 250
FRAME = re.compile(r"(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
IDLE = ("select (selectors.py)", "_run_once (base_events.py)", "run (runners.py)")
# file path fragments -> layer, the first that matches wins (most specific first)
LAYERS = (
    ("authbus_api/core/quota", "rate limit (quota, slices)"),
    ("authbus_api/core/slices", "rate limit (quota, slices)"),
    ("authbus_api/rate.py", "rate limit (quota, slices)"),
    ("authbus_api/core/verdict_cache", "verdict cache and digest"),
    ("authbus_api/core/credentials", "credential parsing"),
    ("authbus_api/gate.py", "gate (identify, rate headers)"),
    ("authbus_api/usage", "usage reporter"),
    ("authbus_api/metrics", "metrics"),
    ("prometheus_client", "metrics"),
    ("authbus_api/core", "access decision (routes, paths, judge)"),
    ("authbus_api/access", "access decision (routes, paths, judge)"),
    ("authbus_api/http/server", "edge protocol (head limits)"),
    ("authbus_api/http", "router, request facts, forward auth"),
    ("authbus_api/app", "edge (metrics, dispatch)"),
    ("authbus_api/proxy", "gateway forwarding (aiohttp, Starlette)"),
    ("aiohttp", "gateway forwarding (aiohttp, Starlette)"),
    ("yarl", "gateway forwarding (aiohttp, Starlette)"),
    ("multidict", "gateway forwarding (aiohttp, Starlette)"),
    ("starlette", "gateway forwarding (aiohttp, Starlette)"),
    ("anyio", "gateway forwarding (aiohttp, Starlette)"),
    ("httpx", "httpx (the plain httpx proxy)"),
    ("httpcore", "httpx (the plain httpx proxy)"),
    ("uvicorn", "uvicorn (HTTP parsing, writing answers)"),
    ("asyncio", "event loop"),
    ("uvloop", "event loop"),
)


def record(pid: int, seconds: float, out: Path, pinned: list[str]) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds` into `out` (py-spy's raw collapsed stacks), on the
    CPUs `pinned` names (`taskset -c ...`: not the server's)."""
    py_spy = str(Path(sys.executable).parent / "py-spy")
    command = [*pinned, py_spy, "record", "-p", str(pid), "-d", str(max(1, round(seconds)))]
    command += ["-r", str(RATE), "-f", "raw", "-o", str(out), "--nonblocking"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stacks(lines: Iterable[str]) -> list[tuple[list[tuple[str, str]], int]]:
    """(frames outermost first as (function, file), samples) per collapsed line."""
    out = []
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            found = FRAME.match(frame)
            function, file = (found["function"], found["file"]) if found else (frame, "")
            frames.append((function, file))
        out.append((frames, int(count)))
    return out


def layer_of(frames: list[tuple[str, str]]) -> str:
    for _, file in reversed(frames):
        for fragment, layer in LAYERS:
            if fragment in file:
                return layer
    return "other"


def summary(lines: Iterable[str], top: int = 15) -> list[str]:
    """The busy samples by layer and the functions with the most self time, as text."""
    by_layer: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    for frames, count in stacks(lines):
        function, file = frames[-1]
        name = f"{function} ({Path(file).name})"
        if name in IDLE or not frames:
            continue
        by_layer[layer_of(frames)] += count
        by_function[name] += count
    busy = sum(by_layer.values())
    if not busy:
        return ["no busy samples (is py-spy allowed to attach? it needs ptrace rights)"]
    text = [f"busy samples: {busy} at {RATE}/s; share of busy time by layer:"]
    text += [f"  {100 * n / busy:5.1f}%  {layer}" for layer, n in by_layer.most_common()]
    text.append(f"functions with the most self time (top {top}):")
    text += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in by_function.most_common(top)]
    return text
