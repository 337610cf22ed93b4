"""Reading `Authorization` (SPEC A1-A4, A6, E5): a credential, `missing` or `malformed`; never
an exception."""

from __future__ import annotations

import base64

import pytest

from authbus_api.core.credentials import MAX_HEADER_CHARS, Unreadable, parse_authorization
from authbus_shared import apikeys
from authbus_shared.contracts.authz import CredentialKind, SealedCredential

KEY = apikeys.generate()


def basic(user_pass: str | bytes) -> str:
    raw = user_pass.encode() if isinstance(user_pass, str) else user_pass
    return "Basic " + base64.b64encode(raw).decode("ascii")


@pytest.mark.parametrize("header", [None, "", " ", "\t "], ids=repr)
def test_no_credentials_are_missing(header: str | None) -> None:
    """A6: no credentials is 401 "missing", not "invalid"."""
    assert parse_authorization(header) is Unreadable.MISSING


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer tok", "tok"),
        ("bearer tok", "tok"),
        ("BEARER tok", "tok"),
        ("  Bearer   tok  ", "tok"),
        ("Bearer eyJhbGci.eyJzdWIi.c2ln", "eyJhbGci.eyJzdWIi.c2ln"),
        ("Bearer a-b_c~d+e/f.g==", "a-b_c~d+e/f.g=="),
    ],
)
def test_bearer_scheme_is_case_insensitive(header: str, token: str) -> None:
    """A1, RFC 9110 11.1: the scheme is case-insensitive; RFC 6750 b64token characters."""
    assert parse_authorization(header) == SealedCredential(kind=CredentialKind.BEARER, secret=token)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer two words",
        "Bearer tok!",
        "Bearer tök",
        "Bearer <script>",
        "Bearer =abc",
        "Bearer tok\nX-Injected: 1",
        "Bearer\ttok",
    ],
    ids=repr,
)
def test_bearer_with_spaces_or_illegal_characters_is_malformed(header: str) -> None:
    assert parse_authorization(header) is Unreadable.MALFORMED


@pytest.mark.parametrize(
    ("user_pass", "email", "password"),
    [
        ("alice@example.io:hunter22", "alice@example.io", "hunter22"),
        ("alice@example.io:pässwörd ✓ 密码", "alice@example.io", "pässwörd ✓ 密码"),
        ("alice@example.io:pa:ss:word", "alice@example.io", "pa:ss:word"),
        ("alice@example.io::leading-colon", "alice@example.io", ":leading-colon"),
        ("alice@example.io:with space", "alice@example.io", "with space"),
    ],
)
def test_basic_is_utf8_split_at_the_first_colon(user_pass: str, email: str, password: str) -> None:
    """A2, RFC 7617."""
    assert parse_authorization(basic(user_pass)) == SealedCredential(
        kind=CredentialKind.PASSWORD, secret=password, email=email
    )


def test_basic_scheme_is_case_insensitive() -> None:
    header = "bAsIc " + basic("alice@example.io:hunter22").removeprefix("Basic ")

    assert parse_authorization(header) == SealedCredential(
        kind=CredentialKind.PASSWORD, secret="hunter22", email="alice@example.io"
    )


@pytest.mark.parametrize(
    ("user_pass", "kind", "email", "secret"),
    [
        (f"alice@example.io/key:{KEY}", CredentialKind.KEY, "alice@example.io", KEY),
        (
            "alice@example.io/token:eyJ.x.y",
            CredentialKind.BASIC_TOKEN,
            "alice@example.io",
            "eyJ.x.y",
        ),
        ("alice@example.io/token:a:b", CredentialKind.BASIC_TOKEN, "alice@example.io", "a:b"),
    ],
    ids=["key", "token", "token-with-colons"],
)
def test_basic_user_suffix_selects_key_or_token(
    user_pass: str, kind: CredentialKind, email: str, secret: str
) -> None:
    """A3: `EMAIL/key`; A4: `EMAIL/token`."""
    assert parse_authorization(basic(user_pass)) == SealedCredential(
        kind=kind, secret=secret, email=email
    )


@pytest.mark.parametrize(
    "secret",
    [
        "KEY123",
        KEY[:-1],
        KEY + "0",
        KEY[:20] + ("A" if KEY[20] != "A" else "B") + KEY[21:],
        "abk-" + KEY[4:],
        KEY[:10] + ":" + KEY[11:],
        f"{KEY}:{KEY}",
    ],
    ids=["short", "truncated", "one-too-many", "typo", "wrong-prefix", "colon", "doubled"],
)
def test_legacy_key_that_is_not_well_formed_is_malformed(secret: str) -> None:
    """A3: a mistyped legacy key (prefix, length, alphabet, checksum) is refused at the edge,
    before any lookup; the api answers it like any wrong credential."""
    assert parse_authorization(basic(f"alice@example.io/key:{secret}")) is Unreadable.MALFORMED


def test_a_well_formed_key_given_as_a_password_stays_a_password() -> None:
    """Only the `/key` suffix says a secret is a key: a password that looks like one is a
    password (A2)."""
    assert parse_authorization(basic(f"alice@example.io:{KEY}")) == SealedCredential(
        kind=CredentialKind.PASSWORD, secret=KEY, email="alice@example.io"
    )


@pytest.mark.parametrize(
    "header",
    [
        basic("/key:x"),
        basic("/token:x"),
        basic("alice@example.io"),
        basic("alice@example.io:"),
        basic(":hunter22"),
        basic(""),
        basic(b"\xff\xfe:x"),
        basic(b"alice@example.io:\xc3"),
        "Basic !!!!",
        "Basic YWxpY2U6cHc",  # missing padding
        "Basic YWxp Y2U6cHc=",
        "Basic",
        'Digest username="alice", realm="api", nonce="x"',
        "Token abc",
        "Negotiate YII=",
    ],
    ids=[
        "empty-email-key",
        "empty-email-token",
        "no-colon",
        "empty-password",
        "empty-user",
        "empty-credentials",
        "non-utf8-user",
        "non-utf8-password",
        "bad-base64",
        "unpadded-base64",
        "space-in-base64",
        "no-credentials",
        "digest",
        "token-scheme",
        "negotiate",
    ],
)
def test_unreadable_credentials_are_malformed(header: str) -> None:
    """E5: a 4xx from the catalog, never a crash."""
    assert parse_authorization(header) is Unreadable.MALFORMED


def test_header_at_the_size_limit_is_read() -> None:
    header = "Bearer " + "a" * (MAX_HEADER_CHARS - len("Bearer "))

    result = parse_authorization(header)

    assert isinstance(result, SealedCredential)
    assert len(header) == MAX_HEADER_CHARS


@pytest.mark.parametrize(
    "header",
    [
        "Bearer " + "a" * MAX_HEADER_CHARS,
        basic("alice@example.io:" + "p" * MAX_HEADER_CHARS),
        " " * (MAX_HEADER_CHARS + 1) + "Bearer tok",
    ],
    ids=["bearer", "basic", "padded"],
)
def test_oversized_header_is_malformed(header: str) -> None:
    assert parse_authorization(header) is Unreadable.MALFORMED


@pytest.mark.parametrize(
    "user_pass",
    [
        "a" * 250 + "@example.io:hunter22",
        "a" * 250 + f"@example.io/key:{KEY}",
        "a" * 250 + "@example.io/token:tok",
    ],
    ids=["password", "key", "token"],
)
def test_overlong_email_is_malformed_not_an_exception(user_pass: str) -> None:
    """E5: an email longer than the contract allows (254) is unreadable input, not a 500."""
    assert parse_authorization(basic(user_pass)) is Unreadable.MALFORMED
