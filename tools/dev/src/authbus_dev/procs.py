"""Background processes the dev tooling starts, and stops again by their own pid.

Each managed process has a pid file and a log file in the run folder. It runs in its own
session (so a Ctrl-C meant for the runner is delivered by the runner, in order). `stop` sends
SIGTERM to that pid only, waits, then SIGKILL; a stale pid file (process gone, or the pid now
belongs to something else) is cleaned up without signalling anyone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Children started by this process, kept so they can be reaped (and are not garbage collected
# while running, which Python rightly warns about).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _reap_ended() -> None:
    """At exit, reap the children that ended without anyone asking (killed by a test, or
    exited by themselves): only one still running is left to Python's warning, rightly."""
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            del _CHILDREN[pid]


@dataclass(frozen=True)
class Managed:
    name: str
    folder: Path

    @property
    def pid_file(self) -> Path:
        return self.folder / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.folder / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if _alive(pid) and self._ours(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        if (pid := self.pid()) is not None:
            return pid
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        # The start time ties the pid to this very process: a recycled pid is not ours.
        self.pid_file.write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
        return proc.pid

    def wait_exit(self, timeout_s: float) -> int | None:
        """Wait for a child of this process to end; its exit code, or None if still running."""
        pid = self._recorded_pid()
        child = _CHILDREN.get(pid) if pid is not None else None
        if child is None:
            return None
        try:
            return child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float = 20.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                while _alive(pid):
                    _reap(pid)
                    time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """End the process at once (SIGKILL: no drain, no goodbye), as a crash would."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                _reap(pid)
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def _ours(self, pid: int) -> bool:
        recorded = self.pid_file.read_text().split()
        return len(recorded) < 2 or recorded[1] == _start_time(pid)


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else "?"  # field 22 of stat: start time in ticks


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    if fields and fields[0] == "Z":  # a zombie has ended: reap it if it is our child
        _reap(pid)
        return False
    return True
