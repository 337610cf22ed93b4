"""Prometheus for local runs and tests: Debian's package, unpacked into the cache.

Install (`ensure`): `apt-get download` of `prometheus` and of the JavaScript packages its web
UI links to (package lists of our own in the cache: no root, and a fresh machine without lists
works), each unpacked with `dpkg-deb -x` into `.cache/tools/prometheus-<version>/` (skipped
when present). Nothing is installed system-wide; `promtool` comes with it.

Run (`LocalPrometheus`): one process listening on 127.0.0.1 only (it has no authentication),
its configuration, data and log in `<run dir>/prometheus/`, stopped by its recorded pid. The
configuration (`render_config`) scrapes each instance of a fleet as job `api`, `authz` or
`ratelimit` (the job names of the compose deployment, which the rules rely on) and loads the
rules of `deploy/prometheus/rules/`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from authbus_dev import apt
from authbus_dev.fleet import START_ORDER, Fleet
from authbus_dev.paths import CACHE, REPO
from authbus_dev.procs import Managed

TOOLS = CACHE / "tools"
APT_CACHE = CACHE / "apt"  # package lists and downloaded archives of our own
# the package, then what its web UI's static folder links to (../../../javascript/...)
PACKAGES = (
    "prometheus",
    "fonts-glyphicons-halflings",
    "libjs-bootstrap4",
    "libjs-d3",
    "libjs-eonasdan-bootstrap-datetimepicker",
    "libjs-jquery",
    "libjs-jquery-hotkeys",
    "libjs-moment",
    "libjs-moment-timezone",
    "libjs-mustache",
    "libjs-popper.js",
    "libjs-rickshaw",
)
DEPLOY = REPO / "deploy" / "prometheus"
RULES = DEPLOY / "rules"
RULE_TESTS = DEPLOY / "tests"
DEFAULT_PORT = 9090


class PrometheusUnavailable(RuntimeError):
    """The Debian package could not be fetched or unpacked; the message says why."""


@dataclass(frozen=True)
class Install:
    """An unpacked package tree: `<root>/usr/bin/prometheus`, `promtool`, the web assets."""

    root: Path

    @property
    def prometheus(self) -> Path:
        return self.root / "usr" / "bin" / "prometheus"

    @property
    def promtool(self) -> Path:
        return self.root / "usr" / "bin" / "promtool"

    @property
    def version(self) -> str:
        return self.root.name.removeprefix("prometheus-")

    def web_flags(self) -> list[str]:
        etc = self.root / "etc" / "prometheus"
        return [
            f"--web.local-assets={self.root / 'usr' / 'share' / 'prometheus' / 'web'}/",
            f"--web.console.templates={etc / 'consoles'}",
            f"--web.console.libraries={etc / 'console_libraries'}",
        ]


def installed(tools: Path = TOOLS) -> Install | None:
    """The newest complete install in the cache, if any."""
    found = sorted(tools.glob("prometheus-*/.complete"))
    return Install(found[-1].parent) if found else None


def ensure(tools: Path = TOOLS) -> Install:
    """Prometheus and promtool from the cache, fetched and unpacked first if absent."""
    present = installed(tools)
    if present is not None:
        return present
    with tempfile.TemporaryDirectory() as tmp:
        debs = _download(Path(tmp), PACKAGES)
        version = _upstream_version(debs[0])
        target = tools / f"prometheus-{version}"
        tools.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="prometheus.partial-", dir=tools))
        try:
            for deb in debs:
                _run(["dpkg-deb", "-x", str(deb), str(staging)])
            (staging / ".complete").write_text(version + "\n")
            staging.rename(target)
        except (PrometheusUnavailable, OSError):
            shutil.rmtree(staging, ignore_errors=True)
            if not (target / ".complete").exists():  # else another process was quicker
                raise
    return Install(target)


def _upstream_version(deb: Path) -> str:
    """`2.42.0` of Debian's `2.42.0+ds-5+deb12u1`."""
    full = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    return full.split(":")[-1].split("+")[0].split("-")[0]


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PrometheusUnavailable(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise PrometheusUnavailable(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _download(folder: Path, packages: Sequence[str]) -> list[Path]:
    """The packages' archives (the first package's first), lists and archives kept in the
    cache."""
    try:
        return apt.download(folder, packages, APT_CACHE / "lists", APT_CACHE / "archives")
    except apt.AptUnavailable as exc:
        raise PrometheusUnavailable(str(exc)) from exc


# --- configuration ------------------------------------------------------------------------


def fleet_targets(fleet: Fleet) -> dict[str, list[str]]:
    """host:port of every instance's metrics endpoint, by job (the service's name)."""
    return {s: [f"127.0.0.1:{i.port}" for i in fleet.instances(s)] for s in START_ORDER}


def render_config(
    targets: Mapping[str, Sequence[str]],
    *,
    rules: Path = RULES,
    scrape_interval: str = "5s",
    evaluation_interval: str = "5s",
) -> str:
    """A prometheus.yml (JSON, which YAML reads) scraping `targets` and loading `rules`."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": [str(rules / "*.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(hosts)}]}
            for job, hosts in targets.items()
            if hosts
        ],
    }
    header = "# written by authbus_dev.prometheus for a local fleet; deploy/prometheus/\n"
    return header + json.dumps(config, indent=2) + "\n"


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalPrometheus:
    """Prometheus of one run folder, on 127.0.0.1:`port`."""

    run_dir: Path
    port: int = DEFAULT_PORT

    @property
    def folder(self) -> Path:
        return self.run_dir / "prometheus"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> Managed:
        return Managed("prometheus", self.folder)

    def start(self, config: str, install: Install | None = None) -> None:
        """Write `config` and start Prometheus on it (a running one is left as it is)."""
        tool = install or ensure()
        self.folder.mkdir(parents=True, exist_ok=True)
        config_file = self.folder / "prometheus.yml"
        config_file.write_text(config)
        argv = [
            str(tool.prometheus),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=2d",
            *tool.web_flags(),
        ]
        self.process.start(argv)

    def wait_ready(self, timeout_s: float = 30.0) -> float:
        """Seconds until `/-/ready` answers 200 (raises PrometheusUnavailable if it exits)."""
        started = time.monotonic()
        while True:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            if not self.process.running():
                raise PrometheusUnavailable(f"prometheus exited:\n{self.process.tail()}")
            if time.monotonic() - started > timeout_s:
                raise PrometheusUnavailable(f"prometheus not ready in {timeout_s}s")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.stop()


def start_for_fleet(fleet: Fleet, port: int = DEFAULT_PORT) -> LocalPrometheus:
    """Prometheus scraping every instance of `fleet` with the project's rules, ready."""
    prometheus = LocalPrometheus(fleet.infra.run_dir, port)
    prometheus.start(render_config(fleet_targets(fleet)))
    prometheus.wait_ready()
    return prometheus


# --- promtool -----------------------------------------------------------------------------


def rule_files(rules: Path = RULES) -> list[Path]:
    return sorted(rules.glob("*.yml"))


def rule_tests(tests: Path = RULE_TESTS) -> list[Path]:
    return sorted(tests.glob("*.yml"))


def promtool(*args: str, install: Install | None = None) -> subprocess.CompletedProcess[str]:
    """`promtool ARGS` (its output captured, never raising on a failed check)."""
    tool = install or ensure()
    return subprocess.run(
        [str(tool.promtool), *args], capture_output=True, text=True, timeout=300, check=False
    )
