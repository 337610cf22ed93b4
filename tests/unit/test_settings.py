"""Settings (STYLE 6): built from the environment with a prefix per service, bad config fails
at start naming the variable, and .env.example lists every variable."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from authbus_api.settings import ApiSettings
from authbus_authz.settings import AuthzSettings
from authbus_dev import envdoc
from authbus_shared.settings import ConfigError, load

REPO = Path(__file__).resolve().parents[2]
KEK = base64.b64encode(os.urandom(32)).decode()


def test_env_example_is_generated_from_the_settings_classes() -> None:
    committed = (REPO / ".env.example").read_text()

    assert committed == envdoc.render(), (
        "stale: run `.venv/bin/authbus-dev env-example > .env.example`"
    )


def test_nested_settings_are_read_with_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHBUS_API_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("AUTHBUS_API_PORT", "8080")
    monkeypatch.setenv("AUTHBUS_AUTHZ_PORT", "1")  # another service's prefix: ignored

    settings = load(ApiSettings)

    assert settings.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.port == 8080


def test_authz_refuses_to_start_without_its_key_encryption_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY", raising=False)

    with pytest.raises(ConfigError, match="AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY"):
        load(AuthzSettings)


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_key_encryption_key_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY", value)

    with pytest.raises(ConfigError, match="AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY"):
        load(AuthzSettings)


def test_a_bad_nested_value_names_the_full_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY", KEK)
    monkeypatch.setenv("AUTHBUS_AUTHZ_PASSWORDS__MEMORY_KIB", "12")

    with pytest.raises(ConfigError, match="AUTHBUS_AUTHZ_PASSWORDS__MEMORY_KIB"):
        load(AuthzSettings)


def test_the_secret_never_shows_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHBUS_AUTHZ_KEY_ENCRYPTION_KEY", KEK)

    settings = load(AuthzSettings)

    assert KEK not in repr(settings)
    assert settings.kek() == base64.b64decode(KEK)
