"""Progress on stderr (stdout carries the table only), and facts about this machine."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cores() -> int:
    return len(os.sched_getaffinity(0))
