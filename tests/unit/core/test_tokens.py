"""ES256 JWT signing and checking (SPEC A1, A6): only our keys, only ES256, injected clock."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authbus_authz.core.keys import KeyRing
from authbus_authz.core.tokens import Claims, check_signature, sign
from authbus_shared.contracts.authz import Outcome

from .support import AUDIENCE, ISSUER, T0, b64url_json, forge_jwt, make_ring, ts

ABSENT = object()


def claims(**changes: object) -> dict[str, Any]:
    """Well-formed claims at T0; a change to `ABSENT` removes the claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "acct-1",
        "jti": "tok-1",
        "iat": ts(T0),
        "nbf": ts(T0),
        "exp": ts(T0 + timedelta(hours=1)),
        "scope": "read write",
        "amr": ["admin"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ABSENT}


def signed(ring: KeyRing, payload: dict[str, Any], **headers: Any) -> str:
    """Signed with our active key (the signature is good): only the content is under test."""
    headers.setdefault("kid", ring.signing_kid)
    return jwt.encode(payload, ring.signing[ring.signing_kid], algorithm="ES256", headers=headers)


def check(ring: KeyRing, token: str, now: datetime = T0) -> Claims | Outcome:
    return check_signature(token, ring, issuer=ISSUER, audience=AUDIENCE, now=now)


def test_signed_token_round_trips_to_its_claims(ring: KeyRing) -> None:
    token = sign(
        ring,
        issuer=ISSUER,
        audience=AUDIENCE,
        token_id="tok-1",
        account_id="acct-1",
        scopes=("read", "write"),
        issued_at=T0,
        expires_at=T0 + timedelta(days=1),
        amr=("pwd",),
    )

    assert jwt.get_unverified_header(token) == {
        "alg": "ES256",
        "kid": ring.signing_kid,
        "typ": "JWT",
    }
    assert check(ring, token) == Claims(
        token_id="tok-1",
        account_id="acct-1",
        issued_at=T0,
        expires_at=T0 + timedelta(days=1),
        scopes=("read", "write"),
    )


def test_token_without_expiry_has_no_expires_at(ring: KeyRing) -> None:
    token = sign(
        ring,
        issuer=ISSUER,
        audience=AUDIENCE,
        token_id="tok-1",
        account_id="acct-1",
        scopes=(),
        issued_at=T0,
        expires_at=None,
        amr=("admin",),
    )

    result = check(ring, token, now=T0 + timedelta(days=3650))

    assert isinstance(result, Claims)
    assert result.expires_at is None
    assert result.scopes == ()


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_invalid(ring: KeyRing, alg: str) -> None:
    token = forge_jwt({"alg": alg, "typ": "JWT", "kid": ring.signing_kid}, claims(), lambda _: b"")

    assert check(ring, token) is Outcome.INVALID


def test_alg_none_with_the_signature_stripped_from_a_real_token_is_invalid(ring: KeyRing) -> None:
    _, payload, _ = signed(ring, claims()).split(".")
    header = b64url_json({"alg": "none", "kid": ring.signing_kid})

    assert check(ring, f"{header}.{payload}.") is Outcome.INVALID


