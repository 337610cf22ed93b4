"""The peers `bench/peers` compares authbus with (issue #13 item 1), built from the Go module
proxy into `.cache/go/bin`, skipped when already there.

    .venv/bin/python -m bench.peers.build

- Ory Oathkeeper v0.40.9: `go install` is refused (the proxy will not list a version the
  module's go.mod needs), so the module is downloaded (`go mod download`), copied out of the
  read-only module cache, and built there with `go build` (about 1.5 min on 2 cores).
- gubernator v2.13.0: `go install` (newer versions need a newer Go than this machine's).
- vegeta v12.13.0 (not a peer: the load generator of the uncached row, which sends each request
  with its own token, as hey cannot): `go install`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.api_hot_path import GO_CACHE

BIN = GO_CACHE / "bin"
OATHKEEPER = BIN / "oathkeeper"
GUBERNATOR = BIN / "gubernator"
VEGETA = BIN / "vegeta"
OATHKEEPER_MODULE = "github.com/ory/oathkeeper@v0.40.9"
GUBERNATOR_MODULE = "github.com/gubernator-io/gubernator/v2/cmd/gubernator@v2.13.0"
VEGETA_MODULE = "github.com/tsenart/vegeta/v12@v12.13.0"


def go_env() -> dict[str, str]:
    return os.environ | {
        "GOPATH": str(GO_CACHE / "path"),
        "GOMODCACHE": str(GO_CACHE / "mod"),
        "GOBIN": str(BIN),
        "GOFLAGS": "-modcacherw",
    }


def go() -> str:
    found = shutil.which("go")
    if found is None:
        raise RuntimeError("Go is needed to build the peers (Oathkeeper, gubernator, vegeta)")
    return found


def go_install(module: str, binary: Path) -> Path:
    """`go install module` into BIN, skipped when `binary` is already there."""
    if not binary.exists():
        subprocess.run([go(), "install", module], env=go_env(), check=True, timeout=900)
    return binary


def build_gubernator() -> Path:
    return go_install(GUBERNATOR_MODULE, GUBERNATOR)


def build_vegeta() -> Path:
    return go_install(VEGETA_MODULE, VEGETA)


def build_oathkeeper() -> Path:
    if OATHKEEPER.exists():
        return OATHKEEPER
    env = go_env()
    listed = subprocess.run(
        [go(), "mod", "download", "-json", OATHKEEPER_MODULE],
        env=env,
        check=True,
        timeout=900,
        capture_output=True,
        text=True,
    )
    source = Path(json.loads(listed.stdout)["Dir"])
    work = GO_CACHE / "src" / "oathkeeper"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    for path in work.rglob("*"):  # the module cache's copies are read-only
        path.chmod(path.stat().st_mode | 0o200)
    BIN.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [go(), "build", "-o", str(OATHKEEPER), "."], cwd=work, env=env, check=True, timeout=1800
    )
    return OATHKEEPER


def main() -> None:
    builds = (
        ("gubernator", build_gubernator),
        ("oathkeeper", build_oathkeeper),
        ("vegeta", build_vegeta),
    )
    for name, build in builds:
        started = time.monotonic()
        path = build()
        print(f"{name:<11} {path}  ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
