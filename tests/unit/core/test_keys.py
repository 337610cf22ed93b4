"""authz key material (SPEC A1, A9): sealed at rest under the KEK, kids are RFC 7638 thumbprints."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from datetime import timedelta

import pytest
from cryptography.exceptions import InvalidTag

from authbus_authz.core.keys import KeyRing, decrypt, encrypt, new_sealing_key, new_signing_key
from authbus_authz.core.ports import StoredKey
from authbus_shared.sealing import public_from_jwk, seal_to, thumbprint

from .support import T0, b64url


def rfc7638(jwk: dict[str, str], members: tuple[str, ...]) -> str:
    """The thumbprint computed here independently: required members, sorted, no whitespace."""
    canonical = json.dumps({k: jwk[k] for k in members}, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


def test_encrypt_then_decrypt_round_trips(kek: bytes) -> None:
    blob = encrypt(kek, "kid-1", b"private key bytes")

    assert decrypt(kek, "kid-1", blob) == b"private key bytes"


def test_encrypting_twice_uses_fresh_nonces(kek: bytes) -> None:
    assert encrypt(kek, "kid-1", b"same") != encrypt(kek, "kid-1", b"same")


def test_blob_does_not_hold_the_plaintext(kek: bytes) -> None:
    assert b"top secret" not in encrypt(kek, "kid-1", b"top secret")


def test_decrypt_with_another_kek_fails(kek: bytes) -> None:
    blob = encrypt(kek, "kid-1", b"secret")

    with pytest.raises(InvalidTag):
        decrypt(os.urandom(32), "kid-1", blob)


def test_blob_moved_to_another_kid_fails(kek: bytes) -> None:
    """The kid is the AEAD associated data: a blob cannot be re-labelled."""
    blob = encrypt(kek, "kid-1", b"secret")

    with pytest.raises(InvalidTag):
        decrypt(kek, "kid-2", blob)


def test_tampered_blob_fails(kek: bytes) -> None:
    blob = bytearray(encrypt(kek, "kid-1", b"secret"))
    blob[-1] ^= 0x01

    with pytest.raises(InvalidTag):
        decrypt(kek, "kid-1", bytes(blob))


def test_signing_key_kid_is_the_rfc7638_thumbprint_of_its_public_jwk(
    signing_key: StoredKey,
) -> None:
    jwk = signing_key.public_jwk

    assert signing_key.use == "sig"
    assert signing_key.kid == rfc7638(jwk, ("crv", "kty", "x", "y"))
    assert jwk == {
        "kty": "EC",
        "crv": "P-256",
        "x": jwk["x"],
        "y": jwk["y"],
        "kid": signing_key.kid,
        "use": "sig",
        "alg": "ES256",
    }


def test_public_jwks_never_carry_the_private_part(
    signing_key: StoredKey, sealing_key: StoredKey
) -> None:
    assert "d" not in signing_key.public_jwk
    assert "d" not in sealing_key.public_jwk


def test_private_half_is_stored_encrypted(signing_key: StoredKey) -> None:
    assert b"PRIVATE KEY" not in signing_key.private_sealed


def test_two_signing_keys_have_different_kids(kek: bytes) -> None:
    assert new_signing_key(kek, T0).kid != new_signing_key(kek, T0).kid


def test_ring_loads_a_signing_key_that_verifies_what_it_signs(
    ring: KeyRing, signing_key: StoredKey, sealing_key: StoredKey
) -> None:
    private = ring.signing[signing_key.kid]

    assert ring.signing_kid == signing_key.kid
    assert ring.verifying[signing_key.kid].public_numbers() == private.public_key().public_numbers()
    assert ring.active("sig") == signing_key
    assert ring.active("seal") == sealing_key
    assert ring.published == [signing_key, sealing_key]


def test_ring_load_with_the_wrong_kek_fails(signing_key: StoredKey, sealing_key: StoredKey) -> None:
    with pytest.raises(InvalidTag):
        KeyRing.load(os.urandom(32), [signing_key, sealing_key])


@pytest.mark.parametrize("missing", ["sig", "seal"])
def test_ring_without_an_active_key_of_each_use_does_not_load(
    kek: bytes, signing_key: StoredKey, sealing_key: StoredKey, missing: str
) -> None:
    keys = [
        k if k.use != missing else dataclasses.replace(k, active=False)
        for k in (signing_key, sealing_key)
    ]

    with pytest.raises(ValueError, match="no active"):
        KeyRing.load(kek, keys)


def test_sealing_key_kid_is_the_thumbprint_of_its_public_jwk(sealing_key: StoredKey) -> None:
    jwk = sealing_key.public_jwk

    assert sealing_key.use == "seal"
    assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("OKP", "X25519", sealing_key.kid)
    assert sealing_key.kid == thumbprint(jwk) == rfc7638(jwk, ("crv", "kty", "x"))


def test_loaded_sealing_key_opens_what_was_sealed_to_its_published_half(
    ring: KeyRing, sealing_key: StoredKey
) -> None:
    sealed = seal_to(public_from_jwk(sealing_key.public_jwk), b"a credential")

    assert ring.sealing_kid == sealing_key.kid
    assert ring.sealing[sealing_key.kid].open(sealed) == b"a credential"


def test_retired_keys_still_verify_and_open_but_the_active_ones_are_used(
    kek: bytes, signing_key: StoredKey, sealing_key: StoredKey
) -> None:
    """A1 rotation overlap: the ring keeps retired keys; `active` picks the flagged one."""
    retired = [dataclasses.replace(k, active=False) for k in (signing_key, sealing_key)]
    later = T0 + timedelta(days=1)
    current = [new_signing_key(kek, later), new_sealing_key(kek, later)]

    ring = KeyRing.load(kek, [*current, *retired])

    assert (ring.signing_kid, ring.sealing_kid) == (current[0].kid, current[1].kid)
    assert ring.active("sig") == current[0]
    assert ring.active("seal") == current[1]
    assert set(ring.verifying) == {signing_key.kid, current[0].kid}
    assert set(ring.sealing) == {sealing_key.kid, current[1].kid}
    assert [k.kid for k in ring.published] == [k.kid for k in (*retired, *current)]  # by age
