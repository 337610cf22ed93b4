"""The peers' processes: started pinned (`taskset -c`, which execs the server, so the pid is
the server's), waited for, and stopped again by that pid alone, on any way out."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from bench.verify_over_kafka.interrupts import uninterrupted


class BenchError(RuntimeError):
    """The comparison cannot go on as asked (a server that will not start, a wrong answer)."""


def taskset() -> str:
    """util-linux's taskset, which pins every server and the load generator."""
    found = shutil.which("taskset")
    if found is None:
        raise BenchError("taskset (util-linux) is needed to pin the servers")
    return found


def pin(pid: int, cpus: str) -> None:
    """Every thread of a running process onto `cpus` (threads it starts later inherit it)."""
    subprocess.run(
        [taskset(), "-a", "-p", "-c", cpus, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=10,
    )


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def pinned(
    argv: Sequence[str], cpus: str, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` on `cpus`, its output in `log`, in its own session (a Ctrl-C reaches it through
    this process, in order); SIGTERM then SIGKILL to its pid on the way out."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [taskset(), "-c", cpus, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=log.parent,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with uninterrupted():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(
    proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool], timeout_s: float = 30
) -> float:
    """Poll `ready` until it holds; fails with the log's tail if the process exits first."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if ready():
                return time.monotonic() - started
        if proc.poll() is not None:
            raise BenchError(f"{log.stem} exited ({proc.returncode}):\n{tail(log)}")
        if time.monotonic() - started > timeout_s:
            raise BenchError(f"{log.stem} not ready in {timeout_s:.0f} s:\n{tail(log)}")
        time.sleep(0.1)
