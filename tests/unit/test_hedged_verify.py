"""authz fail-over (issue #10 item 5; SPEC O4): when the authz instance owning a partition of
the verify topic has died and its group has not noticed yet, a token or key check is hedged
to another partition and answered within the verify budget; a password never is."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from authbus_shared.authz_client import AuthzClient, AuthzKeys, Hedge
from authbus_shared.contracts.authz import (
    CredentialKind,
    CredentialVerified,
    Outcome,
    SealedCredential,
)
from authbus_shared.contracts.envelope import Contract, Envelope, utcnow, wrap
from authbus_shared.hedging import PartitionHealth
from authbus_shared.kafka.rpc import RpcTimeout

PARTITIONS = 12
ANSWER = CredentialVerified(outcome=Outcome.INVALID, checked_at=utcnow())


class HalfTheGroupDead:
    """The verify topic's partitions; those of the dead instance never answer."""

    def __init__(self, dead: set[int]) -> None:
        self.dead = dead
        self.sent: list[int | None] = []

    async def request(
        self,
        topic: str,
        payload: Contract,
        *,
        key: Any,
        timeout: timedelta,  # noqa: ASYNC109 - the port's signature
        partition: int | None = None,
    ) -> Envelope:
        self.sent.append(partition)
        if partition is None or partition in self.dead:
            await asyncio.sleep(timeout.total_seconds())
            raise RpcTimeout("no reply")
        await asyncio.sleep(0.002)
        return wrap(ANSWER, producer="authz", now=utcnow())


def client(rpc: HalfTheGroupDead, hedge: Hedge | None) -> AuthzClient:
    authz = AuthzClient(
        rpc,  # type: ignore[arg-type]
        AuthzKeys(),
        verify_topic="auth.verify.v1",
        commands_topic="authz.commands.v1",
        timeout=timedelta(seconds=2),
        hedge=hedge,
    )
    authz._seal = lambda value: ("kid", "sealed")  # type: ignore[method-assign]
    return authz


def key_homed_on(partition: int) -> bytes:
    health = PartitionHealth(PARTITIONS)
    return next(k for n in range(10_000) if health.home(k := str(n).encode()) == partition)


TOKEN = SealedCredential(kind=CredentialKind.BEARER, secret="t")


async def test_a_token_check_homed_on_a_dead_instance_is_answered_by_the_survivor() -> None:
    dead = set(range(0, PARTITIONS, 2))  # 2 authz: the dead one owned the even partitions
    rpc = HalfTheGroupDead(dead)
    authz = client(rpc, Hedge(PARTITIONS, after=timedelta(milliseconds=100)))
    started = time.monotonic()

    first = await authz.verify(TOKEN, partition_key=key_homed_on(0))
    first_took = time.monotonic() - started
    again = time.monotonic()
    second = await authz.verify(TOKEN, partition_key=key_homed_on(2))
    second_took = time.monotonic() - again

    assert first == second == ANSWER
    assert first_took < 2.0  # within the verify budget: no 503
    assert second_took < 0.2  # the second hedge goes straight to a partition that answered
    assert rpc.sent[-1] not in dead


async def test_all_partitions_dead_is_a_timeout_within_the_budget() -> None:
    rpc = HalfTheGroupDead(set(range(PARTITIONS)))
    authz = client(rpc, Hedge(PARTITIONS, after=timedelta(milliseconds=100)))
    started = time.monotonic()

    with pytest.raises(RpcTimeout):
        await authz.verify(TOKEN, partition_key=b"k")

    assert time.monotonic() - started < 2.3
    assert len(rpc.sent) == 3  # the copies, then the wait for the budget's end


async def test_a_password_is_never_hedged() -> None:
    """Each check costs argon2 and counts towards the login throttle (A10)."""
    rpc = HalfTheGroupDead(set())
    authz = client(rpc, Hedge(PARTITIONS, after=timedelta(milliseconds=1)))
    password = SealedCredential(kind=CredentialKind.PASSWORD, secret="pw", email="a@b.c")

    with pytest.raises(RpcTimeout):
        await authz.verify(password, partition_key=b"k")  # key-routed (None): never answers here

    assert rpc.sent == [None]


def test_a_copy_goes_to_a_partition_of_an_owner_that_has_not_failed() -> None:
    health = PartitionHealth(4)
    health.answered(3, now=10.0, by="b")
    health.answered(1, now=12.0, by="a")
    health.failed(0, now=13.0)  # owner unknown: suspects nobody
    assert health.pick({0}, now=14.0) == 1  # a answered last

    health.answered(0, now=14.5, by="a")
    health.failed(0, now=15.0)  # a is suspect now, 1 with it

    assert health.pick({0}, now=16.0) == 3
    assert health.pick({0, 3}, now=16.0) == 2  # unknown owner before a suspect one
    health.answered(1, now=17.0, by="a")  # a answers again: trusted again
    assert health.pick({0}, now=18.0) == 1


def test_after_a_kill_the_dead_owners_other_partitions_are_avoided() -> None:
    """The fault suite's case: every partition answered a moment ago, the dead member's
    included; the copy after the first unanswered one must go to the survivor."""
    health = PartitionHealth(12)
    for p in range(12):
        health.answered(p, now=100.0 + p / 100, by="a" if p % 2 == 0 else "b")
    health.failed(4, now=101.0)  # a died: its partition 4 went unanswered

    assert health.pick({4}, now=101.0) % 2 == 1


def test_with_owners_unknown_copies_spread_around_the_ring() -> None:
    health = PartitionHealth(12)

    assert health.pick({3}, now=0.0) == 9  # range assignment: the far half, another member
    assert health.pick({3, 9}, now=0.0) in {0, 6}
