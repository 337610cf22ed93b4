"""ratelimit settings: env prefix `AUTHBUS_RATELIMIT_` (see .env.example)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from authbus_ratelimit.core.fixed_window import Policy
from authbus_shared.settings import OpsSettings, ServiceSettings


class RatelimitSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTHBUS_RATELIMIT_")

    limit: int = Field(default=60, ge=1, description="Requests per window per account (R1).")
    window_s: int = Field(default=60, ge=1, description="Window length in seconds (R1).")
    lockout_s: int = Field(
        default=60, ge=0, description="Lockout after the limit is passed, seconds; 0: none (R3)."
    )
    ops: OpsSettings = Field(default_factory=lambda: OpsSettings(port=9102))

    def global_policy(self) -> Policy:
        return Policy(
            name="global",
            limit=self.limit,
            window=timedelta(seconds=self.window_s),
            lockout=timedelta(seconds=self.lockout_s) if self.lockout_s else None,
        )
