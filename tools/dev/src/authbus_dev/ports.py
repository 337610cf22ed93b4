"""Free loopback ports for things the tooling starts (tests, benchmarks)."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_run(length: int) -> int:
    """The first of `length` consecutive free loopback ports, chosen *below* the kernel's
    ephemeral range: a port from the ephemeral range (what binding port 0 gives) can be taken
    as the source port of an outgoing connection between choosing it and the server binding
    it, and the tests open many Kafka connections at once."""
    low, _ = _ephemeral_range()
    for _ in range(1000):
        first = random.randrange(10_000, low - length)  # noqa: S311 - not a secret
        if all(_bindable(p) for p in range(first, first + length)):
            return first
    raise RuntimeError("no run of free ports found")


def free_port() -> int:
    return free_port_run(1)


__all__ = ["free_port", "free_port_run"]
