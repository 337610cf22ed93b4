"""Legacy API keys (SPEC A3): format, checksum and digest, shared by the api and authz.

A key looks like `abk_` + 32 base62 characters of CSPRNG output (~190 bits) + 6 base62
characters of CRC32 over the prefix and the random part, e.g. `abk_3x9...Q0aZ1b`. The
checksum lets the api refuse a mistyped or truncated key before it asks anyone (no lookup, no
Kafka), and makes keys recognisable to secret scanners by their prefix. authz stores only the
SHA-256 of a key (`digest`), and shows `display_prefix` in listings.

Algorithm notes: CRC32 is not a security measure (anyone can compute it); it catches typos.
The secret strength is the 190 random bits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib

PREFIX = "abk_"
RANDOM_CHARS = 32  # 32 * log2(62) ~ 190 bits
CHECKSUM_CHARS = 6  # 62^6 > 2^32
LENGTH = len(PREFIX) + RANDOM_CHARS + CHECKSUM_CHARS
ALPHABET = string.digits + string.ascii_letters  # base62
_ALLOWED = frozenset(ALPHABET)


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_CHARS)


def generate() -> str:
    body = PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_CHARS))
    return body + _checksum(body)


def well_formed(key: str) -> bool:
    """Prefix, length, alphabet and checksum are right (says nothing about validity)."""
    if len(key) != LENGTH or not key.startswith(PREFIX):
        return False
    rest = key[len(PREFIX) :]
    if not set(rest) <= _ALLOWED:
        return False
    body, check = key[:-CHECKSUM_CHARS], key[-CHECKSUM_CHARS:]
    return hmac.compare_digest(_checksum(body), check)


def digest(key: str) -> str:
    """What authz stores and looks keys up by (hex SHA-256)."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def display_prefix(key: str) -> str:
    """Enough to recognise a key in a listing, far too little to use it."""
    return key[: len(PREFIX) + 6]
