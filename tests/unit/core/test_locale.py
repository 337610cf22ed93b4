"""Which language an answer speaks (SPEC E3)."""

from __future__ import annotations

import pytest

from authbus_api.core.locale import negotiate, preferences


@pytest.mark.parametrize(
    ("header", "account", "expected"),
    [
        ("en-US", None, "en"),
        ("fr_ca", None, "fr"),
        ("FR", None, "fr"),
        ("es-419", None, "es"),
        ("de-CH, fr;q=0.5", None, "de"),
        ("fr;q=0.5, de;q=0.9", None, "de"),  # q-values, not order
        ("de;q=0, es", None, "es"),  # q=0: not this one
        ("tlh", "fr", "fr"),  # unsupported tag: the account's default
        (None, "de_DE", "de"),  # none: the account's default
        ("", None, "en"),  # none and no account: the deployment's
        ("tlh", None, "en"),
        ("*", "es", "es"),
        (";;;,,q=x", None, "en"),  # unreadable: as absent
    ],
)
def test_negotiation(header: str | None, account: str | None, expected: str) -> None:
    assert negotiate(header, account, "en") == expected


def test_the_deployment_default_is_used_last() -> None:
    assert negotiate("tlh", None, "es") == "es"
    assert negotiate("tlh", "pt_BR", "de") == "de"


def test_preferences_keep_the_header_order_on_ties_and_skip_the_rest() -> None:
    assert preferences("fr-CH, fr;q=0.9, en;q=0.9, *;q=0.5, de;q=0") == ["fr_CH", "fr", "en"]
    assert preferences("x" * 40) == []  # longer than any language tag
    assert len(preferences(",".join(["en"] * 100))) == 32
