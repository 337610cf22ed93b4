"""Nobody grants themselves a scope (SPEC A8), end to end in one process: the api's /v0 routes
over the real authz core (verifier, issuing, accounts on the in-memory store), with no Kafka
between them. A self-made token cannot open admin-only sign-up; an operator's grant can."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry

from authbus_api.app import HttpOptions, build_http
from authbus_api.core.errors import CATALOG, Error
from authbus_api.metrics import ApiMetrics
from authbus_authz.core.accounts import AccountCommands
from authbus_authz.core.issuing import CredentialCommands, Request
from authbus_authz.core.keyring import KeyService
from authbus_authz.core.passwords import Passwords
from authbus_authz.core.ports import TokenRecord
from authbus_authz.core.throttle import Throttle
from authbus_authz.core.tokens import sign
from authbus_authz.core.verifier import Verifier
from authbus_authz.stores.memory import MemoryStore
from authbus_shared.authz_client import AuthzKeys, Refusal, Secret, Verdict
from authbus_shared.contracts.authz import AccountView, SealedCredential
from authbus_shared.contracts.commands import (
    AccountRef,
    CommandRejected,
    GrantScopes,
    NewKey,
    NewToken,
    SealedLogin,
    SealedPasswordChange,
)
from authbus_shared.contracts.envelope import Contract, utcnow
from authbus_shared.contracts.events import AccountCreated
from authbus_shared.ops import Probes, ops_app
from authbus_shared.sealing import SealingKey, b64url
from tests.api_twins import ScriptedAuthz, twin_gate
from tests.unit.core.support import run_now

ISSUER, AUDIENCE = "https://authz.authbus.test", "authbus-test"
ANN, PASSWORD = "ann@example.com", "correct horse battery staple"
JSON = {"Accept": "application/json", "Accept-Language": "en"}


@dataclass
class Core:
    """authz's core, as the runner wires it, on the in-memory store and the wall clock."""

    store: MemoryStore
    verifier: Verifier
    accounts: AccountCommands
    issuing: CredentialCommands

    # the api's Commands port (what the handlers do once the sealed parts are open)
    async def ask(self, command: Contract, key: str) -> Contract:
        assert isinstance(command, GrantScopes), command
        return (await self.accounts.grant_scopes(command)).reply

    async def create_account(self, email: str, password: str, locale: str | None) -> Contract:
        return (await self.accounts.create_account(email, password, locale)).reply

    async def create_token(
        self,
        login: SealedLogin,
        *,
        name: str,
        scopes: tuple[str, ...] = (),
        expires_in_s: int | None = None,
        client: str | None = None,
    ) -> Secret | Refusal:
        one_time = SealingKey.generate()
        asked = Request(name, scopes, None, b64url(one_time.public))
        reply = (await self.issuing.create_token(login, asked, client)).reply
        if isinstance(reply, NewToken):
            return Secret(reply, one_time.open(reply.sealed_token).decode())
        assert isinstance(reply, CommandRejected), reply
        return reply

    async def create_key(
        self,
        account: AccountRef,
        *,
        name: str,
        scopes: tuple[str, ...] = (),
        expires_in_s: int | None = None,
        within: tuple[str, ...] | None = None,
    ) -> Secret | Refusal:
        one_time = SealingKey.generate()
        asked = Request(name, scopes, None, b64url(one_time.public), within=within)
        reply = (await self.issuing.create_key(account, asked)).reply
        if isinstance(reply, NewKey):
            return Secret(reply, one_time.open(reply.sealed_key).decode())
        assert isinstance(reply, CommandRejected), reply
        return reply

    async def enroll_totp(self, account: AccountRef) -> Secret | Refusal:
        raise AssertionError("not used here")

    async def confirm_totp(self, account: AccountRef, code: str) -> Contract:
        raise AssertionError("not used here")

    async def disable_totp(self, account: AccountRef, code: str) -> Contract:
        raise AssertionError("not used here")

    async def change_password(
        self, change: SealedPasswordChange, client: str | None = None
    ) -> Contract:
        raise AssertionError("not used here")


@dataclass
class Verdicts(ScriptedAuthz):
    """The api's Authz port answered by the core's verifier (nothing scripted)."""

    verifier: Verifier | None = None

    async def verify(
        self,
        credential: SealedCredential,
        *,
        partition_key: bytes,
        client: str | None = None,
        within: timedelta | None = None,
    ) -> Verdict:
        assert self.verifier is not None
        return (await self.verifier.verify(credential, client)).verdict


