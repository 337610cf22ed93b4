"""api settings: env prefix `AUTHBUS_API_` (see .env.example)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from authbus_api.http.limits import EdgeLimits
from authbus_shared.settings import ServiceSettings


class RateSettings(BaseModel):
    """How this api instance enforces the rate policies (ADR 0010)."""

    policies_file: Path | None = Field(
        default=None,
        description="TOML file of rate policies (see config/rate-policies.toml); unset: built-in.",
    )
    ask_timeout_ms: int = Field(
        default=200, ge=10, description="How long a request waits for a lease before fallback."
    )
    fallback_s: float = Field(
        default=2.0, gt=0, description="How long a key stays in fallback before asking again."
    )
    release_idle_ms: int = Field(
        default=1000, ge=10, description="An unused slice idle this long goes back to its owner."
    )
    lease_margin_ms: int = Field(
        default=50,
        ge=0,
        description="A slice is not spent in its window's last moments (clock skew with Kafka).",
    )
    replay_horizon_s: int | None = Field(
        default=None,
        ge=1,
        description=(
            "ratelimit's replay horizon, declared here too (keep it equal to "
            "AUTHBUS_RATELIMIT_REPLAY_HORIZON_S): shorter than the policies need (longest "
            "window + lockout cap + strike memory + 60 s) refuses the start; unset: that need."
        ),
    )


class StalenessSettings(BaseModel):
    """How stale the cache may be (SPEC A12, ADR 0016): the changes feed's heartbeats say how
    far this instance has read; past `bound_s` a cached verdict is verified again."""

    bound_s: float = Field(
        default=2.0,
        gt=0,
        description="Cached verdicts are used as they are only while every change acknowledged "
        "more than this long ago has been read (plus the hosts' clock skew); past it: verify "
        "again.",
    )
    grace_s: float = Field(
        default=30.0,
        ge=0,
        description="When authz cannot verify again (broker or authz away), cached verdicts "
        "are still served until the view is bound + this old; then 503. 0: fail closed at once.",
    )
    reverify_timeout_ms: int = Field(
        default=500,
        ge=10,
        description="How long a request with a stale cached verdict waits for authz before the "
        "grace applies.",
    )
    probe_every_s: float = Field(
        default=1.0,
        gt=0,
        description="After authz failed to verify again, stale cached verdicts go straight to "
        "the grace (no wait) for this long; then a request tries again.",
    )
    clock_skew_ms: int = Field(
        default=250,
        ge=0,
        description="Largest difference between the clocks of authz and api hosts (NTP).",
    )


def _loopback() -> list[IPv4Network | IPv6Network]:
    return [IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")]


class ForwardAuthSettings(BaseModel):
    """Forward auth (G3): which proxy asks, and what an undeclared path gets (A11)."""

    dialect: Literal["nginx", "traefik", "envoy"] = Field(
        default="nginx",
        description=(
            "The proxy in front: nginx (X-Original-Method/-URI), traefik (X-Forwarded-Method/"
            "-Uri) or envoy (ext_authz path_prefix /v0/forward-auth); only its headers count."
        ),
    )
    unmatched: Literal["deny", "authenticate"] = Field(
        default="deny",
        description=(
            "A path no declared route has: deny (404), or authenticate (any valid credential "
            "passes, under the policies that apply everywhere)."
        ),
    )


class ApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTHBUS_API_")

    host: str = Field(default="0.0.0.0", description="Address the HTTP server binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port (API and probes).")
    verify_timeout_ms: int = Field(
        default=2000, ge=10, description="How long a request waits for authz before a 503."
    )
    verify_hedge_ms: int = Field(
        default=250,
        ge=0,
        description="A token or key verification unanswered this long is sent again to another "
        "partition (its authz may have died before the group noticed); 0: never.",
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
    decisions_lookback_s: int = Field(
        default=1800,
        ge=0,
        description="At start, read lockouts of this last stretch (the longest lockout).",
    )
    rate: RateSettings = Field(default_factory=RateSettings)
    staleness: StalenessSettings = Field(default_factory=StalenessSettings)
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(
        default_factory=_loopback,
        description=(
            "Proxies (CIDRs, a JSON list) whose X-Forwarded-For names the real client (R6, "
            "A10) and that may ask forward auth; default: loopback only."
        ),
    )
    forward_auth: ForwardAuthSettings = Field(default_factory=ForwardAuthSettings)
    edge: EdgeLimits = Field(default_factory=EdgeLimits)
    routes_file: Path | None = Field(
        default=None,
        description="TOML file of the routes to front (see config/routes.toml); unset: /v0 only.",
    )
    signup: Literal["open", "admin"] = Field(
        default="open",
        description="Who may create accounts with POST /v0/accounts: anyone, or admin tokens.",
    )
    session_cookie_secure: bool = Field(
        default=True,
        description=(
            "The settings page's session cookie is Secure (__Host-authbus_session). False only "
            "for plain-http local runs (the cookie is then authbus_session)."
        ),
    )
    upstream_timeout_s: float = Field(
        default=30.0, gt=0, description="How long an upstream may take before a 503 (G2)."
    )
    default_locale: Literal["en", "fr", "de", "es"] = Field(
        default="en",
        description="Language of errors when neither the client nor the account says (E3).",
    )
    error_shape: Literal["simple", "structured"] = Field(
        default="simple",
        description=(
            'JSON errors as {"code": "401", "error": "..."} (simple) or '
            '{"error": {"errorId": "...", "errorMessage": "..."}} (structured) (E2).'
        ),
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
