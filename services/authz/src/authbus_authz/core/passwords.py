"""Passwords as argon2id (SPEC A9), checked in constant time by argon2 itself.

`verify_unknown` runs the same work against a dummy hash, so an unknown email costs what a
wrong password costs (SPEC A6). Hashing is CPU-bound (~40 ms with the OWASP parameters): the
caller runs it off the event loop with bounded concurrency (`Verifier.run_blocking`).
"""

from __future__ import annotations

import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# The password policy (NIST SP 800-63B, 3.1.1.2): at least 8 characters, long passphrases
# welcome (it asks for at least 64 to be allowed), any character including spaces, no
# composition rules. Longer input is refused before hashing (a bound on the work).
MAX_PASSWORD_CHARS = 1024
MIN_PASSWORD_CHARS = 8
PASSWORD_POLICY = f"{MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"


class Passwords:
    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_unknown(self, password: str) -> bool:
        """Same cost as `verify`, always False."""
        self.verify(self._dummy, password)
        return False
