"""Legacy API key format (SPEC A3, A9): `abk_` + 32 random base62 + 6 base62 of CRC32; stored
as SHA-256; listed by a short prefix."""

from __future__ import annotations

import hashlib
import string
import zlib

import pytest

from authbus_shared import apikeys

BASE62 = string.digits + string.ascii_letters
KEYS = [apikeys.generate() for _ in range(5)]


def checksum(body: str) -> str:
    """The documented checksum, computed here independently: CRC32 in 6 base62 digits."""
    number, digits = zlib.crc32(body.encode()), []
    for _ in range(6):
        number, digit = divmod(number, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def test_generated_keys_have_the_documented_shape() -> None:
    for key in KEYS:
        assert len(key) == 42
        assert key.startswith("abk_")
        assert set(key[4:]) <= set(BASE62)
        assert key[-6:] == checksum(key[:-6])
        assert apikeys.well_formed(key)


def test_generated_keys_are_distinct() -> None:
    keys = {apikeys.generate() for _ in range(2000)}

    assert len(keys) == 2000
    assert len({k[4:10] for k in keys}) > 1900  # the random part starts right after the prefix


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
def test_any_single_character_change_is_refused(key: str) -> None:
    """A mistyped key is refused without a lookup: every position, every other base62
    character (CRC32 catches every error within one byte)."""
    accepted = [
        (i, c)
        for i in range(len(key))
        for c in BASE62 + "_"
        if c != key[i] and apikeys.well_formed(key[:i] + c + key[i + 1 :])
    ]

    assert accepted == []


@pytest.mark.parametrize("key", KEYS[:2], ids=range(2))
def test_swapping_two_neighbours_is_refused(key: str) -> None:
    swapped = [key[:i] + key[i + 1] + key[i] + key[i + 2 :] for i in range(4, len(key) - 1)]

    assert not any(apikeys.well_formed(s) for s in swapped if s != key)


def with_checksum(body: str) -> str:
    return body + checksum(body)


@pytest.mark.parametrize(
    "key",
    [
        with_checksum("abK_" + KEYS[0][4:-6]),
        with_checksum("abk-" + KEYS[0][4:-6]),
        with_checksum("xyz_" + KEYS[0][4:-6]),
        with_checksum("ABK_" + KEYS[0][4:-6]),
        "abk" + KEYS[0][4:],
    ],
    ids=["case", "dash", "other", "upper", "no-underscore"],
)
def test_wrong_prefix_is_refused_even_with_a_right_checksum(key: str) -> None:
    assert not apikeys.well_formed(key)


@pytest.mark.parametrize(
    "key",
    [
        KEYS[0][:-1],
        KEYS[0] + "0",
        with_checksum(KEYS[0][:-7]),
        with_checksum(KEYS[0][:-6] + "x"),
        "",
        "abk_",
        KEYS[0] * 2,
    ],
    ids=[
        "truncated",
        "extended",
        "short-right-checksum",
        "long-right-checksum",
        "empty",
        "prefix",
        "doubled",
    ],
)
def test_wrong_length_is_refused(key: str) -> None:
    assert not apikeys.well_formed(key)


@pytest.mark.parametrize("intruder", ["-", "_", "+", "/", "=", " ", ".", "é", "\uff10", "\x00"])
def test_characters_outside_base62_are_refused_even_with_a_right_checksum(intruder: str) -> None:
    body = KEYS[0][:20] + intruder + KEYS[0][21:-6]
    key = body + (checksum(body) if intruder.isascii() else KEYS[0][-6:])

    assert len(key) == 42
    assert not apikeys.well_formed(key)


def test_digest_is_the_hex_sha256_of_the_key() -> None:
    for key in KEYS:
        digest = apikeys.digest(key)

        assert digest == hashlib.sha256(key.encode()).hexdigest()
        assert len(digest) == 64
        assert set(digest) <= set("0123456789abcdef")
    assert len({apikeys.digest(k) for k in KEYS}) == len(KEYS)


def test_display_prefix_is_short_and_far_from_enough_to_rebuild_the_key() -> None:
    for key in KEYS:
        prefix = apikeys.display_prefix(key)

        assert key.startswith(prefix)
        assert prefix.startswith("abk_")
        assert len(prefix) <= 10
        hidden_random_chars = 32 - (len(prefix) - 4)
        assert hidden_random_chars >= 26  # >= 154 bits still unknown to whoever sees a listing
