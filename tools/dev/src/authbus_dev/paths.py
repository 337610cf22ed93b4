"""Where things live: the repository, its gitignored caches (downloads) and run folders."""

from __future__ import annotations

from pathlib import Path


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "uv.lock").exists() and (parent / "services").is_dir():
            return parent
    raise RuntimeError(f"authbus repository not found above {here}")


REPO = _repo_root()
CACHE = REPO / ".cache"  # downloads and tool environments, kept between runs
RUNS = REPO / ".run"  # data, logs and pids of running things
VENV_BIN = REPO / ".venv" / "bin"
