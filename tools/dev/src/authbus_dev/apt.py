"""Debian packages.

- `download`, without root: `apt-get download` with package lists and archives of our own in
  the cache (a fresh machine without lists works, and the system's are never touched); the
  lists are updated once when a download fails with the lists there are. Used for nginx
  (`nginx.py`) and Prometheus (`prometheus.py`), which unpack what they fetch with
  `dpkg-deb -x`.
- `install`, as root: what runs as a system service or needs its own setup (the compose test's
  docker.io and debootstrap, `engine.py`; the browser tests' chromium, `browser.py`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


class AptUnavailable(RuntimeError):
    """The packages could not be fetched or installed; the message says why."""


class NotRoot(AptUnavailable):
    """Installing takes root (and apt-get), which this process does not have."""


def install(packages: Sequence[str]) -> None:
    """Install `packages` system-wide; the lists are updated once if the install fails."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise NotRoot(f"installing {', '.join(packages)} takes root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:  # lists missing or stale on a fresh machine
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise AptUnavailable(f"apt-get install {' '.join(packages)}:\n{result.stderr[-3000:]}")


def download(folder: Path, packages: Sequence[str], lists: Path, archives: Path) -> list[Path]:
    """The newest `.deb` of each of `packages`, fetched into `folder`, in the order given."""
    for sub in (lists / "partial", archives / "archives" / "partial"):
        sub.mkdir(parents=True, exist_ok=True)
    options = [
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={archives}",
        "-o", "Debug::NoLocking=1",
    ]  # fmt: skip
    errors = ""
    for update_first in (False, True):
        if update_first:
            update = _apt([*options, "update", "-qq"], folder)
            if update.returncode != 0:
                raise AptUnavailable(f"apt-get update failed: {update.stderr.strip()}")
        fetched = _apt([*options, "download", *packages], folder)
        debs = {p: sorted(folder.glob(f"{p}_*.deb")) for p in packages}
        if fetched.returncode == 0 and all(debs.values()):
            return [found[-1] for found in debs.values()]
        errors = fetched.stderr.strip()
    raise AptUnavailable(f"apt-get download {' '.join(packages)} failed: {errors}")


def _apt(args: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["apt-get", *args], cwd=folder, capture_output=True, text=True, timeout=300, check=False
        )
    except FileNotFoundError:
        raise AptUnavailable("no apt-get") from None
    except subprocess.TimeoutExpired as exc:
        raise AptUnavailable(f"apt-get {' '.join(args)}: timed out") from exc
