"""The compose test's world (issue #11): docker-compose.yml, deployed for real.

A Docker engine of the project's own (`authbus_dev.engine`: Debian's docker.io, compose v2
built from source, a dockerd with its data in `.cache/docker` and its socket in `.run/docker`),
the stand-in images for what no registry here can give (`authbus_dev.images`), then

    docker compose -f docker-compose.yml -f tests/compose/compose.test.yml \
        up -d --build --wait --scale api=3 --scale authz=2 --scale ratelimit=2

with the gateway and Prometheus published on free ports of 127.0.0.1 only. Everything is torn
down at the end: the containers, networks and volumes, then dockerd by its pid.

Where the machine cannot run an engine (not root, no apt, a kernel that refuses), the tests
are skipped with a banner on stderr and the reason in pytest's summary: never silently green.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from authbus_dev import engine, images
from authbus_dev.paths import REPO, RUNS
from authbus_dev.ports import free_port

FILES = ("docker-compose.yml", "tests/compose/compose.test.yml")
SCALE = {"api": 3, "authz": 2, "ratelimit": 2}
TIMES = RUNS / "compose" / "times.json"


@dataclass
class Deployment:
    """The compose project, and the two ports it publishes on 127.0.0.1."""

    docker: engine.Engine
    env: dict[str, str]
    gateway_port: int
    prometheus_port: int
    times: dict[str, float] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def compose(
        self, *args: str, stdin: str | None = None, timeout_s: float = 900.0
    ) -> subprocess.CompletedProcess[str]:
        files = [a for f in FILES for a in ("-f", f)]
        return self.docker.docker(
            "compose", *files, *args, stdin=stdin, env=self.env, cwd=REPO, timeout_s=timeout_s
        )

    def up(self, scale: dict[str, int], *extra: str) -> None:
        scales = [a for s, n in scale.items() for a in ("--scale", f"{s}={n}")]
        self.compose("up", "-d", "--wait", *extra, *scales)

    def replicas(self, service: str) -> dict[str, str]:
        """{container name: its address on the compose network} of the running replicas."""
        ids = self.compose("ps", "-q", service).stdout.split()
        if not ids:
            return {}
        fmt = "{{.Name}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        lines = self.docker.docker("inspect", "-f", fmt, *ids).stdout.splitlines()
        return {name.lstrip("/"): ip for name, ip in (line.split() for line in lines)}

    def targets(self) -> dict[tuple[str, str], str]:
        """{(job, instance): health} of Prometheus's active targets."""
        data = self.prometheus_get("/api/v1/targets?state=active")
        return {
            (t["labels"]["job"], t["labels"]["instance"]): t["health"]
            for t in data["activeTargets"]
        }

    def query(self, promql: str) -> float:
        """The sum of an instant query's sample values (0 when it returns no series)."""
        data = self.prometheus_get("/api/v1/query?query=" + urllib.parse.quote(promql))
        return sum(float(series["value"][1]) for series in data["result"])

    def prometheus_get(self, path: str) -> Any:
        with urllib.request.urlopen(self.prometheus + path, timeout=10) as answer:  # noqa: S310
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]


def _skip_loudly(reason: str) -> None:
    banner = "=" * 78
    print(f"\n{banner}\nCOMPOSE TEST SKIPPED: {reason}\n{banner}", file=sys.__stderr__)
    pytest.skip(f"no container engine on this machine: {reason}")


def _timed(times: dict[str, float], name: str, started: float) -> float:
    now = time.monotonic()
    times[name] = round(now - started, 1)
    return now


@pytest.fixture(scope="package")
def deployment() -> Iterator[Deployment]:
    times: dict[str, float] = {}
    started = step = time.monotonic()
    docker = engine.Engine()
    try:
        engine.install()
    except engine.EngineUnavailable as exc:
        _skip_loudly(str(exc))
    step = _timed(times, "install", step)
    deployment = None
    pool = ThreadPoolExecutor(max_workers=1)  # compose builds (CPU) while the images download
    try:
        compose = pool.submit(engine.compose_plugin)
        try:
            docker.start()
        except engine.EngineUnavailable as exc:
            _skip_loudly(str(exc))
        base = images.base_image(docker)
        uv = images.uv_image(docker)
        images.infra_images(docker, base, uv)
        step = _timed(times, "base_and_infra_images", step)
        try:
            compose.result()
        except engine.EngineUnavailable as exc:
            _skip_loudly(str(exc))
        step = _timed(times, "compose_build_rest", step)
        env = {
            "AUTHBUS_CI_PYTHON_IMAGE": base,
            "AUTHBUS_CI_UV_IMAGE": uv,
            "AUTHBUS_CI_GATEWAY_PORT": str(free_port()),
            "AUTHBUS_CI_PROMETHEUS_PORT": str(free_port()),
            "AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        }
        deployment = Deployment(
            docker,
            env,
            int(env["AUTHBUS_CI_GATEWAY_PORT"]),
            int(env["AUTHBUS_CI_PROMETHEUS_PORT"]),
            times,
        )
        deployment.compose("down", "-v", "--remove-orphans", "-t", "5")  # a crashed run's
        deployment.compose("build")
        step = _timed(times, "service_images", step)
        deployment.up(SCALE)
        _timed(times, "up_healthy", step)
        _timed(times, "total_to_ready", started)
        print(f"\ncompose test set-up times (s): {times}", file=sys.__stderr__)
        yield deployment
    finally:  # whatever failed: the containers, networks and volumes go, then the daemon
        try:
            if deployment is not None:
                with contextlib.suppress(engine.EngineError):  # no images: nothing to record
                    _record(deployment)
                deployment.compose("down", "-v", "--remove-orphans", "-t", "10")
        finally:
            pool.shutdown(wait=True)  # an unfinished build (an error above) ends first
            docker.stop()


def _record(deployment: Deployment) -> None:
    """Set-up times and image sizes, for the README and the issue's closing note."""
    sizes = {}
    for service in SCALE:
        tag = f"authbus/{service}:latest"
        size = deployment.docker.docker("image", "inspect", "-f", "{{.Size}}", tag).stdout
        sizes[tag] = round(int(size) / 1e6, 1)
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    TIMES.write_text(json.dumps({"seconds": deployment.times, "image_mb": sizes}, indent=2))
