"""The edge's limits on what a client may send and how slowly (SPEC E5; ADR 0013).

Nested into the api's settings as `edge` (env `AUTHBUS_API_EDGE__<FIELD>`). The head's limits
are enforced by the server protocol (`http/server.py`), the body's by an ASGI middleware
(`http/body.py`). What they bound, with the defaults:

- a request head: 16 KiB counted (URL + header names and values), 32 KiB raw, 5 s to arrive;
- a connection that sends nothing: closed after 5 s;
- a body of N bytes: at most `body_grace_s + N / body_min_rate_bytes_s` seconds spent waiting
  for it (5 s + N / 16 KiB/s), never more than 5 s without a byte: a 1 MiB `/v0` body within
  69 s, a 10 MiB gateway body within 645 s, a trickle of one byte per 100 ms cut after ~5 s.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

KIB = 1024
MIB = 1024 * KIB


class EdgeLimits(BaseModel):
    """How much and how slowly a client may send before the edge refuses it (408/413/431)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_header_bytes: int = Field(
        default=16 * KIB,
        ge=1 * KIB,
        le=1 * MIB,
        description=(
            "Largest request head, counted as the URL plus every header name and value; over "
            "it: 431. The raw head (separators, whitespace) may take twice this."
        ),
    )
    header_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description=(
            "The whole head of a request must arrive within this (timed from the connection's "
            "opening or the head's first byte): else 408, or a close if nothing arrived."
        ),
    )
    body_idle_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Longest wait for the next piece of a request body: else 408.",
    )
    body_min_rate_bytes_s: int = Field(
        default=16 * KIB,
        ge=1,
        le=1024 * MIB,
        description=(
            "Slowest pace a body may keep after the grace: the time spent waiting for a body "
            "of N bytes may not exceed body_grace_s + N / this (bytes per second); else 408."
        ),
    )
    body_grace_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="Waiting time every body may spend before its pace is held to the minimum.",
    )
    v0_max_body_bytes: int = Field(
        default=1 * MIB,
        ge=0,
        le=1024 * MIB,
        description="Largest body of a /v0 (management API) request: over it, 413.",
    )
    gateway_max_body_bytes: int = Field(
        default=10 * MIB,
        ge=0,
        le=64 * 1024 * MIB,
        description="Largest body proxied to a declared route that sets no limit: over it, 413.",
    )

    @property
    def raw_head_bytes(self) -> int:
        """The raw bytes a head may take (request line, separators and whitespace included)
        before it is refused without waiting for a complete header to count."""
        return 2 * self.max_header_bytes

    def body_wait_s(self, size: int) -> float:
        """The longest a body of `size` bytes may keep the edge waiting for it."""
        return self.body_grace_s + size / self.body_min_rate_bytes_s
