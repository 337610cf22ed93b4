"""ratelimit settings: env prefix `AUTHBUS_RATELIMIT_` (see .env.example).

ratelimit holds no policy of its own: the api's configuration defines the policies and every
lease ask carries its policy's parameters (ADR 0010). It reads the policies file only to know
how far back a new owner must replay (`authbus_shared.horizon`, ADR 0014)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from authbus_shared.horizon import checked_horizon, policies_from_file
from authbus_shared.settings import OpsSettings, ServiceSettings

HORIZON_VARIABLE = "AUTHBUS_RATELIMIT_REPLAY_HORIZON_S"


class RatelimitSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTHBUS_RATELIMIT_")

    policies_file: Path | None = Field(
        default=None,
        description=(
            "The api's rate policies file (the same as AUTHBUS_API_RATE__POLICIES_FILE); "
            "unset: the built-in policies. Only sets the replay horizon's default and check."
        ),
    )
    replay_horizon_s: int | None = Field(
        default=None,
        ge=1,
        description=(
            "How far back a new owner of a partition replays asks to rebuild windows, locks "
            "and strikes (R4); unset: what the policies need (longest window + lockout cap + "
            "strike memory + 60 s); shorter than that refuses the start."
        ),
    )
    session_timeout_ms: int = Field(
        default=6000,
        ge=6000,
        le=300_000,
        description="How soon the group notices a dead instance and moves its partitions.",
    )
    static_membership: bool = Field(
        default=False,
        description=(
            "Join the group under INSTANCE_ID as a static member (KIP-345): set it only when "
            "INSTANCE_ID is stable across restarts; a restart then takes its partitions back "
            "without a rebalance, and a stopped instance keeps them for SESSION_TIMEOUT_MS."
        ),
    )
    ops: OpsSettings = Field(default_factory=lambda: OpsSettings(port=9102))

    def replay_horizon(self) -> timedelta:
        """The replay horizon, checked against the policies (raises `ConfigError`)."""
        policies = policies_from_file(self.policies_file)
        return checked_horizon(self.replay_horizon_s, policies, variable=HORIZON_VARIABLE)
