"""Only the canonical token form verifies (SPEC A1, A6; issue #8 item 7).

A real ES256 token has other spellings that pyjwt accepts: the signature with `=` padding, and
the ECDSA twin (r, n - s). Each is refused: the first by the canonical base64url rule
(`tokens.canonical`), the second by the byte-exact check against the record (its SHA-256 of
the token as issued; for records from before that, its last 6 characters)."""

from __future__ import annotations

import dataclasses
import hashlib

import jwt
import pytest

from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands
from authbus_authz.core.keys import KeyRing
from authbus_authz.core.tokens import canonical, check_signature, sign
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.contracts.authz import AccountView, Outcome
from authbus_shared.sealing import b64url_decode

from .support import (
    ALICE,
    ALICE_PASSWORD,
    AUDIENCE,
    ISSUER,
    T0,
    b64url,
    basic_token,
    bearer,
    create_account,
    issue_token,
    verdict_of,
)

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def padded(token: str) -> str:
    """The same token with its signature's base64url `=` padding written out."""
    return token + "=" * (-len(token.rsplit(".", 1)[1]) % 4)


def s_twin(token: str) -> str:
    """The ECDSA twin: the raw 64-byte signature r || s becomes r || (n - s), also valid."""
    header, payload, signature = token.split(".")
    raw = b64url_decode(signature)
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    return f"{header}.{payload}.{b64url(r + (P256_ORDER - s).to_bytes(32, 'big'))}"


def pyjwt_accepts(ring: KeyRing, token: str) -> bool:
    """Whether the library alone takes it (so the refusals below are ours, not pyjwt's)."""
    try:
        jwt.decode(
            token,
            ring.verifying[ring.signing_kid],
            algorithms=["ES256"],
            audience=AUDIENCE,
            options={"verify_iat": False, "verify_nbf": False},  # T0 is in the future
        )
    except jwt.InvalidTokenError:
        return False
    return True


def real_token(ring: KeyRing) -> str:
    return sign(
        ring,
        issuer=ISSUER,
        audience=AUDIENCE,
        token_id="tok-1",
        account_id="acct-1",
        scopes=("read",),
        issued_at=T0,
        expires_at=None,
        amr=("admin",),
    )


@pytest.fixture
async def alice(accounts: AccountCommands) -> AccountView:
    return await create_account(accounts, ALICE, ALICE_PASSWORD)


# --- the canonical compact form (tokens.py) --------------------------------------------------


def test_the_other_spellings_of_a_real_token_are_accepted_by_pyjwt(ring: KeyRing) -> None:
    token = real_token(ring)

    assert padded(token) != token != s_twin(token)
    assert pyjwt_accepts(ring, token)
    assert pyjwt_accepts(ring, padded(token))
    assert pyjwt_accepts(ring, s_twin(token))


@pytest.mark.parametrize("segment", [0, 1, 2], ids=["header", "payload", "signature"])
@pytest.mark.parametrize(
    "respell",
    [
        lambda part: part + "=" * (-len(part) % 4 or 4),  # padded (or one pad too many)
        lambda part: part.replace("-", "+").replace("_", "/") + "+/",  # plain base64 alphabet
        lambda part: part[:-1] + _sibling(part[-1]),  # same bytes, unused low bits set
        lambda part: part + " ",
        lambda part: part + "A" * ((1 - len(part)) % 4),  # a length no base64 text has (4n+1)
    ],
    ids=["padding", "base64-alphabet", "trailing-bits", "space", "impossible-length"],
)
def test_a_segment_that_is_not_canonical_base64url_is_invalid(
    ring: KeyRing, segment: int, respell: object
) -> None:
    parts = real_token(ring).split(".")
    assert callable(respell)
    parts[segment] = respell(parts[segment])
    token = ".".join(parts)

    assert not canonical(token)
    assert check_signature(token, ring, issuer=ISSUER, audience=AUDIENCE, now=T0) is (
        Outcome.INVALID
    )


@pytest.mark.parametrize("count", [2, 4], ids=["two", "four"])
def test_a_token_without_exactly_three_segments_is_not_canonical(ring: KeyRing, count: int) -> None:
    parts = real_token(ring).split(".")

    assert not canonical(".".join((parts * 2)[:count]))
    assert canonical(".".join(parts))


def _sibling(char: str) -> str:
    """Another base64url character with the same high bits: the decoded bytes stay the same
    when `char` is the last of a segment whose length is 2 or 3 mod 4."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return alphabet[alphabet.index(char) ^ 1]


# --- byte-exact against the record (verifier.py) ---------------------------------------------


async def test_only_the_issued_text_of_a_token_verifies(
    issuing: CredentialCommands, verifier: Verifier, alice: AccountView
) -> None:
    _, token = await issue_token(issuing, ALICE)

    assert (await verdict_of(verifier, bearer(token))).outcome is Outcome.VALID
    for other in (padded(token), s_twin(token)):
        assert (await verdict_of(verifier, bearer(other))).outcome is Outcome.INVALID
        assert (await verdict_of(verifier, basic_token(ALICE, other))).outcome is Outcome.INVALID


async def test_the_record_keeps_the_sha256_of_the_issued_token(
    issuing: CredentialCommands, store: MemoryStore, alice: AccountView
) -> None:
    issued, token = await issue_token(issuing, ALICE)

    record = store.tokens[issued.token_id]
    assert record.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(record)


async def test_a_record_whose_digest_differs_refuses_the_token(
    issuing: CredentialCommands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    issued, token = await issue_token(issuing, ALICE)
    record = store.tokens[issued.token_id]
    store.tokens[issued.token_id] = dataclasses.replace(record, token_sha256="0" * 64)

    assert (await verdict_of(verifier, bearer(token))).outcome is Outcome.INVALID


async def test_a_record_from_before_digests_compares_the_hint_and_refuses_the_twin(
    issuing: CredentialCommands, verifier: Verifier, store: MemoryStore, alice: AccountView
) -> None:
    """Tokens issued before the digest was recorded: the hint (last 6 characters, the end of
    `s`) tells the original from its (r, n - s) twin."""
    issued, token = await issue_token(issuing, ALICE)
    record = store.tokens[issued.token_id]
    store.tokens[issued.token_id] = dataclasses.replace(record, token_sha256="")

    assert s_twin(token)[-6:] != token[-6:]
    assert (await verdict_of(verifier, bearer(token))).outcome is Outcome.VALID
    assert (await verdict_of(verifier, bearer(s_twin(token)))).outcome is Outcome.INVALID
    assert (await verdict_of(verifier, bearer(padded(token)))).outcome is Outcome.INVALID
