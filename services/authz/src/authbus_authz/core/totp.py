"""Login 2FA with TOTP (RFC 6238; SPEC A5), on pyotp.

- Secret: 160 random bits (RFC 4226's recommended length), base32; stored encrypted under the
  key-encryption key with the account id as associated data (`keys.encrypt`).
- Enrolment: a pending secret and its `otpauth://` URI (for an authenticator app or a QR
  code); confirmed by a first valid code, which turns login 2FA on.
- Check: SHA-1, 6 digits, 30 s steps, the current step and one on either side (clock drift);
  the code is compared in constant time. A code is good once: the matched step must be later
  than the last accepted one (`AccountStore.claim_totp_step`, atomic), so a code seen over a
  shoulder or replayed is refused.
"""

from __future__ import annotations

import hmac
from datetime import datetime

import pyotp

from authbus_authz.core.keys import decrypt, encrypt

STEP_S = 30
DIGITS = 6
DRIFT_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32(32)  # 32 base32 characters = 160 bits


def provisioning_uri(secret: str, email: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).provisioning_uri(
        name=email, issuer_name=issuer
    )


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step `code` is valid for (now, or one step either side), else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):  # ASCII digits only
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S)
    current = int(now.timestamp()) // STEP_S
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step  # no early exit: the same work whichever step matches
    return found


def seal_secret(kek: bytes, account_id: str, secret: str) -> bytes:
    return encrypt(kek, f"totp:{account_id}", secret.encode())


def open_secret(kek: bytes, account_id: str, sealed: bytes) -> str:
    return decrypt(kek, f"totp:{account_id}", sealed).decode()
