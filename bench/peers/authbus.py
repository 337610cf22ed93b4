"""authbus's side of the comparison: authz and ratelimit running for the whole run (unpinned:
idle on a cache hit), an api instance started per row with that row's settings and pinned,
an account and an ES256 token made with the real `authbus-admin` over Kafka."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from authbus_dev.fleet import Fleet, Instance, Ports, Service
from authbus_dev.infra import InfraConfig
from authbus_dev.paths import VENV_BIN
from authbus_dev.ports import free_port, free_port_run
from bench.verify_over_kafka.interrupts import uninterrupted

from . import configs
from .procs import BenchError, pin
from .tokens import Minted, mint

PASSWORD = "correct horse battery staple"
BACKENDS: dict[Service, int] = {"authz": 1, "ratelimit": 1}


@dataclass(frozen=True)
class Authbus:
    infra: InfraConfig
    prefix: str  # the run's Kafka topic prefix

    @classmethod
    def prepare(cls, infra: InfraConfig) -> Authbus:
        """Write the routes and policies files into the run folder."""
        made = cls(infra, f"peers{uuid.uuid4().hex[:6]}.")
        made.routes_file.write_text(configs.AUTHBUS_ROUTES)
        made.policies_file.write_text(configs.AUTHBUS_POLICIES)
        return made

    @property
    def routes_file(self) -> Path:
        return self.infra.run_dir / "routes.toml"

    @property
    def policies_file(self) -> Path:
        return self.infra.run_dir / "policies.toml"

    def env(self) -> dict[str, str]:
        return {
            "KAFKA__TOPIC_PREFIX": self.prefix,
            "AUTHBUS_API_RATE__POLICIES_FILE": str(self.policies_file),  # ratelimit's too
            "AUTHBUS_API_ROUTES_FILE": str(self.routes_file),
            "AUTHBUS_API_TRUSTED_PROXIES": '["127.0.0.0/8"]',  # hey asks from loopback
        }

    def backends(self) -> Fleet:
        ports = Ports(authz=free_port_run(1), ratelimit=free_port_run(1))
        return Fleet(self.infra, BACKENDS, ports, env=self.env())

    def admin(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        """The real `authbus-admin` CLI (over Kafka); its JSON answer."""
        env = os.environ | {
            "AUTHBUS_ADMIN_KAFKA__BOOTSTRAP_SERVERS": self.infra.bootstrap,
            "AUTHBUS_ADMIN_KAFKA__TOPIC_PREFIX": self.prefix,
        }
        done = subprocess.run(
            [str(VENV_BIN / "authbus-admin"), *args, "--json"],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"authbus-admin {' '.join(args)} failed:\n{done.stderr}")
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    def new_account(self) -> str:
        """A new account, granted the route's scope; its email."""
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        self.admin("account", "create", email, "--password-stdin", stdin=PASSWORD + "\n")
        self.admin("account", "grant-scopes", email, configs.SCOPE)
        return email

    def new_token(self, email: str) -> str:
        """A token (ES256) for the account, with the route's scope."""
        made = self.admin("token", "create", email, "--name", "bench", f"--scope={configs.SCOPE}")
        token: str = made["token"]
        return token

    def fresh_tokens(self, email: str, count: int) -> Minted:
        """`count` more tokens like `new_token`'s, over one operator connection."""
        return mint(
            bootstrap=self.infra.bootstrap,
            topic_prefix=self.prefix,
            email=email,
            scopes=(configs.SCOPE,),
            count=count,
        )

    @contextlib.contextmanager
    def api(self, cpus: str, settings: Mapping[str, str]) -> Iterator[tuple[Instance, int]]:
        """One api instance with `settings` on top of the run's, every thread pinned to
        `cpus` once it is ready; stopped on the way out."""
        fleet = Fleet(
            self.infra, {"api": 1}, Ports(api=free_port()), env=self.env() | dict(settings)
        )
        (instance,) = fleet.instances("api")
        try:
            fleet.start(instance)
            fleet.wait_ready(instance)
            pid = fleet.process(instance).pid()
            if pid is None:
                raise BenchError("the api instance has no pid")
            pin(pid, cpus)
            yield instance, pid
        finally:
            with uninterrupted():
                fleet.stop(instance)


def metric_sum(url: str, name: str, **labels: str) -> float:
    """The sum of one metric's samples with these labels on one process's /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def counters(api: Instance, backends: Fleet) -> dict[str, float]:
    """What the api and authz counted: verdict cache hits and misses, rate checks, and the
    verifications authz made (to tell what a row's requests cost beyond the api)."""
    (authz,) = backends.instances("authz")
    return {
        "cache hits": metric_sum(api.url, "api_verdict_cache_lookups_total", result="hit"),
        "cache misses": metric_sum(api.url, "api_verdict_cache_lookups_total", result="miss"),
        "rate checks": metric_sum(api.url, "api_rate_decisions_total", result="allowed"),
        "authz verifications": metric_sum(authz.url, "authz_verify_verdicts_total"),
    }
