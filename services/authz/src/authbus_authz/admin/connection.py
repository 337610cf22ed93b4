"""How `authbus-admin` reaches authz: over Kafka, like any other asker (commands on
`authz.commands.v1`, replies on its own reply partition, the sealing key from
`authz.keys.v1`). It needs no database access and no key; passwords are sealed.

Settings: `AUTHBUS_ADMIN_KAFKA__BOOTSTRAP_SERVERS` (or `--bootstrap`), `AUTHBUS_ADMIN_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import orjson
import typer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from authbus_shared import logs
from authbus_shared.authz_client import AuthzClient, AuthzKeys
from authbus_shared.contracts import topics
from authbus_shared.contracts.authz import RequestFailed
from authbus_shared.contracts.commands import CommandRejected
from authbus_shared.kafka.admin import resolve
from authbus_shared.kafka.consumers import BroadcastReader
from authbus_shared.kafka.metrics import KafkaMetrics
from authbus_shared.kafka.producer import Publisher
from authbus_shared.kafka.rpc import RpcClient, RpcTimeout
from authbus_shared.settings import LogSettings, ServiceSettings, load

T = TypeVar("T")


class AdminSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTHBUS_ADMIN_")

    timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for authz.")


@dataclass(frozen=True)
class Operator:
    """What an operator's command may use: authz's client, and a request/reply client for
    the rate limiter's owners on the leases topic (`limits`)."""

    authz: AuthzClient
    rpc: RpcClient
    publisher: Publisher
    leases_topic: str
    timeout: timedelta

    async def leases_partitions(self) -> list[int]:
        """The leases topic's partitions, asked of the broker when a command needs them (a
        deployment without ratelimit has no such topic, and the other commands work)."""
        try:
            async with asyncio.timeout(self.timeout.total_seconds()):
                return await self.publisher.partitions(self.leases_topic)
        except (KafkaError, TimeoutError):
            silent = f"no topic {self.leases_topic}: is ratelimit running?"
            raise failure(silent) from None


@contextlib.asynccontextmanager
async def connected(settings: AdminSettings) -> AsyncIterator[AuthzClient]:
    async with operator(settings) as op:
        yield op.authz


@contextlib.asynccontextmanager
async def operator(settings: AdminSettings) -> AsyncIterator[Operator]:
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
        timeout = timedelta(seconds=settings.timeout_s)
        authz = AuthzClient(
            rpc,
            keys,
            verify_topic=resolve(topics.AUTH_VERIFY, kafka).name,
            commands_topic=resolve(topics.AUTHZ_COMMANDS, kafka).name,
            timeout=timeout,
        )
        leases = resolve(topics.RATELIMIT_LEASES, kafka).name
        yield Operator(authz, rpc, publisher, leases, timeout)


def load_settings(bootstrap: str | None) -> AdminSettings:
    settings = load(AdminSettings)
    quiet = LogSettings(level="WARNING", format="console")
    logs.configure(quiet, service="admin", instance=settings.instance_id, stream=sys.stderr)
    if bootstrap:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
        settings = settings.model_copy(update={"kafka": kafka})
    return settings


def run(bootstrap: str | None, call: Callable[[AuthzClient], Awaitable[T]]) -> T:
    """Connect, make one call, disconnect; exit 1 with a clear message if authz is silent."""
    return operate(bootstrap, lambda op: call(op.authz))


def operate(bootstrap: str | None, call: Callable[[Operator], Awaitable[T]]) -> T:
    """`run`, for calls that reach more than authz."""

    async def go() -> T:
        async with operator(load_settings(bootstrap)) as op:
            return await call(op)

    try:
        return asyncio.run(go())
    except (RpcTimeout, TimeoutError):
        silent = "no answer in time: are authz and ratelimit running, and is Kafka reachable?"
        raise failure(silent) from None


def expect(reply: object, kind: type[T]) -> T:
    """The reply if it is a `kind`; otherwise say why not and exit 1."""
    if isinstance(reply, kind):
        return reply
    if isinstance(reply, CommandRejected):
        detail = f" ({reply.detail})" if reply.detail else ""
        wait = f", retry in {reply.retry_after_s}s" if reply.retry_after_s else ""
        raise failure(f"refused: {reply.reason}{detail}{wait}")
    if isinstance(reply, RequestFailed):
        raise failure(f"authz failed: {reply.reason}")
    raise failure(f"unexpected reply {getattr(reply, 'TYPE', type(reply).__name__)}")


def failure(message: str, code: int = 1) -> typer.Exit:
    """Say what went wrong on stderr; the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def show(as_json: bool, data: Any, text: str) -> None:
    typer.echo(orjson.dumps(data, default=str).decode() if as_json else text)
