"""Running the three services as real processes on this machine (local runs and e2e tests).

Each instance gets its own port and instance id, the infrastructure's addresses, and the
run's secrets; its log goes to `<run dir>/services/<name>.log`. Ready means its `/readyz`
answers 200. Instance ids are stable (`ratelimit-0` is `ratelimit-0` again after a restart), so
ratelimit instances join their group as static members (ADR 0014), and read the api's rate
policies file when one is set, for their replay horizon.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from authbus_dev.infra import InfraConfig, InfraError
from authbus_dev.paths import VENV_BIN
from authbus_dev.procs import Managed

Service = Literal["authz", "ratelimit", "api"]
START_ORDER: tuple[Service, ...] = ("authz", "ratelimit", "api")
PREFIX: dict[Service, str] = {
    "authz": "AUTHBUS_AUTHZ_",
    "ratelimit": "AUTHBUS_RATELIMIT_",
    "api": "AUTHBUS_API_",
}
PORT_VAR: dict[Service, str] = {"authz": "OPS__PORT", "ratelimit": "OPS__PORT", "api": "PORT"}


@dataclass(frozen=True)
class Ports:
    api: int = 8000
    authz: int = 9110
    ratelimit: int = 9120

    def of(self, service: Service, index: int) -> int:
        base: int = getattr(self, service)
        return base + index


@dataclass(frozen=True)
class Instance:
    service: Service
    index: int
    port: int

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def load_or_create_secrets(run_dir: Path) -> dict[str, str]:
    """The run's secrets (kept in the run folder, so restarts keep their keys)."""
    path = run_dir / "secrets.env"
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        kek = base64.b64encode(os.urandom(32)).decode()
        path.write_text(f"AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY={kek}\n")
        path.chmod(0o600)
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


@dataclass
class Fleet:
    infra: InfraConfig
    counts: Mapping[Service, int]
    ports: Ports = field(default_factory=Ports)
    env: Mapping[str, str] = field(default_factory=dict)  # extra settings for every instance

    @property
    def folder(self) -> Path:
        return self.infra.run_dir / "services"

    def instances(self, service: Service | None = None) -> list[Instance]:
        return [
            Instance(s, i, self.ports.of(s, i))
            for s in START_ORDER
            if service in (None, s)
            for i in range(self.counts.get(s, 0))
        ]

    def process(self, instance: Instance) -> Managed:
        return Managed(instance.name, self.folder)

    def environment(self, instance: Instance) -> dict[str, str]:
        prefix = PREFIX[instance.service]
        env = {
            prefix + "INSTANCE_ID": instance.name,
            prefix + "KAFKA__BOOTSTRAP_SERVERS": self.infra.bootstrap,
            prefix + PORT_VAR[instance.service]: str(instance.port),
            prefix + "OPS__HOST": "127.0.0.1",
            prefix + "HOST": "127.0.0.1",
        }
        if instance.service == "authz":
            env[prefix + "MONGO__URI"] = self.infra.mongo_uri
        if instance.service == "ratelimit":
            env[prefix + "STATIC_MEMBERSHIP"] = "true"
            if "AUTHBUS_API_RATE__POLICIES_FILE" in self.env:
                env[prefix + "POLICIES_FILE"] = self.env["AUTHBUS_API_RATE__POLICIES_FILE"]
        env |= load_or_create_secrets(self.infra.run_dir)
        for key, value in self.env.items():  # generic names: KAFKA__TOPIC_PREFIX=...
            env[key if key.startswith("AUTHBUS_") else prefix + key] = value
        return env

    def start(self, instance: Instance) -> None:
        binary = VENV_BIN / f"authbus-{instance.service}"
        self.process(instance).start([str(binary)], env=self.environment(instance))

    def start_all(self, timeout_s: float = 60.0) -> None:
        """Start every instance, each service's instances once the previous service is ready
        (authz creates the shared keys the api waits for)."""
        for service in START_ORDER:
            group = self.instances(service)
            for instance in group:
                self.start(instance)
            for instance in group:
                self.wait_ready(instance, timeout_s)

    def wait_ready(self, instance: Instance, timeout_s: float = 60.0) -> float:
        started = time.monotonic()
        proc = self.process(instance)
        while True:
            try:
                if httpx.get(f"{instance.url}/readyz", timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            if not proc.running():
                raise InfraError(f"{instance.name} exited; log tail:\n{proc.tail()}")
            if time.monotonic() - started > timeout_s:
                raise InfraError(f"{instance.name} not ready in {timeout_s}s:\n{proc.tail()}")
            time.sleep(0.2)

    def stop(self, instance: Instance) -> None:
        self.process(instance).stop()

    def kill(self, instance: Instance) -> None:
        self.process(instance).kill()

    def stop_all(self) -> None:
        for instance in reversed(self.instances()):
            self.stop(instance)

    def stop_recorded(self) -> None:
        """Stop every instance with a pid file in the run folder (whatever started it)."""
        for pid_file in sorted(self.folder.glob("*.pid"), reverse=True):
            Managed(pid_file.stem, self.folder).stop()
