"""What a management command returns: the reply (a value: done, or rejected and why) and the
events to publish. Commands do no I/O but through the stores; the handler publishes."""

from __future__ import annotations

from dataclasses import dataclass

from authbus_shared.contracts.commands import CommandRejected, Rejection
from authbus_shared.contracts.envelope import Contract
from authbus_shared.contracts.events import KeyPublished


@dataclass(frozen=True)
class Done:
    reply: Contract
    audit: tuple[Contract, ...] = ()  # for auth.audit.v1
    changes: tuple[Contract, ...] = ()  # for auth.changes.v1 (every api instance)
    published: tuple[KeyPublished, ...] = ()  # for authz.keys.v1


def rejected(reason: Rejection, detail: str = "", retry_after_s: int | None = None) -> Done:
    return Done(CommandRejected(reason=reason, detail=detail, retry_after_s=retry_after_s))
