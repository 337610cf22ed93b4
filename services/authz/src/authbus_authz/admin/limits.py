"""`authbus-admin limits`: what the rate limiter holds of one subject, and a reset (SPEC G4).

A subject is an account (by email: `acct:<id>`) or a client address (`addr:<ip>`, R6). Its
limit keys (`<policy>:<subject>`) are spread over the partitions of `ratelimit.leases.v1` by
key, so each question goes to every partition, and each partition's owner answers for the
keys it holds (`InspectSubject`, `ResetSubject`; ADR 0010). A key nobody holds has its whole
limit. A reset is appended to the partitions: a new owner replaying them applies it too.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from ipaddress import ip_address

from authbus_authz.admin.connection import Operator, expect, failure
from authbus_shared.authz_client import AuthzClient
from authbus_shared.contracts.commands import AccountInfo, AccountRef, GetAccount
from authbus_shared.contracts.envelope import Contract, payload_of, utcnow
from authbus_shared.contracts.ratelimit import (
    InspectSubject,
    KeyState,
    ResetSubject,
    SubjectLimits,
)


async def subject_of(client: AuthzClient, who: str) -> str:
    """`acct:<id>` for an email (asked of authz), `addr:<ip>` for an address; a subject given
    as such (`acct:<id>`, `addr:<ip>`) as it is."""
    if who.startswith(("acct:", "addr:")):
        return who
    if "@" in who:
        info = expect(await client.ask(GetAccount(account=AccountRef(email=who)), who), AccountInfo)
        return f"acct:{info.account.id}"
    try:
        return f"addr:{ip_address(who)}"
    except ValueError:
        wanted = "an email, an IP address, acct:<id> or addr:<ip>"
        raise failure(f"{who!r} is not {wanted}", code=2) from None


async def ask_owners(op: Operator, order: InspectSubject | ResetSubject) -> list[KeyState]:
    """Send `order` to every partition of the leases topic; the keys their owners answer with.
    Every owner must answer: a silent one makes the whole answer incomplete (an error)."""

    async def one(partition: int) -> Contract:
        reply = await op.rpc.request(
            op.leases_topic, order, key=order.subject, partition=partition, timeout=op.timeout
        )
        return payload_of(reply)

    replies = await asyncio.gather(*(one(p) for p in await op.leases_partitions()))
    keys = [k for reply in replies for k in expect(reply, SubjectLimits).keys]
    return sorted(keys, key=lambda k: k.key)


def describe(subject: str, keys: list[KeyState], now: datetime | None = None) -> str:
    """One line per key: the window, what is left of it, and any lockout with its end."""
    now = now or utcnow()
    if not keys:
        return f"{subject}: nothing counted (every policy has its whole limit)"
    lines = [subject]
    for k in keys:
        if k.window_end > now:
            ends = int((k.window_end - now).total_seconds())
            window = (
                f"{k.spent} of {k.limit} used ({k.allocated} handed out to the api instances,"
                f" {k.limit - k.allocated} not yet), window ends in {ends}s"
            )
        else:
            window = "no open window"
        lock = ""
        if k.blocked_until is not None and k.blocked_until > now:
            lock = f", LOCKED until {k.blocked_until:%Y-%m-%d %H:%M:%S}Z"
        strikes = f", {k.strikes} lockout(s) in a row" if k.strikes else ""
        lines.append(f"  {k.policy:<16} {window}{lock}{strikes}")
    return "\n".join(lines)
