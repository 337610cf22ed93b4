"""Sealed boxes (SPEC A9): secrets cross Kafka only as ciphertext; kids are RFC 7638."""

from __future__ import annotations

import pytest

from authbus_shared.sealing import (
    SealError,
    SealingKey,
    b64url,
    b64url_decode,
    public_from_jwk,
    public_jwk,
    seal_to,
    thumbprint,
)


@pytest.fixture
def key() -> SealingKey:
    return SealingKey.generate()


@pytest.mark.parametrize("plaintext", [b"", b"x", b"a token " * 100, bytes(range(256))])
def test_sealed_text_opens_with_the_private_key(key: SealingKey, plaintext: bytes) -> None:
    assert key.open(seal_to(key.public, plaintext)) == plaintext


def test_sealed_text_is_base64url_without_the_plaintext(key: SealingKey) -> None:
    sealed = seal_to(key.public, b"a-very-recognisable-secret")

    assert set(sealed) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert b"recognisable" not in b64url_decode(sealed)


def test_sealing_twice_gives_different_texts(key: SealingKey) -> None:
    """An ephemeral sender key per message: equal secrets are not linkable on the topic."""
    assert seal_to(key.public, b"same") != seal_to(key.public, b"same")


def test_another_key_cannot_open(key: SealingKey) -> None:
    sealed = seal_to(key.public, b"secret")

    with pytest.raises(SealError):
        SealingKey.generate().open(sealed)


@pytest.mark.parametrize("position", [0, 20, 40, -1])
def test_tampered_text_cannot_be_opened(key: SealingKey, position: int) -> None:
    raw = bytearray(b64url_decode(seal_to(key.public, b"secret")))
    raw[position] ^= 0x01

    with pytest.raises(SealError):
        key.open(b64url(bytes(raw)))


def test_truncated_text_cannot_be_opened(key: SealingKey) -> None:
    sealed = seal_to(key.public, b"secret")

    with pytest.raises(SealError):
        key.open(sealed[:-8])


@pytest.mark.parametrize("text", ["", "A", "é" * 10, "!!!!", "AAAA", "a" * 61], ids=repr)
def test_non_base64_or_short_text_is_a_seal_error(key: SealingKey, text: str) -> None:
    with pytest.raises(SealError):
        key.open(text)


@pytest.mark.parametrize("raw", [b"", b"\x00", b"ab", b"abc", b"\xff" * 33])
def test_b64url_round_trips_without_padding(raw: bytes) -> None:
    text = b64url(raw)

    assert "=" not in text
    assert b64url_decode(text) == raw


def test_thumbprint_matches_the_rfc8037_test_vector() -> None:
    """RFC 8037 appendix A.3."""
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}

    assert thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_thumbprint_ignores_non_required_members() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}

    assert thumbprint(jwk | {"kid": "mine", "use": "enc"}) == thumbprint(jwk)


def test_key_id_is_the_thumbprint_of_its_public_jwk(key: SealingKey) -> None:
    assert key.jwk == {"kty": "OKP", "crv": "X25519", "x": b64url(key.public)}
    assert key.kid == thumbprint(public_jwk(key.public))
    assert key.kid != SealingKey.generate().kid


def test_public_from_jwk_reads_the_published_key(key: SealingKey) -> None:
    published = key.jwk | {"kid": key.kid, "use": "enc"}

    public = public_from_jwk(published)

    assert public == key.public
    assert key.open(seal_to(public, b"over kafka")) == b"over kafka"


@pytest.mark.parametrize(
    "change",
    [
        {"kty": "EC"},
        {"kty": "oct"},
        {"crv": "Ed25519"},
        {"crv": "P-256"},
        {"x": b64url(b"\x01" * 31)},
        {"x": b64url(b"\x01" * 33)},
        {"x": ""},
        {"x": "é"},
    ],
    ids=["kty-ec", "kty-oct", "crv-ed25519", "crv-p256", "x-31", "x-33", "x-empty", "x-non-b64"],
)
def test_public_from_jwk_refuses_other_keys(key: SealingKey, change: dict[str, str]) -> None:
    with pytest.raises(SealError):
        public_from_jwk(key.jwk | change)


def test_public_from_jwk_refuses_a_jwk_without_x() -> None:
    with pytest.raises(SealError):
        public_from_jwk({"kty": "OKP", "crv": "X25519"})
