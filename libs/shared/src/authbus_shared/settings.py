"""Settings the services share, nested into each service's own settings class (STYLE 6).

Each service has one pydantic-settings class with its own env prefix (`AUTHBUS_AUTHZ_`,
`AUTHBUS_RATELIMIT_`, `AUTHBUS_API_`); the groups below nest in with `__`, e.g.
`AUTHBUS_API_KAFKA__BOOTSTRAP_SERVERS`. Settings are built once at start and passed down.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class KafkaSettings(BaseModel):
    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    client_id_prefix: str = Field(default="authbus", description="Prefix of Kafka client ids.")
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prepended to every topic name (several deployments on one cluster; tests).",
    )
    linger_ms: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Producer linger in ms: 0 for request/reply latency (each hop pays it); "
        "senders that batch (hits, usage) already hand whole batches over at once.",
    )
    request_timeout_ms: int = Field(default=10_000, ge=1000, description="Kafka request timeout.")
    topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor for topics this service creates."
    )


class LogSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    format: Literal["json", "console"] = Field(
        default="json", description="json for machines, console for people."
    )


class OpsSettings(BaseModel):
    """The operations endpoint of a headless service: /metrics, /healthz, /readyz."""

    host: str = Field(default="0.0.0.0", description="Address the ops endpoint binds.")
    port: int = Field(default=9100, ge=0, le=65535, description="Port of the ops endpoint.")


class ServiceSettings(BaseSettings):
    """Common base: strict about unknown nested keys, `__` between nesting levels."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__", extra="ignore", case_sensitive=False, frozen=True
    )

    instance_id: str = Field(
        default_factory=default_instance_id,
        description="Unique id of this instance (default: host-pid-random).",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    log: LogSettings = Field(default_factory=LogSettings)


S = TypeVar("S", bound=ServiceSettings)


class ConfigError(SystemExit):
    """Bad configuration: the service refuses to start, naming the variables."""


def load(cls: type[S]) -> S:
    """Build settings from the environment, or exit naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = []
        for err in exc.errors():
            var = prefix + "__".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {var}: {err['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
