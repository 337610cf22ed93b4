"""Credential kinds: how to prepare credentials of each for a fresh account, and the call
that verifies request i's credential as the api does on a verdict-cache miss."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from authbus_shared.authz_client import AuthzClient, Secret
from authbus_shared.contracts.authz import (
    CredentialKind,
    CredentialVerified,
    Outcome,
    SealedCredential,
)
from authbus_shared.contracts.commands import AccountRef
from authbus_shared.kafka.rpc import RpcTimeout

from .load import Call

T = TypeVar("T")

FAILURES_PER_ACCOUNT = 9  # failed logins per account, below the throttle's 10 free ones


class BenchError(RuntimeError):
    """The bench could not set something up; the message says what."""


@dataclass(frozen=True)
class Account:
    email: str
    password: str


# Request i's credential and the partition key it is sent under.
Source = Callable[[int], tuple[SealedCredential, bytes]]
# Prepares a source of credentials of a kind for `account`, n distinct ones where it can.
Prepare = Callable[[AuthzClient, Account, int], Awaitable[Source]]


@dataclass(frozen=True)
class Kind:
    prepare: Prepare
    credential: CredentialKind  # also the `kind` label of authz's verify metrics
    expected: Outcome = Outcome.VALID  # any other verdict counts as bad

    @property
    def argon2(self) -> bool:
        """A password check: its open-loop rows run at --password-rates."""
        return self.credential is CredentialKind.PASSWORD

    @property
    def failed_login(self) -> bool:
        """Each request is a failed login, counted by the throttle: it is prepared for as many
        requests as it may get (`Options.failed_logins`), not for a few credentials."""
        return self.argon2 and self.expected is not Outcome.VALID


async def new_account(client: AuthzClient) -> Account:
    account = Account(f"bench-{uuid.uuid4().hex[:10]}@example.com", secrets.token_urlsafe(18))
    reply = await client.create_account(account.email, account.password, None)
    if getattr(reply, "account", None) is None:
        raise BenchError(f"create_account refused: {reply.TYPE} {reply.model_dump()}")
    return account


def partition_key(i: int, credential: SealedCredential) -> bytes:
    """Distinct per prepared credential (the api keys by a digest of the credential), so the
    requests spread over the partitions and, with 2 authz, over both instances."""
    return hashlib.sha256(f"{i}:".encode() + credential.model_dump_json().encode()).digest()


def cycling(credentials: list[SealedCredential]) -> Source:
    """Request i gets credential i mod n, always under that credential's partition key."""
    keys = [partition_key(i, c) for i, c in enumerate(credentials)]

    def source(i: int) -> tuple[SealedCredential, bytes]:
        j = i % len(credentials)
        return credentials[j], keys[j]

    return source


async def bounded(n: int, make: Callable[[int], Awaitable[T]], limit: int = 8) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(i: int) -> T:
        async with gate:
            return await make(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


def secret_of(what: str, result: object) -> str:
    """The new secret out of an `issue_token`/`create_key` result; a refusal raises."""
    if not isinstance(result, Secret):
        raise BenchError(f"{what} refused: {result!r}")
    return result.value


async def prepare_bearer(client: AuthzClient, account: Account, n: int) -> Source:
    async def issue(i: int) -> SealedCredential:
        result = await client.issue_token(account.email, name=f"bench-{i}")
        token = secret_of("issue_token", result)
        return SealedCredential(kind=CredentialKind.BEARER, secret=token)

    return cycling(await bounded(n, issue))


async def prepare_key(client: AuthzClient, account: Account, n: int) -> Source:
    owner = AccountRef(email=account.email)

    async def create(i: int) -> SealedCredential:
        key = secret_of("create_key", await client.create_key(owner, name=f"bench-{i}"))
        return SealedCredential(kind=CredentialKind.KEY, secret=key, email=account.email)

    return cycling(await bounded(n, create))


async def prepare_password(client: AuthzClient, account: Account, n: int) -> Source:
    """The right email:password every time: there is no cache on this path, each check is
    cold. The n copies only spread the requests over partitions, as n users would."""
    credential = SealedCredential(
        kind=CredentialKind.PASSWORD, secret=account.password, email=account.email
    )
    return cycling([credential] * n)


async def prepare_password_unknown(client: AuthzClient, account: Account, n: int) -> Source:
    """Basic with an email that has no account (and a password as long as the real one): the
    dummy hash, one throttle count, an audit. The throttle counts unknown emails like accounts,
    so, as password-wrong does with accounts, each email takes 9 requests, then the next."""
    tag = uuid.uuid4().hex[:8]

    def source(i: int) -> tuple[SealedCredential, bytes]:
        email = f"nobody-{tag}-{i // FAILURES_PER_ACCOUNT}@example.com"
        credential = SealedCredential(
            kind=CredentialKind.PASSWORD, secret=account.password, email=email
        )
        return credential, partition_key(i, credential)

    return source


async def prepare_password_wrong(client: AuthzClient, account: Account, n: int) -> Source:
    """A wrong password (as long as the right one) for an existing account: argon2 against its
    hash, one throttle count, an audit; the twin of password-unknown (SPEC A6). A failed login
    counts towards the account's throttle (10 free failures per 15 minutes, ADR 0008), so
    there is one fresh account per 9 of the n requests the kind may get; were they used up,
    the throttled answers would show as bad."""
    owners = await bounded(math.ceil(n / FAILURES_PER_ACCOUNT), lambda _: new_account(client))
    wrong = secrets.token_urlsafe(len(account.password))[: len(account.password)]

    def source(i: int) -> tuple[SealedCredential, bytes]:
        owner = owners[i // FAILURES_PER_ACCOUNT % len(owners)]
        credential = SealedCredential(kind=CredentialKind.PASSWORD, secret=wrong, email=owner.email)
        return credential, partition_key(i, credential)

    return source


KINDS: dict[str, Kind] = {
    "bearer": Kind(prepare_bearer, CredentialKind.BEARER),
    "key": Kind(prepare_key, CredentialKind.KEY),
    "password": Kind(prepare_password, CredentialKind.PASSWORD),
    "password-wrong": Kind(prepare_password_wrong, CredentialKind.PASSWORD, Outcome.INVALID),
    "password-unknown": Kind(prepare_password_unknown, CredentialKind.PASSWORD, Outcome.INVALID),
}


def verify_call(client: AuthzClient, source: Source, expected: Outcome) -> Call:
    """AuthzClient.verify on the next credential of `source`; True when the verdict is
    `expected`. The numbering runs on across the rows (each row numbers its requests from 0):
    a failed-login kind never reuses an email or an account's share of failures."""
    numbers = itertools.count()

    async def call(_: int) -> bool:
        credential, key = source(next(numbers))
        try:
            verdict = await client.verify(credential, partition_key=key)
        except RpcTimeout:
            return False
        return isinstance(verdict, CredentialVerified) and verdict.outcome is expected

    return call
