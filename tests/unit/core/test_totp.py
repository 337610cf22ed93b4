"""TOTP (RFC 6238; SPEC A5, A9): 6 digits, 30 s steps, one step of drift either side; secrets
encrypted at rest, bound to their account. Codes come from pyotp, independently of the core."""

from __future__ import annotations

import base64
import os
import urllib.parse
from datetime import datetime, timedelta

import pytest
from cryptography.exceptions import InvalidTag

from authbus_authz.core import totp
from authbus_authz.core.keys import decrypt

from .support import STEP, T0, code_at, wrong_code

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
MID_STEP = T0 + timedelta(seconds=14)  # halfway through the step of T0


def step_of(at: datetime) -> int:
    return int(at.timestamp()) // 30


@pytest.mark.parametrize("offset", [-1, 0, 1], ids=["previous", "current", "next"])
def test_codes_of_the_current_and_neighbouring_steps_match_their_step(offset: int) -> None:
    code = code_at(SECRET, MID_STEP + offset * STEP)

    assert totp.matching_step(SECRET, code, MID_STEP) == step_of(MID_STEP) + offset


@pytest.mark.parametrize("offset", [-2, 2, -10, 10], ids=["-2", "+2", "-10", "+10"])
def test_codes_two_or_more_steps_away_are_refused(offset: int) -> None:
    code = code_at(SECRET, MID_STEP + offset * STEP)

    assert code not in {code_at(SECRET, MID_STEP + n * STEP) for n in (-1, 0, 1)}  # sanity
    assert totp.matching_step(SECRET, code, MID_STEP) is None


def test_step_boundaries_follow_the_clock() -> None:
    """At the last second of a step its code is current; one second later it is previous."""
    code = code_at(SECRET, T0)
    last_second = T0 + timedelta(seconds=29)

    assert totp.matching_step(SECRET, code, last_second) == step_of(T0)
    assert totp.matching_step(SECRET, code, T0 + STEP) == step_of(T0)
    assert totp.matching_step(SECRET, code, T0 + 2 * STEP) is None


def test_wrong_code_is_refused() -> None:
    assert totp.matching_step(SECRET, wrong_code(SECRET, MID_STEP), MID_STEP) is None


def test_code_for_another_secret_is_refused() -> None:
    other = totp.new_secret()
    code = code_at(other, MID_STEP)
    if code in {code_at(SECRET, MID_STEP + n * STEP) for n in (-1, 0, 1)}:
        pytest.skip("a one-in-300000 collision between two secrets")

    assert totp.matching_step(SECRET, code, MID_STEP) is None


RIGHT = code_at(SECRET, MID_STEP)


@pytest.mark.parametrize(
    "code",
    [
        RIGHT[:5],
        RIGHT + "0",
        "0" + RIGHT,
        "",
        RIGHT[:5] + "a",
        "-" + RIGHT[1:],
        "+" + RIGHT[1:],
        RIGHT[:3] + "." + RIGHT[3:5],
        "abcdef",
        RIGHT[:3] + "\n" + RIGHT[3:],
    ],
    ids=[
        "5-digits",
        "7-digits",
        "leading-0",
        "empty",
        "letter",
        "minus",
        "plus",
        "dot",
        "abc",
        "nl",
    ],
)
def test_codes_of_the_wrong_length_or_with_non_digits_are_refused(code: str) -> None:
    assert totp.matching_step(SECRET, code, MID_STEP) is None


@pytest.mark.parametrize(
    "spaced",
    [
        f"{RIGHT[:3]} {RIGHT[3:]}",
        f" {RIGHT} ",
        f"{RIGHT[:2]} {RIGHT[2:4]} {RIGHT[4:]}",
        f"\t{RIGHT}\n",
    ],
    ids=["3-3", "padded", "2-2-2", "tab-newline"],
)
def test_spaces_in_and_around_a_code_are_tolerated(spaced: str) -> None:
    """Authenticator apps show `123 456`; people type it that way."""
    assert totp.matching_step(SECRET, spaced, MID_STEP) == step_of(MID_STEP)


@pytest.mark.parametrize(
    "digits",
    [
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "\u0661\u0662\u0663\u0664\u0665\u0666",
        "\u00b9\u00b2\u00b3\u2074\u2075\u2076",
        "\u07c0\u07c1\u07c2\u07c3\u07c4\u07c5",
    ],
    ids=["fullwidth", "arabic-indic", "superscript", "nko"],
)
def test_non_ascii_digits_are_refused_not_an_error(digits: str) -> None:
    """Fullwidth, Arabic-Indic, superscript, NKo digits: `str.isdigit()` is true for them, and
    `hmac.compare_digest` raises TypeError on non-ASCII str. User input must give a value
    (None), never an exception (E5)."""
    assert totp.matching_step(SECRET, digits, MID_STEP) is None


def test_new_secrets_are_160_bit_base32_and_distinct() -> None:
    secrets = {totp.new_secret() for _ in range(100)}

    assert len(secrets) == 100
    for secret in secrets:
        assert len(base64.b32decode(secret)) == 20


def test_provisioning_uri_is_an_otpauth_totp_uri_with_issuer_and_email() -> None:
    uri = totp.provisioning_uri(SECRET, "Alice@Example.io", "authbus test")

    parts = urllib.parse.urlsplit(uri)
    query = urllib.parse.parse_qs(parts.query)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert urllib.parse.unquote(parts.path) == "/authbus test:Alice@Example.io"
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["authbus test"]
    for param, default in (("digits", "6"), ("period", "30"), ("algorithm", "SHA1")):
        assert query.get(param, [default]) == [default]  # absent means the RFC default


def test_sealed_secret_round_trips_and_does_not_hold_the_secret() -> None:
    kek = os.urandom(32)

    sealed = totp.seal_secret(kek, "acct-1", SECRET)

    assert SECRET.encode() not in sealed
    assert totp.open_secret(kek, "acct-1", sealed) == SECRET
    assert totp.seal_secret(kek, "acct-1", SECRET) != sealed  # fresh nonce each time


def test_sealed_secret_is_bound_to_its_account() -> None:
    """A9: a secret copied onto another account's record does not open there."""
    kek = os.urandom(32)
    sealed = totp.seal_secret(kek, "acct-1", SECRET)

    with pytest.raises(InvalidTag):
        totp.open_secret(kek, "acct-2", sealed)


def test_sealed_secret_does_not_open_with_another_kek() -> None:
    sealed = totp.seal_secret(os.urandom(32), "acct-1", SECRET)

    with pytest.raises(InvalidTag):
        totp.open_secret(os.urandom(32), "acct-1", sealed)


def test_sealed_secret_cannot_pass_for_a_key_blob_of_the_same_id() -> None:
    """TOTP secrets and key-pair blobs share the KEK; the `totp:` label keeps them apart."""
    kek = os.urandom(32)
    sealed = totp.seal_secret(kek, "acct-1", SECRET)

    with pytest.raises(InvalidTag):
        decrypt(kek, "acct-1", sealed)
