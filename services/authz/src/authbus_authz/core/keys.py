"""authz's key material: the JWT signing key (ES256) and the credential sealing key (X25519).

Private halves are stored in MongoDB encrypted with AES-256-GCM under the key-encryption key
from settings (the kid is the associated data, so a blob cannot be moved to another key id;
TOTP secrets use the same scheme with the account as associated data). Key ids are RFC 7638
thumbprints. All authz instances share the same keys: the first instance to start creates
them, the others read them; rotation is in `keyring.py`.

ES256 was chosen for tokens: asymmetric (the api and third parties verify with the published
JWKS, only authz signs), supported by every JWT library, and faster to verify than EdDSA in
pyjwt.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwt.algorithms import ECAlgorithm

from authbus_authz.core.ports import KeyUse, StoredKey
from authbus_shared.sealing import SealingKey, b64url

NONCE_BYTES = 12


def encrypt(kek: bytes, kid: str, secret: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, secret, kid.encode())


def decrypt(kek: bytes, kid: str, blob: bytes) -> bytes:
    return AESGCM(kek).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], kid.encode())


def ec_thumbprint(jwk: dict[str, Any]) -> str:
    required = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    return b64url(hashlib.sha256(orjson.dumps(required, option=orjson.OPT_SORT_KEYS)).digest())


def new_signing_key(kek: bytes, now: datetime) -> StoredKey:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, str] = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    kid = ec_thumbprint(jwk)
    jwk |= {"kid": kid, "use": "sig", "alg": "ES256"}
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return StoredKey(kid, "sig", jwk, encrypt(kek, kid, pem), now)


def new_sealing_key(kek: bytes, now: datetime) -> StoredKey:
    key = SealingKey.generate()
    jwk = key.jwk | {"kid": key.kid, "use": "enc", "alg": "X25519-SealedBox"}
    return StoredKey(key.kid, "seal", jwk, encrypt(kek, key.kid, key.secret), now)


@dataclass
class KeyRing:
    """The keys an authz instance uses, decrypted in memory: the active signing and sealing
    keys, and every retired one (retired keys still verify tokens and open sealed requests)."""

    signing_kid: str = ""
    sealing_kid: str = ""
    signing: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    verifying: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    sealing: dict[str, SealingKey] = field(default_factory=dict)
    published: list[StoredKey] = field(default_factory=list)

    @classmethod
    def load(cls, kek: bytes, keys: list[StoredKey]) -> KeyRing:
        ring = cls()
        for key in sorted(keys, key=lambda k: k.created_at):
            ring._add(kek, key)
        if not ring.signing_kid or not ring.sealing_kid:
            raise ValueError("no active signing or sealing key among the stored keys")
        return ring

    def _add(self, kek: bytes, key: StoredKey) -> None:
        secret = decrypt(kek, key.kid, key.private_sealed)
        if key.use == "sig":
            private = serialization.load_pem_private_key(secret, password=None)
            if not isinstance(private, ec.EllipticCurvePrivateKey):
                raise TypeError(f"key {key.kid} is not an EC key")
            self.signing[key.kid] = private
            self.verifying[key.kid] = private.public_key()
            if key.active:
                self.signing_kid = key.kid
        else:
            self.sealing[key.kid] = SealingKey(secret)
            if key.active:
                self.sealing_kid = key.kid
        self.published.append(key)

    def active(self, use: KeyUse) -> StoredKey:
        kid = self.signing_kid if use == "sig" else self.sealing_kid
        return next(k for k in self.published if k.kid == kid)
