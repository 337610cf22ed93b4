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
    mongo: MongoSettings = Field(default_factory=MongoSettings)
    ops: OpsSettings = Field(default_factory=lambda: OpsSettings(port=9101))
    passwords: PasswordHashing = Field(default_factory=PasswordHashing)

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
