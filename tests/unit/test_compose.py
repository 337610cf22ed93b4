"""The container deployment, checked offline: docker-compose.yml, the Dockerfiles, Prometheus.

No Docker and no network: the files are parsed and cross-checked against each other and against
the services' own packaging and settings, so a renamed console script, a moved port or a
dangling `depends_on` shows up here rather than at `docker compose up`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from authbus_api.settings import ApiSettings
from authbus_authz.settings import AuthzSettings
from authbus_ratelimit.settings import RatelimitSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GATEWAY_CONF = ROOT / "deploy" / "nginx" / "gateway.conf"

SCALED_SERVICES = ("api", "authz", "ratelimit")
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

# The variable each service reads its HTTP port (metrics and probes) from, and the default its
# settings class gives it when compose does not set the variable.
PORT_VARIABLES = {
    "api": "AUTHBUS_API_PORT",
    "authz": "AUTHBUS_AUTHZ_OPS__PORT",
    "ratelimit": "AUTHBUS_RATELIMIT_OPS__PORT",
}
DEFAULT_PORTS = {
    "api": ApiSettings.model_construct().port,
    "authz": AuthzSettings.model_construct().ops.port,
    "ratelimit": RatelimitSettings.model_construct().ops.port,
}

# `${NAME:?message}`: compose refuses to start while NAME is unset or empty.
REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}$")


# ---- helpers -------------------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


@cache
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def environment(service: str) -> dict[str, str]:
    """A service's environment as a mapping, whichever form (list or mapping) compose uses."""
    env = services()[service].get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def depends_on(service: str) -> dict[str, str]:
    """`depends_on` as {target: condition}; the short (list) form means service_started."""
    deps = services()[service].get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {target: spec.get("condition", "service_started") for target, spec in deps.items()}


def http_port(service: str) -> int:
    """The port a service serves metrics and probes on, as compose configures it."""
    configured = environment(service).get(PORT_VARIABLES[service])
    return int(configured) if configured else DEFAULT_PORTS[service]


def fixed_host_ports(service: str) -> list[str]:
    """`ports` entries that bind a fixed host port (these stop `--scale` past one replica)."""
    fixed = []
    for entry in services()[service].get("ports", []):
        if isinstance(entry, dict):
            if entry.get("published"):
                fixed.append(str(entry))
        elif ":" in str(entry):
            fixed.append(str(entry))
    return fixed


