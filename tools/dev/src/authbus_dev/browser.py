"""A real browser for the tests: Debian's chromium, driven by Playwright for Python (which
brings its own driver in its wheel; its own browser download is never used: the build machines
cannot fetch it). `chromium()` installs the package with apt (as root) unless it is there.

`LAUNCH_ARGS` keep chromium off the network except for what a page asks for: no background
services, sync, component updates or QUIC, which this machine's closed network refuses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = (
    "--no-sandbox",  # root in CI; the page under test is our own
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserUnavailable(RuntimeError):
    """No chromium, and it cannot be installed here; the message says why."""


def chromium() -> Path:
    """Debian's chromium, installed with apt unless it is there."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BrowserUnavailable("chromium is not installed, and installing it takes root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0 or not CHROMIUM.exists():
        raise BrowserUnavailable(f"apt-get install chromium failed:\n{result.stderr[-2000:]}")
    return CHROMIUM
