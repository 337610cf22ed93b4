"""authz settings: env prefix `AUTHBUS_AUTHZ_` (see .env.example)."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from authbus_shared.settings import OpsSettings, ServiceSettings


class MongoSettings(BaseModel):
    uri: str = Field(default="mongodb://127.0.0.1:27017", description="MongoDB connection URI.")
    database: str = Field(default="authbus", description="Database name.")
    server_selection_timeout_ms: int = Field(
        default=5000, ge=100, description="How long to wait for a reachable server."
    )


class PasswordHashing(BaseModel):
    """argon2id parameters; the defaults are OWASP's first recommendation (19 MiB, t=2, p=1)."""

    time_cost: int = Field(default=2, ge=1, description="argon2id iterations.")
    memory_kib: int = Field(default=19_456, ge=8_192, description="argon2id memory in KiB.")
    parallelism: int = Field(default=1, ge=1, description="argon2id lanes.")
    max_concurrent: int = Field(
        default=2, ge=1, description="Password checks run at once (threads, off the event loop)."
    )


class OutboxSettings(BaseModel):
    """The transactional outbox (ADR 0015): events staged with their change, published right
    after the commit by the instance that made it, else by any instance's relay."""

    relay_after_s: float = Field(
        default=5.0,
        gt=0,
        description="An event still in the outbox this long after its commit is the relay's "
        "(its writer crashed, or Kafka refused it): published by whichever instance claims it.",
    )
    relay_interval_s: float = Field(
        default=1.0, gt=0, description="How often each instance's relay looks for such events."
    )
    claim_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a relay's claim on an event lasts; another instance takes it "
        "over after that if it is still there (a relay that crashed while publishing).",
    )
    batch: int = Field(default=100, ge=1, description="Events a relay claims at a time.")


class UsageSettings(BaseModel):
    """Last-used times that could not be written (MongoDB unreachable) wait in memory."""

    pending_max: int = Field(
        default=100_000,
        ge=1,
        description="Credentials whose last-used time may wait for MongoDB (one time each, the "
        "latest); beyond, new ones are dropped and counted.",
    )
    retry_s: float = Field(
        default=1.0, gt=0, description="How often waiting last-used times are written again."
    )


class RecordCacheSettings(BaseModel):
    """authz's cache of the records a verification reads (ADR 0019), invalidated by the
    changes feed and used only while that feed is fresh."""

    max_entries: int = Field(
        default=100_000,
        ge=0,
        description="Token, key and account records kept (0: off, every check reads MongoDB).",
    )
    ttl_s: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="No record is kept longer than this: the safety net if an event were lost.",
    )
    bound_ms: int = Field(
        default=1000,
        ge=0,
        le=2000,
        description="Records are used only while the changes feed has been read up to this "
        "long ago (less the clock skew); else MongoDB is read. Keep it under the api's "
        "AUTHBUS_API_STALENESS__BOUND_S: a revocation must reach authz before the api asks.",
    )
    clock_skew_ms: int = Field(
        default=250, ge=0, le=5000, description="The most authz hosts' clocks differ by."
    )


class AuthzSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTHBUS_AUTHZ_")

    key_encryption_key: SecretStr = Field(
        description="Base64 of 32 random bytes: encrypts the private keys authz keeps in "
        "MongoDB. Required; generate with `openssl rand -base64 32`.",
    )
    issuer: str = Field(default="authbus", description="`iss` of the tokens authz signs.")
    audience: str = Field(default="authbus", description="`aud` of the tokens authz signs.")
    default_locale: str = Field(default="en", description="Locale of new accounts.")
    keys_creation_enabled: bool = Field(
        default=True,
        description="Whether new legacy API keys may be created (they are deprecated).",
    )
    key_rotation_days: float = Field(
        default=30.0,
        ge=0,
        description="Rotate the signing and sealing keys once this old (0: only when ordered).",
    )
    totp_issuer: str = Field(
        default="authbus", description="Issuer shown in authenticator apps for login 2FA."
    )
    crash_after_commit: str = Field(
        default="",
        description="Fault tests only, never in production: the command (as in "
        "authz_commands_total) after whose commit the process exits at once, before it "
        "publishes the command's events. Empty: never.",
    )
    session_timeout_ms: int = Field(
        default=6000,
        ge=6000,
        le=300_000,
        description="How soon the group notices a dead instance and moves its partitions (the "
        "verifications waiting in them go to the survivors; the api hedges meanwhile).",
    )
    changes_heartbeat_ms: int = Field(
        default=500,
        ge=50,
        le=10_000,
        description="How often each instance writes a heartbeat to every partition of "
        "auth.changes.v1: the api's cache is fresh only while it reads them (A12; keep it well "
        "under AUTHBUS_API_STALENESS__BOUND_S).",
    )
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    ops: OpsSettings = Field(default_factory=lambda: OpsSettings(port=9101))
    passwords: PasswordHashing = Field(default_factory=PasswordHashing)
    record_cache: RecordCacheSettings = Field(default_factory=RecordCacheSettings)

    @field_validator("key_encryption_key")
    @classmethod
    def _32_bytes(cls, value: SecretStr) -> SecretStr:
        try:
            raw = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64") from None
        if len(raw) != 32:
            raise ValueError("must decode to 32 bytes")
        return value

    def kek(self) -> bytes:
        return base64.b64decode(self.key_encryption_key.get_secret_value())