def healthcheck_command(service: str) -> str:
    test = services()[service]["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def scrape_targets() -> dict[str, list[tuple[str, int]]]:
    """{job_name: [(dns name, port), ...]} from the Prometheus DNS service discovery."""
    jobs: dict[str, list[tuple[str, int]]] = {}
    for job in load_yaml(PROMETHEUS_FILE)["scrape_configs"]:
        jobs[job["job_name"]] = [
            (name, int(sd["port"])) for sd in job.get("dns_sd_configs", []) for name in sd["names"]
        ]
    return jobs


def advertised_broker_addresses() -> set[str]:
    """host:port of each listener the broker advertises to clients."""
    listeners = environment("kafka")["KAFKA_ADVERTISED_LISTENERS"].split(",")
    return {listener.split("://", 1)[1] for listener in listeners}


def dockerfile_of(service: str) -> Path:
    build = services()[service]["build"]
    if isinstance(build, str):
        return ROOT / build / "Dockerfile"
    return ROOT / str(build.get("context", ".")) / str(build.get("dockerfile", "Dockerfile"))


def dockerfile_stage(service: str) -> list[str]:
    """The lines of the stage compose builds for `service` (its `target`, else the last
    stage), continuation lines joined, comments left out."""
    text = dockerfile_of(service).read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            current = []
            words = line.split()
            stages[
                words[-1] if len(words) > 2 and words[-2].upper() == "AS" else str(len(stages))
            ] = current
        current.append(line)
    build = services()[service]["build"]
    target = build.get("target") if isinstance(build, dict) else None
    return stages[target] if target else current


def dockerfile_instructions(service: str, instruction: str) -> list[str]:
    """Arguments of every `instruction` line in the service's stage."""
    prefix = instruction.upper() + " "
    return [
        line[len(prefix) :].strip()
        for line in dockerfile_stage(service)
        if line.upper().startswith(prefix)
    ]


def console_scripts(service: str) -> set[str]:
    pyproject = ROOT / "services" / service / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["scripts"]
    return set(scripts)


# ---- the compose file as a whole -----------------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec() -> None:
    check_jsonschema = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [
            str(check_jsonschema),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_depends_on_names_existing_services_with_valid_conditions() -> None:
    for service in services():
        for target, condition in depends_on(service).items():
            assert target in services(), f"{service} depends on unknown service {target!r}"
            assert condition in DEPENDS_ON_CONDITIONS, f"{service} -> {target}: {condition!r}"


def test_services_wait_for_a_healthy_broker_and_authz_for_mongo() -> None:
    for service in SCALED_SERVICES:
        assert depends_on(service).get("kafka") == "service_healthy", service
    assert depends_on("authz").get("mongo") == "service_healthy"


def test_every_built_service_has_its_dockerfile() -> None:
    built = [name for name, spec in services().items() if "build" in spec]
    assert set(SCALED_SERVICES) <= set(built)
    for service in built:
        assert dockerfile_of(service).is_file(), f"{service}: no {dockerfile_of(service)}"


def test_bind_mounted_config_files_exist() -> None:
    for service, spec in services().items():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{service} mounts missing {source}"


# ---- scaling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SCALED_SERVICES)
def test_scaled_service_has_no_container_name_or_fixed_host_port(service: str) -> None:
    spec = services()[service]
    assert "container_name" not in spec
    assert fixed_host_ports(service) == []


@pytest.mark.parametrize("service", SCALED_SERVICES)
def test_scaled_service_readiness_probe_hits_its_own_port(service: str) -> None:
    assert "healthcheck" in services()[service]
    command = healthcheck_command(service)
    assert f":{http_port(service)}/readyz" in command, command


def test_gateway_publishes_the_api_and_proxies_to_its_port() -> None:
    assert "8000:8000" in [str(entry) for entry in services()["gateway"]["ports"]]
    conf = GATEWAY_CONF.read_text(encoding="utf-8")
    assert f"http://api:{http_port('api')}" in conf
    # re-resolving the service name is what lets new api replicas receive traffic
    assert re.search(r"resolver\s+127\.0\.0\.11\b", conf)
    assert re.search(r"proxy_pass\s+\$\w+;", conf)


# ---- Kafka ---------------------------------------------------------------------------------------


def test_every_bootstrap_setting_names_the_advertised_broker_listener() -> None:
    advertised = advertised_broker_addresses()
    bootstrap = {
        (service, name): value
        for service in services()
        for name, value in environment(service).items()
        if name.startswith("AUTHBUS_") and name.endswith("KAFKA__BOOTSTRAP_SERVERS")
    }
    assert {service for service, _ in bootstrap} >= set(SCALED_SERVICES)
    for (service, name), value in bootstrap.items():
        assert set(value.split(",")) <= advertised, f"{service}: {name}={value}"


def test_broker_leaves_topic_creation_to_the_services() -> None:
    assert environment("kafka")["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


# ---- Prometheus ----------------------------------------------------------------------------------


def test_prometheus_scrapes_only_compose_services() -> None:
    for job, targets in scrape_targets().items():
        for name, _ in targets:
            assert name in services(), f"job {job} scrapes unknown service {name!r}"


@pytest.mark.parametrize("service", SCALED_SERVICES)
def test_prometheus_scrapes_every_replica_on_the_service_port(service: str) -> None:
    assert scrape_targets().get(service) == [(service, http_port(service))]


# ---- Dockerfiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SCALED_SERVICES)
def test_dockerfile_runs_a_console_script_of_its_package(service: str) -> None:
    cmds = dockerfile_instructions(service, "CMD")
    assert cmds, "no CMD"
    command = json.loads(cmds[-1])  # the exec form: a JSON array
    assert command[0] in console_scripts(service), command


@pytest.mark.parametrize("service", SCALED_SERVICES)
def test_dockerfile_exposes_the_service_port(service: str) -> None:
    exposed = dockerfile_instructions(service, "EXPOSE")
    assert str(DEFAULT_PORTS[service]) in " ".join(exposed).split()


@pytest.mark.parametrize("service", SCALED_SERVICES)
def test_each_service_image_installs_its_own_package_only(service: str) -> None:
    """The venv a target copies comes from the build stage of that same package."""
    copied = dockerfile_instructions(service, "COPY")
    assert copied == [f"--from=build-{service} /app/.venv /app/.venv"]
    dockerfile = dockerfile_of(service).read_text(encoding="utf-8").replace("\\\n", " ")
    stage = dockerfile.split(f" AS build-{service}\n", 1)[1].split("\nFROM ", 1)[0]
    packages = set(re.findall(r"--package (\S+)", stage))
    assert packages == {f"authbus-{service}"}


def test_the_images_default_to_the_official_python_base_and_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in dockerfile
    runtime = dockerfile.split(" AS runtime\n", 1)[1].split("\nFROM ", 1)[0]
    assert re.search(r"^USER authbus$", runtime, re.M)


# ---- secrets -------------------------------------------------------------------------------------


def test_key_encryption_key_comes_from_the_operator_environment() -> None:
    assigned = {
        (service, name): value
        for service in services()
        for name, value in environment(service).items()
        if name.endswith("KEY_ENCRYPTION_KEY")
    }
    assert ("authz", "AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY") in assigned
    for (service, name), value in assigned.items():
        assert REQUIRED_REFERENCE.match(value), f"{service}: {name} must be ${{VAR:?message}}"
