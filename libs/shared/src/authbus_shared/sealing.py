"""Sealing: how a secret crosses Kafka without being readable there (SPEC A9).

A sealed box (libsodium `crypto_box_seal`: X25519 + XSalsa20-Poly1305, an ephemeral sender key
per message) lets anyone holding a public key encrypt to its owner, and only the owner open it.

- api -> authz: the credential (token, key, password) is sealed to authz's sealing key, whose
  public half authz publishes on `authz.keys.v1`. The Kafka log holds only ciphertext.
- authz -> asker: a newly issued secret (a token) is sealed to a one-time key the asker put in
  its request, so the reply on the shared reply topic is useless to the other readers.

The key id of a sealing key is its RFC 7638 JWK thumbprint.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import orjson
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox


class SealError(ValueError):
    """The sealed text is not base64, was not sealed to this key, or was tampered with."""


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise SealError("not base64url") from exc


def public_jwk(public: bytes) -> dict[str, str]:
    return {"kty": "OKP", "crv": "X25519", "x": b64url(public)}


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: sha256 over the required members, sorted, no whitespace."""
    required = {k: jwk[k] for k in ("crv", "kty", "x")}
    return b64url(hashlib.sha256(orjson.dumps(required, option=orjson.OPT_SORT_KEYS)).digest())


@dataclass(frozen=True, slots=True)
class SealingKey:
    """A private sealing key with its id. `secret` is the raw 32-byte X25519 private key."""

    secret: bytes

    @classmethod
    def generate(cls) -> SealingKey:
        return cls(bytes(PrivateKey.generate()))

    @property
    def public(self) -> bytes:
        return bytes(PrivateKey(self.secret).public_key)

    @property
    def jwk(self) -> dict[str, str]:
        return public_jwk(self.public)

    @property
    def kid(self) -> str:
        return thumbprint(self.jwk)

    def open(self, sealed: str) -> bytes:
        try:
            return bytes(SealedBox(PrivateKey(self.secret)).decrypt(b64url_decode(sealed)))
        except CryptoError as exc:
            raise SealError("cannot open: wrong key or tampered") from exc


def seal_to(public: bytes, plaintext: bytes) -> str:
    return b64url(bytes(SealedBox(PublicKey(public)).encrypt(plaintext)))


def public_from_jwk(jwk: dict[str, str]) -> bytes:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "X25519" or "x" not in jwk:
        raise SealError("not an X25519 public JWK")
    raw = b64url_decode(jwk["x"])
    if len(raw) != 32:
        raise SealError("X25519 public key must be 32 bytes")
    return raw
