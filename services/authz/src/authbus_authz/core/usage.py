"""Credential uses reported by the api instances (`CredentialsUsed`, batched): last-used
times are written once per batch per credential, never per request (SPEC A7), and each legacy
key's use is audited (`KeyUsed`, V1). Password uses have no record to touch.

Times that cannot be written (the store is unreachable) wait in `PendingUses`: one time per
credential, the latest, so reports merge as they come and an outage of any length takes room
for each credential used during it once, not for each report. The store only ever raises a
last-used time (`$max`), so writing a merged time late, or twice, is harmless. The buffer is
bounded: once `limit` credentials wait, the times of credentials not already waiting are
dropped (and counted by the caller); times of waiting ones still merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from authbus_authz.core.ports import ApiKeyStore, TokenStore
from authbus_shared.contracts.authz import AuthMethod
from authbus_shared.contracts.envelope import Contract
from authbus_shared.contracts.events import CredentialsUsed, KeyUsed

LastUsed = dict[str, datetime]


class UsageStore(TokenStore, ApiKeyStore, Protocol):
    """The stores usage touches."""


@dataclass(frozen=True)
class Tally:
    """One report, merged per credential: what to write, and what to audit."""

    tokens: LastUsed
    keys: LastUsed
    audit: list[Contract]


def tally(report: CredentialsUsed) -> Tally:
    tokens: LastUsed = {}
    keys: dict[str, tuple[str, datetime, int]] = {}
    for use in report.uses:
        if use.method is AuthMethod.TOKEN:
            tokens[use.credential_id] = max(
                use.last_used_at, tokens.get(use.credential_id, use.last_used_at)
            )
        elif use.method is AuthMethod.KEY:
            _, last, count = keys.get(use.credential_id, (use.account_id, use.last_used_at, 0))
            keys[use.credential_id] = (
                use.account_id,
                max(last, use.last_used_at),
                count + use.count,
            )
    audit: list[Contract] = [
        KeyUsed(key_id=kid, account_id=account, last_used_at=last, uses=count)
        for kid, (account, last, count) in keys.items()
    ]
    return Tally(tokens, {kid: last for kid, (_, last, _) in keys.items()}, audit)


@dataclass
class Usage:
    store: UsageStore

    async def record(self, report: CredentialsUsed) -> list[Contract]:
        """Touch last-used times; returns the audit events (one per key used)."""
        tallied = tally(report)
        await self.write(tallied.tokens, tallied.keys)
        return tallied.audit

    async def write(self, tokens: Mapping[str, datetime], keys: Mapping[str, datetime]) -> None:
        await self.store.touch_tokens(tokens)
        await self.store.touch_api_keys(keys)


@dataclass
class PendingUses:
    """Last-used times waiting for the store: the latest per credential, at most `limit`."""

    limit: int
    tokens: LastUsed = field(default_factory=dict)
    keys: LastUsed = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens) + len(self.keys)

    def add(self, tokens: Mapping[str, datetime], keys: Mapping[str, datetime]) -> int:
        """Merge these times in; returns how many were dropped for want of room."""
        dropped = 0
        for waiting, times in ((self.tokens, tokens), (self.keys, keys)):
            for rid, at in times.items():
                if rid in waiting:
                    waiting[rid] = max(waiting[rid], at)
                elif len(self) < self.limit:
                    waiting[rid] = at
                else:
                    dropped += 1
        return dropped

    def take(self) -> tuple[LastUsed, LastUsed]:
        """Everything waiting, which no longer waits (`add` it back if the write fails)."""
        taken = (self.tokens, self.keys)
        self.tokens, self.keys = {}, {}
        return taken
