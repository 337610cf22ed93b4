"""ratelimit settings: env prefix `AUTHBUS_RATELIMIT_` (see .env.example).

ratelimit holds no policy of its own: the api's configuration defines the policies and every
lease ask carries its policy's parameters (ADR 0010)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from authbus_shared.settings import OpsSettings, ServiceSettings


class RatelimitSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTHBUS_RATELIMIT_")

    replay_horizon_s: int = Field(
        default=900,
        ge=1,
        description=(
            "How far back a new owner of a partition replays asks to rebuild windows, locks "
            "and strikes; must cover the longest window plus the longest lockout (R4)."
        ),
    )
    session_timeout_ms: int = Field(
        default=6000,
        ge=6000,
        le=300_000,
        description="How soon the group notices a dead instance and moves its partitions.",
    )
    ops: OpsSettings = Field(default_factory=lambda: OpsSettings(port=9102))

    @property
    def replay_horizon(self) -> timedelta:
        return timedelta(seconds=self.replay_horizon_s)
