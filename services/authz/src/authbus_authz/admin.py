"""`authbus-admin`: the operators' command line (SPEC G4).

It talks to authz over Kafka like any other asker (commands on `authz.commands.v1`, replies on
its own reply partition), so it works against any deployment it can reach the brokers of and
needs no database access or key. Passwords are read from a prompt or stdin, never from argv,
and go out sealed; a new token is printed once and never stored here.

Settings: `AUTHBUS_ADMIN_KAFKA__BOOTSTRAP_SERVERS` (or `--bootstrap`), `AUTHBUS_ADMIN_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

import orjson
import typer
from prometheus_client import CollectorRegistry
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from authbus_shared import logs
from authbus_shared.authz_client import AuthzClient, AuthzKeys
from authbus_shared.contracts import topics
from authbus_shared.contracts.authz import (
    AccountCreated,
    CommandRejected,
    RequestFailed,
    TokenRevoked,
)
from authbus_shared.contracts.envelope import Contract
from authbus_shared.kafka.admin import resolve
from authbus_shared.kafka.consumers import BroadcastReader
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import RpcClient, RpcTimeout
from authbus_shared.settings import LogSettings, ServiceSettings, load


class AdminSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTHBUS_ADMIN_")

    timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for authz.")


app = typer.Typer(help="authbus operators' tool: accounts and tokens.", no_args_is_help=True)
account_app = typer.Typer(help="Accounts.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(token_app, name="token")

Bootstrap = Annotated[
    str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers (else from env).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]


@contextlib.asynccontextmanager
async def connected(settings: AdminSettings) -> AsyncIterator[AuthzClient]:
    kafka = settings.kafka
    metrics = KafkaMetrics("admin", CollectorRegistry())
    client_id = f"{kafka.client_id_prefix}-admin-{settings.instance_id}"
    keys = AuthzKeys()
    async with contextlib.AsyncExitStack() as stack:
        publisher = Publisher(kafka, client_id=client_id, metrics=metrics)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        reader = BroadcastReader(
            kafka,
            topics=[resolve(topics.AUTHZ_KEYS, kafka).name],
            handler=keys.handle,
            metrics=metrics,
            client_id=client_id,
            start_at="beginning",
        )
        await reader.start()
        stack.push_async_callback(reader.stop)
        rpc = RpcClient(
            kafka,
            publisher=publisher,
            reply_topic=resolve(topics.REPLIES, kafka),
            instance_id=settings.instance_id,
            metrics=metrics,
            client_id=client_id,
        )
        await rpc.start()
        stack.push_async_callback(rpc.stop)
        async with asyncio.timeout(settings.timeout_s):
            while not (reader.caught_up and keys.has_sealing_key):  # noqa: ASYNC110 - two sources
                await asyncio.sleep(0.02)
        yield AuthzClient(
            rpc,
            keys,
            verify_topic=resolve(topics.AUTH_VERIFY, kafka).name,
            commands_topic=resolve(topics.AUTHZ_COMMANDS, kafka).name,
            timeout=timedelta(seconds=settings.timeout_s),
        )


def _settings(bootstrap: str | None) -> AdminSettings:
    settings = load(AdminSettings)
    quiet = LogSettings(level="WARNING", format="console")
    logs.configure(quiet, service="admin", instance=settings.instance_id, stream=sys.stderr)
    if bootstrap:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
        settings = settings.model_copy(update={"kafka": kafka})
    return settings


def _run(bootstrap: str | None, call: Callable[[AuthzClient], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        async with connected(_settings(bootstrap)) as client:
            return await call(client)

    try:
        return asyncio.run(go())
    except (RpcTimeout, TimeoutError):
        _fail("authz did not answer in time: is it running, and is Kafka reachable?")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _refused(reply: Contract) -> None:
    if isinstance(reply, CommandRejected):
        _fail(f"refused: {reply.reason}{(' (' + reply.detail + ')') if reply.detail else ''}")
    if isinstance(reply, RequestFailed):
        _fail(f"authz failed: {reply.reason}")
    _fail(f"unexpected reply {reply.TYPE}")


def _print(as_json: bool, data: dict[str, Any], text: str) -> None:
    typer.echo(orjson.dumps(data, default=str).decode() if as_json else text)


@account_app.command("create")
def account_create(
    email: str,
    locale: Annotated[str | None, typer.Option(help="Default locale (e.g. fr).")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    bootstrap: Bootstrap = None,
    as_json: AsJson = False,
) -> None:
    """Create an account with a password (prompted, or from stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    reply = _run(bootstrap, lambda c: c.create_account(email, password, locale))
    if not isinstance(reply, AccountCreated):
        _refused(reply)
    account = reply.account
    _print(as_json, account.model_dump(), f"created account {account.email} (id {account.id})")


@token_app.command("create")
def token_create(
    email: str,
    name: Annotated[str, typer.Option(help="A name to recognise the token by.")],
    scope: Annotated[list[str] | None, typer.Option(help="A scope; repeat for more.")] = None,
    expires_in: Annotated[
        int | None, typer.Option(help="Lifetime in seconds (default: no expiry).")
    ] = None,
    bootstrap: Bootstrap = None,
    as_json: AsJson = False,
) -> None:
    """Issue an API token for an account; the token is printed once."""
    reply = _run(
        bootstrap,
        lambda c: c.issue_token(
            email, name=name, scopes=tuple(scope or ()), expires_in_s=expires_in
        ),
    )
    if not isinstance(reply, tuple):
        _refused(reply)
    issued, token = reply
    data = issued.token.model_dump(mode="json") | {"token": token}
    _print(as_json, data, token)


@token_app.command("revoke")
def token_revoke(token_id: str, bootstrap: Bootstrap = None, as_json: AsJson = False) -> None:
    """Revoke a token by its id (the `jti`, shown when it was created)."""
    reply = _run(bootstrap, lambda c: c.revoke_token(token_id))
    if not isinstance(reply, TokenRevoked):
        _refused(reply)
    _print(as_json, reply.model_dump(mode="json"), f"revoked token {token_id}")
