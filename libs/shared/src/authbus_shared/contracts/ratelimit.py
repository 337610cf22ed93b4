"""Contracts between the api instances and ratelimit (internal)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from authbus_shared.contracts.envelope import Contract, register


@register
class RecordHits(Contract):
    """Count `hits` requests for a limit key. Keyed by `key`, so its owner counts it."""

    TYPE = "ratelimit.RecordHits"

    key: str = Field(min_length=1, max_length=200)
    hits: int = Field(ge=1)
    first_at: datetime


@register
class RateDecided(Contract):
    """The owner's view of a key after counting: what is left, and whether it is locked out."""

    TYPE = "ratelimit.RateDecided"

    key: str
    policy: str
    limit: int
    window_s: int
    count: int
    remaining: int
    reset_at: datetime
    blocked_until: datetime | None = None
