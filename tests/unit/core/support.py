"""Helpers shared by the core unit tests (not fixtures: plain values and functions)."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pyotp

from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands, Request
from authbus_authz.core.keys import KeyRing, new_sealing_key, new_signing_key
from authbus_authz.core.verifier import Verifier
from authbus_shared.contracts.authz import (
    AccountView,
    CredentialKind,
    CredentialVerified,
    SealedCredential,
)
from authbus_shared.contracts.commands import (
    AccountRef,
    AccountScopes,
    GrantScopes,
    NewKey,
    NewToken,
    TotpEnrollment,
)
from authbus_shared.contracts.events import AccountChanged, AccountCreated, KeyIssued, TokenIssued
from authbus_shared.sealing import SealingKey

T = TypeVar("T")

ISSUER = "https://authz.authbus.test"
AUDIENCE = "authbus-test"
TOTP_ISSUER = "authbus test"
# A whole second, at the start of a minute (and of a 30 s TOTP step), so JWT second-precision
# times compare exactly.
T0 = datetime(2030, 1, 2, 3, 4, 0, tzinfo=UTC)
STEP = timedelta(seconds=30)


class FakeClock:
    """A clock the test moves by hand (STYLE 9: injected clock, never sleep)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    async def sleep(self, seconds: float) -> None:
        """An injected `asyncio.sleep`: time passes at once and is recorded."""
        self.slept.append(seconds)
        self.advance(timedelta(seconds=seconds))


async def run_now(fn: Callable[[], T], /) -> T:
    """`RunBlocking` for tests: runs the work inline."""
    return fn()


class CountingRunner:
    """`RunBlocking` that counts the blocking (argon2) jobs it runs."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, fn: Callable[[], T], /) -> T:
        self.calls += 1
        return fn()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def ts(at: datetime) -> int:
    return int(at.timestamp())


def forge_jwt(
    header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]
) -> str:
    """A compact JWS built by hand, so headers and signatures can be anything."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def make_ring(kek: bytes, at: datetime = T0) -> KeyRing:
    """A ring with one fresh signing and one fresh sealing key, both active."""
    return KeyRing.load(kek, [new_signing_key(kek, at), new_sealing_key(kek, at)])


# --- credentials as the api sends them -----------------------------------------------------


def bearer(token: str) -> SealedCredential:
    return SealedCredential(kind=CredentialKind.BEARER, secret=token)


def basic_token(email: str | None, token: str) -> SealedCredential:
    return SealedCredential(kind=CredentialKind.BASIC_TOKEN, secret=token, email=email)


def password(email: str, secret: str) -> SealedCredential:
    return SealedCredential(kind=CredentialKind.PASSWORD, secret=secret, email=email)


def api_key(email: str, key: str) -> SealedCredential:
    return SealedCredential(kind=CredentialKind.KEY, secret=key, email=email)


async def verdict_of(
    verifier: Verifier, credential: SealedCredential, client: str | None = None
) -> CredentialVerified:
    return (await verifier.verify(credential, client)).verdict


# --- authz commands ----------------------------------------------------------------------

ALICE = "Alice@Example.io"
ALICE_PASSWORD = "correct horse battery staple"
BOB = "bob@example.io"
BOB_PASSWORD = "another good password"


def request(
    reply_key: SealingKey | None = None,
    *,
    name: str = "ci",
    scopes: tuple[str, ...] = (),
    expires_in: timedelta | None = None,
) -> Request:
    """A new-credential request whose secret comes back sealed to `reply_key`."""
    key = reply_key or SealingKey.generate()
    return Request(name=name, scopes=scopes, expires_in=expires_in, reply_key=b64url(key.public))


async def create_account(accounts: AccountCommands, email: str, password: str) -> AccountView:
    done = await accounts.create_account(email, password, locale=None)
    assert isinstance(done.reply, AccountCreated), done.reply
    return done.reply.account


async def grant(accounts: AccountCommands, email: str, *scopes: str) -> tuple[str, ...]:
    """An operator adds these scopes to the account's grant (A8); returns the grant after."""
    done = await accounts.grant_scopes(GrantScopes(account=AccountRef(email=email), add=scopes))
    assert isinstance(done.reply, AccountScopes), done.reply
    return done.reply.scopes


async def issue_token(
    issuing: CredentialCommands,
    email: str,
    *,
    scopes: tuple[str, ...] = (),
    expires_in: timedelta | None = None,
) -> tuple[TokenIssued, str]:
    """Issue a token as the admin CLI would; returns the audit view and the opened token."""
    reply_key = SealingKey.generate()
    done = await issuing.issue_token(
        email, request(reply_key, scopes=scopes, expires_in=expires_in)
    )
    assert isinstance(done.reply, NewToken), done.reply
    return done.reply.token, reply_key.open(done.reply.sealed_token).decode()


async def create_key(
    issuing: CredentialCommands,
    email: str,
    *,
    scopes: tuple[str, ...] = (),
    expires_in: timedelta | None = None,
) -> tuple[KeyIssued, str]:
    """Create a legacy key; returns the audit view and the opened key."""
    reply_key = SealingKey.generate()
    done = await issuing.create_key(
        AccountRef(email=email), request(reply_key, scopes=scopes, expires_in=expires_in)
    )
    assert isinstance(done.reply, NewKey), done.reply
    return done.reply.key, reply_key.open(done.reply.sealed_key).decode()


# --- TOTP --------------------------------------------------------------------------------


def code_at(secret: str, at: datetime) -> str:
    """The code an authenticator app shows at `at` (pyotp, independent of the core)."""
    return pyotp.TOTP(secret).at(at)


def wrong_code(secret: str, at: datetime) -> str:
    """A well-formed code that is valid for none of the steps around `at`."""
    valid = {code_at(secret, at + n * STEP) for n in (-1, 0, 1)}
    return next(c for c in (f"{n:06d}" for n in range(0, 1_000_000, 7919)) if c not in valid)


def secret_of(uri: str) -> str:
    """The secret an `otpauth://` URI holds."""
    return urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]


async def enroll(accounts: AccountCommands, account_id: str) -> str:
    """Start TOTP enrolment as the settings page would; returns the opened otpauth URI."""
    reply_key = SealingKey.generate()
    done = await accounts.enroll_totp(AccountRef(account_id=account_id), b64url(reply_key.public))
    assert isinstance(done.reply, TotpEnrollment), done.reply
    return reply_key.open(done.reply.sealed_uri).decode()


async def turn_on_totp(accounts: AccountCommands, account_id: str, at: datetime) -> str:
    """Enrol and confirm login 2FA with the code of `at`; returns the secret. The step of `at`
    is then used up: the next code must come from a later step."""
    secret = secret_of(await enroll(accounts, account_id))
    done = await accounts.confirm_totp(AccountRef(account_id=account_id), code_at(secret, at))
    assert isinstance(done.reply, AccountChanged), done.reply
    return secret
