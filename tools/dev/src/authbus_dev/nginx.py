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

from authbus_dev import apt
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
    """`apt-get download nginx` with package lists of our own in the cache: fetched once, then
    reused."""
    try:
        (deb,) = apt.download(folder, ["nginx"], cache / "apt-lists", cache / "apt-cache")
    except apt.AptUnavailable as exc:
        raise NginxUnavailable(str(exc)) from exc
    return deb
