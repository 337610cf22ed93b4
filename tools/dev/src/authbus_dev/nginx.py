"""nginx for the forward-auth test (SPEC G3): the Debian package, unpacked into the cache.

`ensure()` returns an nginx binary: one on PATH if the machine has it, else the Debian package
fetched with `apt-get download` (with package lists kept in the cache: no root needed, and a
fresh machine without lists works) and unpacked with `dpkg-deb -x` into `.cache/nginx`
(skipped when present). Only the binary is used: the test writes its own
configuration and runs nginx as an ordinary process with its own prefix folder.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from authbus_dev.paths import CACHE

NGINX_CACHE = CACHE / "nginx"


class NginxUnavailable(RuntimeError):
    """No nginx on PATH and the Debian package could not be fetched; the message says why."""


def ensure(cache: Path = NGINX_CACHE, *, use_system: bool = True) -> Path:
    """An nginx binary: the system's (`use_system`), else the package unpacked in `cache`."""
    if use_system:
        on_path = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if on_path:
            return Path(on_path)
    unpacked = cache / "root" / "usr" / "sbin" / "nginx"
    if unpacked.exists():
        return unpacked
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise NginxUnavailable("no nginx on PATH, and no apt-get/dpkg-deb to fetch it")
    with tempfile.TemporaryDirectory() as tmp:
        deb = _download(Path(tmp), cache)
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, timeout=120)
        staging.rename(cache / "root")
    return unpacked


def _download(folder: Path, cache: Path) -> Path:
    """`apt-get download nginx` with package lists of our own in the cache (a fresh machine
    may have none, and updating the system's needs root): fetched once, then reused."""
    lists, archives = cache / "apt-lists", cache / "apt-cache"
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
                raise NginxUnavailable(f"apt-get update failed: {update.stderr.strip()}")
        fetched = _apt([*options, "download", "nginx"], folder)
        debs = sorted(folder.glob("nginx_*.deb"))
        if fetched.returncode == 0 and debs:
            return debs[-1]
        errors = fetched.stderr.strip()
    raise NginxUnavailable(f"apt-get download nginx failed: {errors}")


def _apt(args: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *args], cwd=folder, capture_output=True, text=True, timeout=300, check=False
    )
