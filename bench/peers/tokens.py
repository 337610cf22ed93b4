"""Fresh tokens for the uncached row: each request carries a token the api has never seen, so
each is a real verdict-cache miss that asks authz over Kafka (one token for the whole load
would let the api's single flight answer many requests with one question).

Minted before the rows through authz's real operator interface, the one `authbus-admin token
create` uses (an `IssueToken` command over Kafka, no password: no argon2 check per token),
with one connection and `in_flight` commands outstanding, instead of one CLI process per
token. Handed out once each by a `TokenPool`: a load gets its share by its length in seconds,
and a load that uses up its share stops (vegeta reads the targets lazily) rather than reuse
one.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from authbus_authz.admin.connection import AdminSettings, operator
from authbus_shared import logs
from authbus_shared.authz_client import Secret
from authbus_shared.contracts.commands import NewToken
from authbus_shared.settings import KafkaSettings, LogSettings

from .procs import BenchError

IN_FLIGHT = 64  # IssueToken commands outstanding while minting
TIMEOUT_S = 60.0  # for authz's answer to one command (a busy machine)


def tokens_needed(load_seconds: float, rate_ceiling: float) -> int:
    """How many tokens loads adding up to `load_seconds` use at most, at `rate_ceiling`
    requests per second."""
    return math.ceil(load_seconds * rate_ceiling)


@dataclass
class TokenPool:
    """Tokens handed out once each: `take(seconds)` gives a load of `seconds` its share (the
    pool's tokens per second of load planned), fewer when fewer are left."""

    tokens: Sequence[str]
    planned_s: float  # every load the pool was minted for (warm-ups too), added up
    load_s: float  # the row's measured load (capped: minting is slow)
    taken: int = field(default=0)

    @property
    def per_second(self) -> float:
        """The rate of answers a load can have before it runs out of fresh tokens."""
        return len(self.tokens) / self.planned_s

    def take(self, seconds: float) -> list[str]:
        count = min(math.floor(seconds * self.per_second), len(self.tokens) - self.taken)
        share = list(self.tokens[self.taken : self.taken + count])
        self.taken += count
        return share


@dataclass(frozen=True)
class Minted:
    tokens: list[str]
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("nan")


async def _mint(
    settings: AdminSettings, email: str, scopes: tuple[str, ...], count: int, in_flight: int
) -> list[str]:
    gate = asyncio.Semaphore(in_flight)

    async with operator(settings) as op:

        async def one(index: int) -> str:
            async with gate:
                reply = await op.authz.issue_token(email, name=f"bench-{index}", scopes=scopes)
            if not isinstance(reply, Secret) or not isinstance(reply.reply, NewToken):
                raise BenchError(f"authz did not issue a token: {reply}")
            return reply.value

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def mint(
    *,
    bootstrap: str,
    topic_prefix: str,
    email: str,
    scopes: tuple[str, ...],
    count: int,
    in_flight: int = IN_FLIGHT,
) -> Minted:
    """`count` new tokens for the account `email` (which exists, granted `scopes`)."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
    settings = AdminSettings(kafka=kafka, timeout_s=TIMEOUT_S)
    quiet = LogSettings(level="WARNING", format="console")  # as `authbus-admin`
    logs.configure(quiet, service="admin", instance=settings.instance_id, stream=sys.stderr)
    started = time.monotonic()
    tokens = asyncio.run(_mint(settings, email, scopes, count, in_flight))
    if len(set(tokens)) != count:
        raise BenchError(f"{count - len(set(tokens))} of the minted tokens are duplicates")
    return Minted(tokens, time.monotonic() - started)
