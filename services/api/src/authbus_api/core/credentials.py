"""Reading the `Authorization` header (SPEC A1-A4, A6, E5).

- `Bearer <token>`: the scheme is case-insensitive (RFC 9110 11.1); the token is RFC 6750's
  b64token characters.
- `Basic <base64>` (RFC 7617): strict base64, UTF-8, split at the *first* colon (a password may
  hold colons, a user-id may not). The user-id says which credential the password is:
  `EMAIL` -> password (A2), `EMAIL/key` -> legacy API key (A3, whose prefix and checksum are
checked here), `EMAIL/token` -> token (A4).

No header: `missing`. Anything unreadable (unknown scheme, bad base64, not UTF-8, no colon,
empty parts, oversized): `malformed`, which the api answers like a wrong credential (401
"invalid"), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import re
from enum import StrEnum

from authbus_shared import apikeys
from authbus_shared.contracts.authz import CredentialKind, SealedCredential

MAX_HEADER_CHARS = 8192
MAX_EMAIL_CHARS = 254  # RFC 5321's path limit; the contract refuses longer
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


class Unreadable(StrEnum):
    MISSING = "missing"
    MALFORMED = "malformed"


def parse_authorization(value: str | None) -> SealedCredential | Unreadable:
    if value is None or not value.strip():
        return Unreadable.MISSING
    if len(value) > MAX_HEADER_CHARS:
        return Unreadable.MALFORMED
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    match scheme.lower():
        case "bearer":
            if not _B64TOKEN.match(rest):
                return Unreadable.MALFORMED
            return SealedCredential(kind=CredentialKind.BEARER, secret=rest)
        case "basic":
            return _basic(rest)
        case _:
            return Unreadable.MALFORMED


def _basic(encoded: str) -> SealedCredential | Unreadable:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return Unreadable.MALFORMED
    user, colon, secret = decoded.partition(":")
    if not colon or not user or not secret:
        return Unreadable.MALFORMED
    kind, email = CredentialKind.PASSWORD, user
    for suffix, suffixed in (("/key", CredentialKind.KEY), ("/token", CredentialKind.BASIC_TOKEN)):
        if user.endswith(suffix):
            kind, email = suffixed, user[: -len(suffix)]
            break
    if not email or len(email) > MAX_EMAIL_CHARS:
        return Unreadable.MALFORMED
    if kind is CredentialKind.KEY and not apikeys.well_formed(secret):
        return Unreadable.MALFORMED  # a mistyped key (bad checksum) is refused before any lookup
    return SealedCredential(kind=kind, secret=secret, email=email)
