"""A paused api process (a long GC, a VM stall, SIGSTOP) wakes up with its connection timers
expired and the requests that arrived meanwhile still unread. libuv runs timers before it reads
the sockets, so without a last look (`http/server.py`, ADR 0013) those connections were closed
unanswered: 5 of 5 here. The server runs in a process of its own, which the test stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from authbus_dev.ports import free_port

PAUSE_S = 1.5  # longer than the server's head timeout and keep-alive (1 s)
PING = b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"
LAST = b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.paused_edge_server", str(port)],
        cwd=os.getcwd(),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "no server"
                time.sleep(0.05)
        yield port, process
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(10)


def answer_after_a_pause(
    server: tuple[int, subprocess.Popen[bytes]], *, first: bytes | None
) -> bytes:
    port, process = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if first is not None:  # a kept-alive connection
            sock.sendall(first)
            received = b""
            while not received.endswith(b"pong"):
                received += sock.recv(4096)
        time.sleep(0.2)  # accepted, its timer running
        os.kill(process.pid, signal.SIGSTOP)
        try:
            time.sleep(0.2)
            sock.sendall(LAST)  # in time: the timer expires during the pause
            time.sleep(PAUSE_S)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


@pytest.mark.parametrize("first", [PING, None], ids=["keep-alive", "new connection"])
def test_a_request_sent_during_a_pause_is_answered_after_it(
    server: tuple[int, subprocess.Popen[bytes]], first: bytes | None
) -> None:
    assert answer_after_a_pause(server, first=first).startswith(b"HTTP/1.1 200 OK")
