"""api settings: env prefix `AUTHBUS_API_` (see .env.example)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from authbus_shared.settings import ServiceSettings


class ApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTHBUS_API_")

    host: str = Field(default="0.0.0.0", description="Address the HTTP server binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port (API and probes).")
    verify_timeout_ms: int = Field(
        default=2000, ge=10, description="How long a request waits for authz before a 503."
    )
    cache_max_entries: int = Field(
        default=100_000, ge=1, description="Verdicts kept in memory (LRU beyond)."
    )
    cache_ttl_s: float = Field(
        default=60.0, gt=0, description="Longest a valid verdict is reused (safety net)."
    )
    cache_negative_ttl_s: float = Field(
        default=5.0, ge=0, description="How long a denial is reused (shields authz from floods)."
    )
    hits_flush_ms: int = Field(
        default=20, ge=1, description="How often counted hits are shipped to ratelimit."
    )
    decisions_lookback_s: int = Field(
        default=300,
        ge=0,
        description="At start, read rate decisions of this last stretch (longest window/lockout).",
    )

    usage_report_s: float = Field(
        default=30.0, gt=0, description="How often credential uses (last-used times) go to authz."
    )
    keys_deprecated_at: datetime = Field(
        default=datetime(2024, 1, 1, tzinfo=UTC),
        description="When legacy API keys were deprecated (the Deprecation header, RFC 9745).",
    )
    keys_deprecation_link: str = Field(
        default="/v0/deprecations/api-keys",
        description="Where the deprecation of API keys is explained (Link rel=deprecation).",
    )

    @property
    def deprecation_headers(self) -> dict[str, str]:
        """Added to every answer to a request authenticated with a legacy key (SPEC A3)."""
        return {
            "Deprecation": f"@{int(self.keys_deprecated_at.timestamp())}",
            "Link": f'<{self.keys_deprecation_link}>; rel="deprecation"; type="text/html"',
        }

    @property
    def verify_timeout(self) -> timedelta:
        return timedelta(milliseconds=self.verify_timeout_ms)
