"""The message envelope (SPEC S4): round trips, forward compatibility, refusals as errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

import orjson
import pytest

from authbus_shared.contracts.authz import CredentialVerified, Outcome
from authbus_shared.contracts.commands import RevokeToken
from authbus_shared.contracts.envelope import (
    Contract,
    Envelope,
    MessageDecodeError,
    ReplyTo,
    decode,
    encode,
    payload_of,
    register,
    wrap,
)
from authbus_shared.contracts.ratelimit import AcquireLease, LeaseGranted, LeasePolicy

from .support import T0


def raw_envelope(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "0f" * 16,
        "type": RevokeToken.TYPE,
        "version": 1,
        "time": T0.isoformat(),
        "producer": "api-1",
        "payload": {"token_id": "tok-1"},
    }
    return base | changes


def test_wrap_encode_decode_round_trips_a_registered_contract() -> None:
    reply_to = ReplyTo(topic="auth.replies.v1", partition=3, instance="api-1")
    envelope = wrap(
        RevokeToken(token_id="tok-1"),
        producer="admin-1",
        now=T0,
        correlation_id="corr-1",
        reply_to=reply_to,
        timeout=timedelta(seconds=5),
    )

    decoded = decode(encode(envelope))

    assert decoded == envelope
    assert (decoded.type, decoded.version) == ("authz.RevokeToken", 1)
    assert decoded.deadline == T0 + timedelta(seconds=5)
    assert decoded.reply_to == reply_to
    assert payload_of(decoded) == RevokeToken(token_id="tok-1")


def test_round_trip_keeps_enums_and_datetimes_typed() -> None:
    granted = LeaseGranted(
        key="global:acct:1",
        granted=0,
        window_start=T0,
        window_end=T0 + timedelta(seconds=60),
        remaining=0,
        blocked_until=T0 + timedelta(seconds=60),
    )
    ask = AcquireLease(
        key="global:acct:1",
        subject="acct:1",
        policy=LeasePolicy(name="global", limit=60, window_s=60, lockout_s=60),
        instance="api-1",
        want=60,
    )
    verdict = CredentialVerified(outcome=Outcome.REVOKED)

    for payload in (granted, ask, verdict):
        assert payload_of(decode(encode(wrap(payload, producer="p", now=T0)))) == payload


def test_every_envelope_gets_its_own_id() -> None:
    one = wrap(RevokeToken(token_id="t"), producer="p", now=T0)
    two = wrap(RevokeToken(token_id="t"), producer="p", now=T0)

    assert one.id != two.id


def test_encode_leaves_out_absent_fields() -> None:
    raw = orjson.loads(encode(wrap(RevokeToken(token_id="t"), producer="p", now=T0)))

    assert not {"correlation_id", "reply_to", "deadline"} & set(raw)


def test_unknown_fields_in_envelope_and_payload_are_ignored() -> None:
    """Forward compatibility: a newer producer's extra fields do not break an older reader."""
    raw = raw_envelope(
        priority="high",
        trace={"span": "abc"},
        payload={"token_id": "tok-1", "reason": "leaked", "v2_field": [1, 2]},
    )

    envelope = decode(orjson.dumps(raw))

    assert payload_of(envelope) == RevokeToken(token_id="tok-1")


@pytest.mark.parametrize(
    "changes",
    [{"type": "authz.SomethingNew"}, {"version": 2}],
    ids=["unknown-type", "unknown-version"],
)
def test_unknown_contract_is_a_decode_error_from_payload_of(changes: dict[str, Any]) -> None:
    envelope = decode(orjson.dumps(raw_envelope(**changes)))

    with pytest.raises(MessageDecodeError, match="unknown contract"):
        payload_of(envelope)


@pytest.mark.parametrize(
    "payload", [{}, {"token_id": 42}, {"token_id": None}], ids=["empty", "int", "null"]
)
def test_payload_not_matching_its_contract_is_a_decode_error(payload: dict[str, Any]) -> None:
    envelope = decode(orjson.dumps(raw_envelope(payload=payload)))

    with pytest.raises(MessageDecodeError, match=r"invalid authz\.RevokeToken"):
        payload_of(envelope)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"null",
        b"[]",
        b'"a string"',
        b"{}",
        orjson.dumps(raw_envelope(version=0)),
        orjson.dumps(raw_envelope(time="yesterday")),
        orjson.dumps(raw_envelope(payload="not an object")),
        orjson.dumps({k: v for k, v in raw_envelope().items() if k != "type"}),
    ],
    ids=[
        "tombstone",
        "empty",
        "not-json",
        "not-utf8",
        "null",
        "array",
        "string",
        "empty-object",
        "version-0",
        "bad-time",
        "payload-not-object",
        "no-type",
    ],
)
def test_bytes_that_are_not_an_envelope_are_a_decode_error(raw: bytes | None) -> None:
    with pytest.raises(MessageDecodeError):
        decode(raw)


def test_envelope_without_deadline_never_expires() -> None:
    envelope = wrap(RevokeToken(token_id="t"), producer="p", now=T0)

    assert envelope.expired(T0 + timedelta(days=365)) is False


@pytest.mark.parametrize(
    ("after", "expired"),
    [(timedelta(seconds=4.999), False), (timedelta(seconds=5), True), (timedelta(hours=1), True)],
    ids=str,
)
def test_envelope_expires_at_its_deadline(after: timedelta, expired: bool) -> None:
    envelope = wrap(RevokeToken(token_id="t"), producer="p", now=T0, timeout=timedelta(seconds=5))

    assert envelope.expired(T0 + after) is expired


def test_a_second_contract_with_the_same_type_and_version_is_refused() -> None:
    class Impostor(Contract):
        TYPE: ClassVar[str] = RevokeToken.TYPE

        token_id: str

    with pytest.raises(ValueError, match="registered twice"):
        register(Impostor)
    assert register(RevokeToken) is RevokeToken  # registering the same model again is fine
    envelope = decode(orjson.dumps(raw_envelope()))
    assert type(payload_of(envelope)) is RevokeToken


def test_envelope_is_frozen() -> None:
    envelope = Envelope.model_validate(raw_envelope())

    with pytest.raises(ValueError, match="frozen"):
        envelope.producer = "someone else"  # type: ignore[misc]