@pytest.mark.parametrize(
    "encoding",
    [serialization.Encoding.PEM, serialization.Encoding.DER],
    ids=["pem", "der"],
)
def test_hs256_signed_with_the_public_key_as_hmac_secret_is_invalid(
    ring: KeyRing, encoding: serialization.Encoding
) -> None:
    public = ring.verifying[ring.signing_kid].public_bytes(
        encoding, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = forge_jwt(
        {"alg": "HS256", "typ": "JWT", "kid": ring.signing_kid},
        claims(),
        lambda data: hmac.new(public, data, hashlib.sha256).digest(),
    )

    assert check(ring, token) is Outcome.INVALID


def test_other_asymmetric_alg_is_invalid(ring: KeyRing) -> None:
    token = signed(ring, claims())
    _, payload, signature = token.split(".")
    header = b64url_json({"alg": "ES384", "kid": ring.signing_kid, "typ": "JWT"})

    assert check(ring, f"{header}.{payload}.{signature}") is Outcome.INVALID


def test_token_signed_by_a_key_not_in_the_ring_is_invalid(ring: KeyRing, kek: bytes) -> None:
    stranger = make_ring(kek)

    assert check(ring, signed(stranger, claims())) is Outcome.INVALID


@pytest.mark.parametrize(
    "kid",
    [
        "../../../etc/passwd",
        "/dev/null",
        "file:///etc/ssl/private/key.pem",
        "https://evil.example/jwks.json",
        "",
        "unknown-kid",
    ],
)
def test_kid_that_is_not_one_of_ours_is_invalid(ring: KeyRing, kid: str) -> None:
    assert check(ring, signed(ring, claims(), kid=kid)) is Outcome.INVALID


@pytest.mark.parametrize("kid", [ABSENT, None, 42, ["kid"]])
def test_missing_or_non_string_kid_is_invalid(ring: KeyRing, kid: object) -> None:
    header: dict[str, Any] = {"alg": "ES256", "typ": "JWT"}
    if kid is not ABSENT:
        header["kid"] = kid
    key = ring.signing[ring.signing_kid]
    token = forge_jwt(header, claims(), lambda data: _es256(key, data))

    assert check(ring, token) is Outcome.INVALID


def test_jku_header_is_ignored_and_only_our_keys_verify(ring: KeyRing) -> None:
    ours = signed(ring, claims(), jku="https://evil.example/jwks.json")

    assert isinstance(check(ring, ours), Claims)


def test_attacker_key_behind_our_kid_and_a_jku_is_invalid(ring: KeyRing) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    header = {"alg": "ES256", "kid": ring.signing_kid, "jku": "https://evil.example/jwks.json"}
    token = jwt.encode(claims(), attacker, algorithm="ES256", headers=header)

    assert check(ring, token) is Outcome.INVALID


@pytest.mark.parametrize(
    "change",
    [
        {"aud": "another-api"},
        {"aud": ["another-api"]},
        {"aud": ABSENT},
        {"iss": "https://evil.example"},
        {"iss": ABSENT},
    ],
    ids=["wrong-aud", "wrong-aud-list", "no-aud", "wrong-iss", "no-iss"],
)
def test_wrong_or_missing_audience_or_issuer_is_invalid(
    ring: KeyRing, change: dict[str, object]
) -> None:
    assert check(ring, signed(ring, claims(**change))) is Outcome.INVALID


@pytest.mark.parametrize("exp_offset_s", [0, -1, -86400])
def test_exp_at_or_before_now_is_expired(ring: KeyRing, exp_offset_s: int) -> None:
    token = signed(ring, claims(exp=ts(T0) + exp_offset_s))

    assert check(ring, token) is Outcome.EXPIRED


def test_exp_one_second_ahead_is_still_valid(ring: KeyRing) -> None:
    result = check(ring, signed(ring, claims(exp=ts(T0) + 1)))

    assert isinstance(result, Claims)
    assert result.expires_at == T0 + timedelta(seconds=1)


@pytest.mark.parametrize("claim", ["iat", "nbf"])
@pytest.mark.parametrize(
    ("ahead_s", "accepted"), [(31, False), (3600, False), (30, True), (1, True)]
)
def test_iat_and_nbf_may_be_at_most_30s_in_the_future(
    ring: KeyRing, claim: str, ahead_s: int, accepted: bool
) -> None:
    result = check(ring, signed(ring, claims(**{claim: ts(T0) + ahead_s})))

    if accepted:
        assert isinstance(result, Claims)
    else:
        assert result is Outcome.INVALID


@pytest.mark.parametrize("claim", ["jti", "sub", "iat"])
def test_missing_required_claim_is_invalid(ring: KeyRing, claim: str) -> None:
    assert check(ring, signed(ring, claims(**{claim: ABSENT}))) is Outcome.INVALID


def test_missing_nbf_and_scope_are_allowed(ring: KeyRing) -> None:
    result = check(ring, signed(ring, claims(nbf=ABSENT, scope=ABSENT)))

    assert isinstance(result, Claims)
    assert result.scopes == ()


@pytest.mark.parametrize(
    "change",
    [
        {"exp": "tomorrow"},
        {"exp": str(ts(T0) + 60)},
        {"exp": [ts(T0) + 60]},
        {"exp": {"at": ts(T0) + 60}},
        {"iat": "now"},
        {"nbf": "soon"},
        {"sub": 42},
        {"jti": 42},
        {"scope": ["read", "write"]},
    ],
    ids=str,
)
def test_claims_of_the_wrong_type_are_invalid(ring: KeyRing, change: dict[str, object]) -> None:
    assert check(ring, signed(ring, claims(**change))) is Outcome.INVALID


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not-a-jwt",
        "a.b.c",
        "...",
        "a.b",
        "é.é.é",
        f"{b64url_json([1, 2])}.{b64url_json({})}.",
        "eyJhbGciOiJFUzI1NiJ9." + "A" * 5000,
        "\x00\x01.\x02.\x03",
    ],
    ids=range(9),
)
def test_garbage_strings_are_invalid(ring: KeyRing, garbage: str) -> None:
    assert check(ring, garbage) is Outcome.INVALID


def test_tampered_payload_is_invalid(ring: KeyRing) -> None:
    header, _, signature = signed(ring, claims()).split(".")
    forged = b64url_json(claims(sub="acct-admin", scope="admin"))

    assert check(ring, f"{header}.{forged}.{signature}") is Outcome.INVALID


def test_tampered_signature_is_invalid(ring: KeyRing) -> None:
    header, payload, signature = signed(ring, claims()).split(".")
    flipped = ("B" if signature[10] == "A" else "A").join([signature[:10], signature[11:]])

    assert check(ring, f"{header}.{payload}.{flipped}") is Outcome.INVALID


def _es256(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """Raw R||S signature, as JWS wants it."""
    algorithm = jwt.get_algorithm_by_name("ES256")
    return algorithm.sign(data, key)
