"""The dev tooling that starts the real infrastructure: process management and the broker's
cluster id (no network; the processes started here are `sleep`)."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from authbus_dev import infra
from authbus_dev.procs import Managed


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage reads `-t -abc...` as an option and refuses to format (seen in CI-like
    runs, about 1 in 64): such ids are drawn again."""
    dashed = uuid.UUID(bytes=b"\xfb" + bytes(15))  # base64url of 0xfb... starts with "-"
    draws = iter([dashed, uuid.UUID(int=0)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))

    cluster_id = infra.new_cluster_id()

    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAA"


def test_many_cluster_ids_are_22_url_safe_characters() -> None:
    ids = {infra.new_cluster_id() for _ in range(2000)}

    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def sleeper(tmp_path: Path) -> Managed:
    return Managed("sleeper", tmp_path)


def test_a_started_process_is_recorded_and_stopped_by_its_pid(tmp_path: Path) -> None:
    proc = sleeper(tmp_path)
    pid = proc.start([sys.executable, "-c", "import time; time.sleep(60)"])

    assert proc.pid() == pid
    assert proc.running()
    proc.stop(timeout_s=5)

    assert not proc.running()
    assert not proc.pid_file.exists()


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    proc = sleeper(tmp_path)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    proc.start([sys.executable, "-c", code])

    proc.stop(timeout_s=0.5)

    assert not proc.running()


def test_a_stale_pid_file_signals_nobody(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pid recorded with another start time is someone else's process now (pid reuse)."""
    proc = sleeper(tmp_path)
    proc.pid_file.write_text(f"{os.getpid()} 1\n")  # this test's own pid, wrong start time
    sent: list[int] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append(sig) if sig else None)

    assert proc.pid() is None
    proc.stop()

    assert signal.SIGTERM not in sent
    assert not proc.pid_file.exists()


def test_the_exit_code_of_a_stopped_child_is_known(tmp_path: Path) -> None:
    proc = sleeper(tmp_path)
    proc.start([sys.executable, "-c", "import sys; sys.exit(3)"])

    assert proc.wait_exit(10) == 3
    assert "sleeper" in proc.log_file.name
