"""API tokens (SPEC A1): JWTs signed ES256 by authz, with a `kid` in the header.

Claims: `iss`, `aud`, `sub` (account id), `jti` (the token record's id), `iat`, `nbf`, `exp`
when the token expires, `scope` (space separated, RFC 8693 style) and `amr` (how it was
obtained, RFC 8176: `admin` for an operator's token, `pwd`, `pwd`+`otp`+`mfa`).

Checking a token (`check_signature`) refuses, before any claim is read: a token that is not
in the canonical compact form (`canonical`: three segments, each unpadded base64url that
decodes and re-encodes to the same text, so `=` padding or set trailing bits are not a second
spelling of the same bytes), a header that is not JSON, any `alg` but ES256 (so `none` and
HS256-with-the-public-key fail), a `kid` that is not one of ours (no key is ever fetched from a
`jku`/`x5u`/path in the token). Then pyjwt verifies the signature, `iss` and `aud`; times are
checked here against the injected clock: `iat` and `nbf` may be up to 30 s ahead (clock skew
between authz hosts), `exp` is exact. The store's record decides the rest (the very text
issued, revoked, expired, account state): see `verifier.py`. ECDSA signatures are malleable
((r, s) and (r, n-s) both verify), which no encoding rule can catch: the record's digest of
the issued token does (`issued_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from authbus_authz.core.keys import KeyRing
from authbus_shared.contracts.authz import Outcome

ALGORITHM = "ES256"
LEEWAY = timedelta(seconds=30)  # for iat/nbf only: clocks of authz hosts may differ
B64URL_CHARS = frozenset(string.ascii_letters + string.digits + "-_")


def new_token_id() -> str:
    return secrets.token_urlsafe(16)  # 128 bits from the OS CSPRNG


@dataclass(frozen=True, slots=True)
class Claims:
    token_id: str
    account_id: str
    issued_at: datetime
    expires_at: datetime | None
    scopes: tuple[str, ...]


def sign(
    ring: KeyRing,
    *,
    issuer: str,
    audience: str,
    token_id: str,
    account_id: str,
    scopes: tuple[str, ...],
    issued_at: datetime,
    expires_at: datetime | None,
    amr: tuple[str, ...],
) -> str:
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": account_id,
        "jti": token_id,
        "iat": int(issued_at.timestamp()),
        "nbf": int(issued_at.timestamp()),
        "scope": " ".join(scopes),
        "amr": list(amr),
    }
    if expires_at is not None:
        claims["exp"] = int(expires_at.timestamp())
    return jwt.encode(
        claims,
        ring.signing[ring.signing_kid],
        algorithm=ALGORITHM,
        headers={"kid": ring.signing_kid, "typ": "JWT"},
    )


def issued_digest(token: str) -> str:
    """Hex SHA-256 of a token's text: what its record keeps to recognise the very text issued."""
    return hashlib.sha256(token.encode()).hexdigest()


def canonical(token: str) -> bool:
    """A compact JWS whose three segments are each canonical unpadded base64url (RFC 7515 §2):
    only the base64url alphabet, no `=`, and decoding then encoding gives the same text."""
    segments = token.split(".")
    return len(segments) == 3 and all(_canonical_b64url(s) for s in segments)


def _canonical_b64url(segment: str) -> bool:
    if not set(segment) <= B64URL_CHARS:
        return False
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):  # an impossible length (4n + 1)
        return False
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") == segment


def unverified_kid(token: str) -> str | None:
    """The `kid` a token claims, before anything is verified (to find the key)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        return None
    return kid if isinstance(kid, str) and 0 < len(kid) <= 64 else None


def check_signature(
    token: str, ring: KeyRing, *, issuer: str, audience: str, now: datetime
) -> Claims | Outcome:
    """The verified claims, or why not (`invalid` or `expired`)."""
    if not canonical(token):
        return Outcome.INVALID
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        return Outcome.INVALID
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or not isinstance(kid, str) or kid not in ring.verifying:
        return Outcome.INVALID
    try:
        claims = jwt.decode(
            token,
            ring.verifying[kid],
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            # Times are checked below against the injected clock, not pyjwt's wall clock.
            options={
                "require": ["iss", "aud", "sub", "jti", "iat"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidTokenError:
        return Outcome.INVALID
    return _timed_claims(claims, now)


def _timed_claims(claims: dict[str, Any], now: datetime) -> Claims | Outcome:
    sub, jti, scope = claims["sub"], claims["jti"], claims.get("scope", "")
    times = [claims.get(name) for name in ("iat", "nbf", "exp")]
    if not (isinstance(sub, str) and isinstance(jti, str) and isinstance(scope, str)):
        return Outcome.INVALID
    if any(t is not None and not isinstance(t, int | float) for t in times):
        return Outcome.INVALID
    try:
        iat, nbf, exp = (
            datetime.fromtimestamp(t, tz=now.tzinfo) if t is not None else None for t in times
        )
    except (OverflowError, OSError, ValueError):  # absurd or NaN times, even if signed
        return Outcome.INVALID
    if iat is None or iat > now + LEEWAY or (nbf is not None and nbf > now + LEEWAY):
        return Outcome.INVALID
    if exp is not None and exp <= now:
        return Outcome.EXPIRED
    return Claims(
        token_id=jti, account_id=sub, issued_at=iat, expires_at=exp, scopes=tuple(scope.split())
    )
