"""Helpers shared by the core unit tests (not fixtures: plain values and functions)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from authbus_authz.core.commands import Commands
from authbus_shared.contracts.authz import AccountCreated, AccountView, NewToken, TokenIssued
from authbus_shared.sealing import SealingKey

T = TypeVar("T")

ISSUER = "https://authz.authbus.test"
AUDIENCE = "authbus-test"
# A whole second, at the start of a minute, so JWT second-precision times compare exactly.
T0 = datetime(2030, 1, 2, 3, 4, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand (STYLE 9: injected clock, never sleep)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


async def run_now(fn: Callable[[], T], /) -> T:
    """`RunBlocking` for tests: runs the work inline."""
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


# --- authz commands, for the verifier and command tests -----------------------------------

ALICE = "Alice@Example.io"
ALICE_PASSWORD = "correct horse battery staple"
BOB = "bob@example.io"
BOB_PASSWORD = "another good password"


async def create_account(commands: Commands, email: str, password: str) -> AccountView:
    done = await commands.create_account(email, password, locale=None)
    assert isinstance(done.reply, AccountCreated), done.reply
    return done.reply.account


async def issue_token(
    commands: Commands,
    email: str,
    *,
    scopes: tuple[str, ...] = (),
    expires_in: timedelta | None = None,
) -> tuple[TokenIssued, str]:
    """Issue a token as the admin CLI would; returns the audit view and the opened token."""
    reply_key = SealingKey.generate()
    done = await commands.issue_token(
        email, name="ci", scopes=scopes, expires_in=expires_in, reply_key=b64url(reply_key.public)
    )
    assert isinstance(done.reply, NewToken), done.reply
    return done.reply.token, reply_key.open(done.reply.sealed_token).decode()
