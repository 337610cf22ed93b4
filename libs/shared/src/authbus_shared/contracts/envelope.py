"""The envelope every authbus Kafka message travels in (SPEC S4).

An envelope carries an id, a type, the contract's major version, a correlation id, the time it
was made, the producing instance and, for requests, where to send the reply and until when the
asker waits. The payload is a contract model from this package, looked up by `(type, version)`
in the registry below.

Compatibility rules (docs/contracts.md):
- a field may be added to a payload in a minor change; readers ignore fields they do not know;
- renaming, removing or changing the meaning of a field is a new major version, which is a new
  topic (`auth.verify.v2`) and a new registry entry;
- a message whose type is unknown to a reader is skipped and counted, never a crash.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Frozen(BaseModel):
    """Base of every contract model: frozen, unknown fields ignored (forward compatible)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Contract(Frozen):
    """A payload that travels on its own in an envelope, found by `(TYPE, VERSION)`."""

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1


class ReplyTo(Frozen):
    """Where a reply goes: the shared reply topic and the partition the asker reads."""

    topic: str
    partition: int = Field(ge=0)
    instance: str


class Envelope(Frozen):
    id: str
    type: str
    version: int = Field(ge=1)
    time: datetime
    producer: str
    correlation_id: str | None = None
    reply_to: ReplyTo | None = None
    deadline: datetime | None = None
    payload: dict[str, Any]

    def expired(self, now: datetime) -> bool:
        return self.deadline is not None and now >= self.deadline


class MessageDecodeError(ValueError):
    """The bytes are not an envelope, or its payload does not match its contract."""


C = TypeVar("C", bound=Contract)

_REGISTRY: dict[tuple[str, int], type[Contract]] = {}


def register(model: type[C]) -> type[C]:
    """Class decorator: make a contract decodable by its `(TYPE, VERSION)`."""
    key = (model.TYPE, model.VERSION)
    if key in _REGISTRY and _REGISTRY[key] is not model:
        raise ValueError(f"contract {key} registered twice")
    _REGISTRY[key] = model
    return model


def new_id() -> str:
    return uuid.uuid4().hex


def wrap(
    payload: Contract,
    *,
    producer: str,
    now: datetime,
    correlation_id: str | None = None,
    reply_to: ReplyTo | None = None,
    timeout: timedelta | None = None,
) -> Envelope:
    """Wrap a payload in a new envelope."""
    return Envelope(
        id=new_id(),
        type=payload.TYPE,
        version=payload.VERSION,
        time=now,
        producer=producer,
        correlation_id=correlation_id,
        reply_to=reply_to,
        deadline=now + timeout if timeout is not None else None,
        payload=payload.model_dump(mode="json"),
    )


def encode(envelope: Envelope) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json", exclude_none=True))


def decode(raw: bytes | None) -> Envelope:
    if raw is None:
        raise MessageDecodeError("empty message (tombstone)")
    try:
        return Envelope.model_validate_json(raw)
    except ValidationError as exc:
        raise MessageDecodeError(f"not an envelope: {exc.error_count()} error(s)") from exc


def payload_of(envelope: Envelope) -> Contract:
    """The typed payload; `MessageDecodeError` when the type is unknown or the payload invalid."""
    model = _REGISTRY.get((envelope.type, envelope.version))
    if model is None:
        raise MessageDecodeError(f"unknown contract {envelope.type} v{envelope.version}")
    try:
        return model.model_validate(envelope.payload)
    except ValidationError as exc:
        raise MessageDecodeError(
            f"invalid {envelope.type} v{envelope.version}: {exc.error_count()} error(s)"
        ) from exc


def utcnow() -> datetime:
    return datetime.now(UTC)
