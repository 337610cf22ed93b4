"""Per-step CPU cost of the api's hot path and of a cold credential check, in one run.

    .venv/bin/python bench/path_costs.py

The hot path (a credential seen recently) costs one keyed digest and a dict lookup; the cold
path adds sealing on the api, opening and the check on authz. The figures are per call on this
machine; compare the ratios, the absolutes drift with the hardware.
"""

from __future__ import annotations

import os
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from authbus_api.core.credentials import parse_authorization
from authbus_api.core.verdict_cache import CredentialDigest, VerdictCache
from authbus_authz.core.keys import KeyRing, new_sealing_key, new_signing_key
from authbus_authz.core.passwords import Passwords
from authbus_authz.core.tokens import check_signature, sign
from authbus_shared.contracts.authz import (
    AccountView,
    AuthMethod,
    CredentialKind,
    CredentialVerified,
    Outcome,
    SealedCredential,
)
from authbus_shared.sealing import SealingKey, seal_to


def per_call_us(fn: Callable[[], object], seconds: float = 0.5) -> float:
    number = max(1, int(seconds / max(timeit.timeit(fn, number=3) / 3, 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def main() -> None:
    now = datetime.now(UTC)
    kek = os.urandom(32)
    key = new_signing_key(kek, now)
    ring = KeyRing.load(kek, [key, new_sealing_key(kek, now)])
    token = sign(
        ring,
        issuer="authbus",
        audience="authbus",
        token_id="t1",
        account_id="a1",
        scopes=("read",),
        issued_at=now,
        expires_at=now + timedelta(hours=1),
        amr=("admin",),
    )
    header = f"Bearer {token}"
    credential = SealedCredential(kind=CredentialKind.BEARER, secret=token)
    digest = CredentialDigest()
    cache = VerdictCache(max_entries=100_000, ttl=timedelta(seconds=60), negative_ttl=timedelta(5))
    verdict = CredentialVerified(
        outcome=Outcome.VALID,
        account=AccountView(id="a1", email="a@x.io"),
        method=AuthMethod.TOKEN,
        credential_id="t1",
    )
    cache.admit(digest(credential), verdict, now)
    sealing = SealingKey.generate()
    plaintext = credential.model_dump_json().encode()
    sealed = seal_to(sealing.public, plaintext)
    passwords = Passwords(time_cost=2, memory_kib=19_456, parallelism=1)  # the defaults (OWASP)
    password_hash = passwords.hash("correct horse battery staple")

    rows = [
        ("hot: parse Authorization", lambda: parse_authorization(header)),
        ("hot: keyed digest (BLAKE2b)", lambda: digest(credential)),
        ("hot: verdict cache lookup", lambda: cache.get(digest(credential), now)),
        ("cold, api: seal credential", lambda: seal_to(sealing.public, plaintext)),
        ("cold, authz: open sealed", lambda: sealing.open(sealed)),
        (
            "cold, authz: ES256 check",
            lambda: check_signature(token, ring, issuer="authbus", audience="authbus", now=now),
        ),
        ("cold, authz: argon2id verify", lambda: passwords.verify(password_hash, "wrong")),
    ]
    baseline = per_call_us(rows[2][1])
    print(f"{'step':<32} {'us/call':>10} {'x hot lookup':>13}")
    for name, fn in rows:
        cost = per_call_us(fn, 2.0 if "argon2" in name else 0.5)
        print(f"{name:<32} {cost:>10.1f} {cost / baseline:>13.1f}")


if __name__ == "__main__":
    main()
