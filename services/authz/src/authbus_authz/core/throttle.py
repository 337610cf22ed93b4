"""Failed-login throttling (SPEC A10): capped exponential backoff, three scopes.

Each failed password check counts under three keys:
- `pair:<account>:<client>` — one client against one account: strict (backoff after 3
  failures, up to 15 minutes). Stops a single-source guesser cold.
- `client:<client>` — one client against any accounts (password spraying): after 20
  failures, up to 15 minutes.
- `account:<account>` — any clients against one account (a distributed guesser): after 10
  failures, but capped at 60 seconds, so an attacker cannot lock the real owner out for long:
  the owner waits at most a minute, and only while the attack goes on.
Unknown emails are counted under the same keys (a hash of the normalized email stands for the
account), so throttling behaves the same whether an account exists (A6).

After `free` failures within `window`, each further failure blocks the key for
`base * 2^(failures - free)`, capped. A successful login clears the pair's count. While any
key is blocked, the check is refused before argon2 runs (`throttled`, with the seconds to
wait). Counts live in the store (shared by every authz instance), with a TTL.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from authbus_authz.core.ports import ThrottleStore


@dataclass(frozen=True, slots=True)
class Rule:
    scope: str
    free: int
    base: timedelta
    cap: timedelta
    window: timedelta

    def block_for(self, failures: int) -> timedelta | None:
        if failures <= self.free:
            return None
        exponent = min(failures - self.free - 1, 30)
        return min(self.cap, self.base * (1 << exponent))


RULES = (
    Rule(
        "pair",
        free=3,
        base=timedelta(seconds=1),
        cap=timedelta(minutes=15),
        window=timedelta(hours=1),
    ),
    Rule(
        "client",
        free=20,
        base=timedelta(seconds=1),
        cap=timedelta(minutes=15),
        window=timedelta(hours=1),
    ),
    Rule(
        "account",
        free=10,
        base=timedelta(seconds=1),
        cap=timedelta(seconds=60),
        window=timedelta(minutes=15),
    ),
)


@dataclass(frozen=True, slots=True)
class Block:
    scope: str
    until: datetime
    failures: int

    def retry_after_s(self, now: datetime) -> int:
        return max(1, math.ceil((self.until - now) / timedelta(seconds=1)))


def subject(email_key: str, account_id: str | None) -> str:
    """What stands for the account: its id, or a hash of an unknown email."""
    return account_id or "unknown-" + hashlib.sha256(email_key.encode()).hexdigest()[:32]


def keys(who: str, client: str | None) -> dict[str, str]:
    found = {"account": f"account:{who}"}
    if client:
        found |= {"pair": f"pair:{who}:{client}", "client": f"client:{client}"}
    return found


@dataclass
class Throttle:
    store: ThrottleStore

    async def blocked(self, who: str, client: str | None, now: datetime) -> Block | None:
        """The longest live block among this attempt's keys, if any."""
        scoped = keys(who, client)
        found = await self.store.failures(list(scoped.values()), now)
        blocks = [
            Block(scope, f.blocked_until, f.count)
            for scope, key in scoped.items()
            if (f := found.get(key)) is not None and f.blocked_until and f.blocked_until > now
        ]
        return max(blocks, key=lambda b: b.until, default=None)

    async def failed(self, who: str, client: str | None, now: datetime) -> list[Block]:
        """Count a failure under every key; returns the blocks it started."""
        started = []
        for rule in RULES:
            key = keys(who, client).get(rule.scope)
            if key is None:
                continue
            failures = await self.store.add_failure(key, now, rule.window.total_seconds())
            block_for = rule.block_for(failures.count)
            if block_for is not None:
                until = now + block_for
                await self.store.block(key, until)
                started.append(Block(rule.scope, until, failures.count))
        return started

    async def succeeded(self, who: str, client: str | None) -> None:
        if client:
            await self.store.clear(keys(who, client)["pair"])
