"""A Docker engine of the project's own, for the compose test (tests/compose, issue #11).

- `install()`: Debian's `docker.io` and `debootstrap` (apt, as root) unless they are there, and
  Docker Compose v2 built from source with Go into `.cache/compose/<version>` (Debian has only
  compose v1; no binary registry is reachable), installed as the CLI plugin under
  `.cache/docker-config/cli-plugins`.
- `Engine`: a `dockerd` with its own socket, exec root and pid under `.run/docker`, and its
  image store under `.cache/docker/data` (a warm run finds its images and build cache there).
  It is stopped by its own pid; it never touches a system Docker.

`EngineUnavailable` means the machine cannot run an engine (not root, no apt, a kernel that
refuses); the compose test reports it as a loud skip. Any other failure is an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authbus_dev import apt
from authbus_dev.paths import CACHE, RUNS
from authbus_dev.procs import Managed

COMPOSE_VERSION = "v2.29.7"
DOCKER = "/usr/bin/docker"  # Debian's CLI: BuildKit built in, no buildx plugin needed
DOCKERD = "/usr/sbin/dockerd"
DOCKER_CONFIG = CACHE / "docker-config"
PACKAGES = ("docker.io", "debootstrap", "iptables")


class EngineUnavailable(RuntimeError):
    """This machine cannot run a container engine; the message says why."""


class EngineError(RuntimeError):
    """A docker command failed; the message holds its output."""


def install() -> None:
    """The engine's packages (dockerd, the CLI, debootstrap), skipped when present. Compose is
    `compose_plugin()`: a build of minutes, which a caller may run beside other work."""
    if not (Path(DOCKERD).exists() and Path(DOCKER).exists() and shutil.which("debootstrap")):
        _apt_install(PACKAGES)


def _apt_install(packages: Sequence[str]) -> None:
    try:
        apt.install(packages)
    except apt.NotRoot as exc:
        raise EngineUnavailable(str(exc)) from None
    except apt.AptUnavailable as exc:
        raise EngineError(str(exc)) from None


def compose_plugin() -> Path:
    """Compose v2 as a Docker CLI plugin; built with `go install` once (about 4.5 min)."""
    folder = CACHE / "compose" / COMPOSE_VERSION
    binary = folder / "docker-compose"
    if not binary.exists():
        if shutil.which("go") is None:
            raise EngineUnavailable("compose v2 is built from source and needs Go on PATH")
        go = CACHE / "go"
        env = {
            **os.environ,
            "GOPATH": str(go / "path"),
            "GOMODCACHE": str(go / "mod"),
            "GOCACHE": str(go / "build"),
            "GOBIN": str(folder / "partial"),
            "GOFLAGS": "-trimpath",
        }
        version = f"-X github.com/docker/compose/v2/internal.Version={COMPOSE_VERSION}"
        package = f"github.com/docker/compose/v2/cmd@{COMPOSE_VERSION}"
        result = subprocess.run(
            ["go", "install", f"-ldflags={version}", package],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if result.returncode != 0:
            raise EngineError(
                f"building compose {COMPOSE_VERSION} failed:\n{result.stderr[-3000:]}"
            )
        (folder / "partial" / "cmd").rename(binary)
        shutil.rmtree(folder / "partial", ignore_errors=True)
    plugins = DOCKER_CONFIG / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    if not link.exists():
        link.symlink_to(binary)
    return binary


@dataclass
class Engine:
    """One dockerd of ours. `docker()` and `compose()` run the CLI against it."""

    folder: Path = RUNS / "docker"
    data_root: Path = CACHE / "docker" / "data"
    _daemon: Managed = field(init=False)

    def __post_init__(self) -> None:
        self._daemon = Managed("dockerd", self.folder)

    @property
    def socket(self) -> Path:
        return self.folder / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(DOCKER_CONFIG),
            "DOCKER_BUILDKIT": "1",
            "BUILDKIT_PROGRESS": "plain",
        }

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the daemon unless ours is running, and wait until it answers."""
        self.data_root.mkdir(parents=True, exist_ok=True)
        exec_root = self.folder / "exec"
        exec_root.mkdir(parents=True, exist_ok=True)
        self._daemon.start(
            [
                DOCKERD,
                f"--data-root={self.data_root}",
                f"--exec-root={exec_root}",
                f"--host=unix://{self.socket}",
                f"--pidfile={self.folder / 'daemon.pid'}",
            ]
        )
        deadline = time.monotonic() + timeout_s
        while self.docker("version", check=False).returncode != 0:
            if not self._daemon.running():
                raise EngineUnavailable(f"dockerd exited at start:\n{self._daemon.tail()}")
            if time.monotonic() > deadline:
                raise EngineError(
                    f"dockerd not answering after {timeout_s}s:\n{self._daemon.tail()}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the daemon by its pid (it stops its containerd and containers with it)."""
        self._daemon.stop(timeout_s=30.0)

    def log_tail(self, lines: int = 40) -> str:
        return self._daemon.tail(lines)

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout_s: float = 900.0,
        cwd: Path | None = None,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI against this engine (`env` adds to its environment); raises
        `EngineError` with the output when it fails, unless `check` is off."""
        result = subprocess.run(
            [DOCKER, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=cwd,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            raise EngineError(
                f"docker {' '.join(args[:6])} failed ({result.returncode}):\n{output}"
            )
        return result

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False).returncode == 0
