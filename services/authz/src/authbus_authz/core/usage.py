"""Credential uses reported by the api instances (`CredentialsUsed`, batched): last-used
times are written once per batch per credential, never per request (SPEC A7), and each legacy
key's use is audited (`KeyUsed`, V1). Password uses have no record to touch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from authbus_authz.core.ports import ApiKeyStore, TokenStore
from authbus_shared.contracts.authz import AuthMethod
from authbus_shared.contracts.envelope import Contract
from authbus_shared.contracts.events import CredentialsUsed, KeyUsed


class UsageStore(TokenStore, ApiKeyStore, Protocol):
    """The stores usage touches."""


@dataclass
class Usage:
    store: UsageStore

    async def record(self, report: CredentialsUsed) -> list[Contract]:
        """Touch last-used times; returns the audit events (one per key used)."""
        tokens: dict[str, datetime] = {}
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
        await self.store.touch_tokens(tokens)
        await self.store.touch_api_keys({kid: last for kid, (_, last, _) in keys.items()})
        return [
            KeyUsed(key_id=kid, account_id=account, last_used_at=last, uses=count)
            for kid, (account, last, count) in keys.items()
        ]
