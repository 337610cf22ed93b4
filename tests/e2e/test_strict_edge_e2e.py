"""The strict edge on the real api processes (issue #8 item 4; SPEC E5; ADR 0013), with the
default limits: each attack gets its catalog answer, or a closed connection, within a bound.

Bounds asserted (defaults: 16 KiB head, 5 s to send it, 1 MiB /v0 body, a body's pace held
after 5 s of grace): a 1 MiB header → 431 in < 2 s; a 50 MB declared body → 413 before any of
it is sent, < 2 s; a head trickled one byte per 100 ms → 408 or closed in < 5 + 2 s; a body
trickled likewise → 408 or closed in < 5 + 2 s; bytes that are not HTTP → a catalog 400."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.e2e.conftest import System

SLACK_S = 2.0
HEADER_TIMEOUT_S = 5.0


async def exchange(
    url: str, head: bytes, trickle: bytes = b"", every_s: float = 0.1, within_s: float = 15.0
) -> tuple[bytes, float]:
    """Send `head`, then `trickle` one byte at a time; everything the server says before it
    closes (or `within_s`), and when it said it."""
    host, _, port = url.removeprefix("http://").partition(":")
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()

        async def drip() -> None:
            for byte in trickle:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(every_s)

        dripping = asyncio.create_task(drip())
        try:
            async with asyncio.timeout(within_s):
                answer = await reader.read(65536)
        finally:
            dripping.cancel()
        return answer, time.monotonic() - started
    except ConnectionError:
        return b"", time.monotonic() - started
    finally:
        writer.close()


def status_of(answer: bytes) -> int | None:
    """The status of an HTTP answer; None for a connection closed without one."""
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def api(system: System, n: int = 0) -> str:
    return system.apis()[n % len(system.apis())].url


async def test_an_oversized_head_is_a_431_at_once(system: System) -> None:
    head = (
        b"GET /v0/me HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
        + b"X-Big: "
        + b"a" * (1024 * 1024)
        + b"\r\n\r\n"
    )
    answer, took = await exchange(api(system, 0), head)

    assert status_of(answer) == 431
    assert b'"code":"431"' in answer and b"connection: close" in answer.lower()
    assert took < SLACK_S


async def test_a_body_over_the_v0_limit_is_refused_before_it_is_sent(system: System) -> None:
    head = (
        b"POST /v0/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    answer, took = await exchange(api(system, 1), head)

    assert status_of(answer) == 413
    assert took < SLACK_S


async def test_a_head_trickled_a_byte_at_a_time_is_cut(system: System) -> None:
    start = b"GET /v0/me HTTP/1.1\r\nHost: x\r\n"
    answer, took = await exchange(api(system, 2), start, trickle=b"X-Slow: " + b"a" * 400)

    assert status_of(answer) in (408, None)
    assert HEADER_TIMEOUT_S - 0.5 < took < HEADER_TIMEOUT_S + SLACK_S


async def test_a_body_trickled_a_byte_at_a_time_is_cut(system: System) -> None:
    head = (
        b"POST /v0/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    answer, took = await exchange(api(system, 3), head, trickle=b"{" + b" " * 998 + b"}")

    assert status_of(answer) in (408, None)
    assert took < 5.0 + SLACK_S  # grace 5 s; 1 KiB at the minimum pace needs < 0.1 s more


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello
        b"GET /v0/me HTTP/9.9\r\n\r\n",
        b"G\x00T / HTTP/1.1\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    ],
)
async def test_bytes_that_are_not_http_get_a_catalog_400(system: System, garbage: bytes) -> None:
    answer, took = await exchange(api(system, 0), garbage)

    assert status_of(answer) == 400
    assert b"<!doctype html>" in answer  # the catalog's page, not uvicorn's plain text
    assert took < SLACK_S