@pytest.fixture
async def core() -> Core:
    store = MemoryStore()
    keys = KeyService(store=store, kek=b"k" * 32, clock=utcnow, sleep=asyncio.sleep)
    await keys.start()
    throttle = Throttle(store)
    passwords = Passwords(time_cost=1, memory_kib=8192, parallelism=1)
    verifier = Verifier(store, keys, passwords, throttle, run_now, utcnow, ISSUER, AUDIENCE)
    accounts = AccountCommands(
        store, verifier, throttle, passwords, run_now, utcnow, b"k" * 32, "en", "authbus"
    )
    issuing = CredentialCommands(store, keys, verifier, accounts, utcnow, ISSUER, AUDIENCE, True)
    return Core(store, verifier, accounts, issuing)


@pytest.fixture
async def ann(core: Core) -> AccountView:
    created = await core.create_account(ANN, PASSWORD, None)
    assert isinstance(created, AccountCreated)
    return created.account


@pytest.fixture
async def client(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    """The api with admin-only sign-up, asking the core for verdicts and commands."""
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    gate = twin_gate(metrics, authz=Verdicts({}, verifier=core.verifier))
    options = HttpOptions(commands=core, signup="admin")
    app = build_http(gate, AuthzKeys(), metrics, ops_app(registry, Probes()), options)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return JSON | {"Authorization": f"Bearer {token}"}


async def new_token(client: httpx.AsyncClient, *scopes: str) -> httpx.Response:
    body = {"email": ANN, "password": PASSWORD, "name": "mine", "scopes": list(scopes)}
    return await client.post("/v0/tokens", json=body, headers=JSON)


async def sign_up(client: httpx.AsyncClient, token: str) -> httpx.Response:
    body = {"email": "newcomer@example.com", "password": "long enough"}
    return await client.post("/v0/accounts", json=body, headers=bearer(token))


async def self_made_before_grants(core: Core, account_id: str) -> str:
    """A token that gave itself `admin` before grants existed, recorded as the code then did."""
    token = sign(
        core.issuing.keys.ring,
        issuer=ISSUER,
        audience=AUDIENCE,
        token_id="self-made",
        account_id=account_id,
        scopes=("admin",),
        issued_at=utcnow(),
        expires_at=None,
        amr=("pwd",),
    )
    record = TokenRecord(
        id="self-made",
        account_id=account_id,
        name="mine",
        scopes=("admin",),
        created_at=utcnow(),
        expires_at=None,
        amr=("pwd",),
        hint=token[-6:],
    )
    await core.store.insert_token(record)
    return token


async def test_a_self_made_token_cannot_pass_admin_only_sign_up(
    client: httpx.AsyncClient, core: Core, ann: AccountView
) -> None:
    asked = await new_token(client, "admin")
    old = await sign_up(client, await self_made_before_grants(core, ann.id))
    plain = await new_token(client)
    with_plain = await sign_up(client, plain.json()["secret"])

    assert (asked.status_code, asked.json()["error"]) == (
        403,
        CATALOG[Error.SCOPE_NOT_GRANTED].message,
    )
    for refused in (old, with_plain):
        assert (refused.status_code, refused.json()["error"]) == (
            403,
            CATALOG[Error.SIGNUP_CLOSED].message,
        )
    assert await core.store.account_by_email("newcomer@example.com") is None


async def test_an_operators_grant_of_admin_opens_admin_only_sign_up(
    client: httpx.AsyncClient, core: Core, ann: AccountView
) -> None:
    await core.ask(GrantScopes(account=AccountRef(email=ANN), add=("admin",)), ANN)

    created = await new_token(client, "admin")
    signed_up = await sign_up(client, created.json()["secret"])

    assert (created.status_code, created.json()["scopes"]) == (201, ["admin"])
    assert signed_up.status_code == 201
    assert await core.store.account_by_email("newcomer@example.com") is not None


async def test_a_token_cannot_mint_a_key_broader_than_itself(
    client: httpx.AsyncClient, core: Core, ann: AccountView
) -> None:
    await core.ask(GrantScopes(account=AccountRef(email=ANN), add=("read", "write")), ANN)
    token = (await new_token(client, "read")).json()["secret"]

    broader = await client.post(
        "/v0/keys", json={"name": "k", "scopes": ["read", "write"]}, headers=bearer(token)
    )
    inside = await client.post(
        "/v0/keys", json={"name": "k", "scopes": ["read"]}, headers=bearer(token)
    )

    assert (broader.status_code, broader.json()["error"]) == (
        403,
        CATALOG[Error.SCOPE_NOT_GRANTED].message,
    )
    assert (inside.status_code, inside.json()["scopes"]) == (201, ["read"])
    assert [k.scopes for k in core.store.api_keys.values()] == [("read",)]
