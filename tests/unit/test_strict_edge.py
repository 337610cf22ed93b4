"""The strict HTTP edge (SPEC E5, ADR 0013): heads too large (431), too slow (408 or closed),
garbage (400); bodies too large (413) or too slow (408); every answer from the catalog in the
negotiated shape, each within a time bound. A real uvicorn on loopback, serving a small FastAPI
app through `limit_body` with `edge_protocol`; raw sockets for the attacks."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from authbus_api.core.errors import Error
from authbus_api.http.body import (
    UNKNOWN_LENGTH,
    BodyRefused,
    declared_length,
    install_body_handlers,
    limit_body,
    refusal_of,
)
from authbus_api.http.errors import ErrorStyle
from authbus_api.http.limits import KIB, MIB, EdgeLimits
from authbus_api.http.server import edge_protocol
from authbus_dev.ports import free_port
from authbus_shared.ops import Message, Scope

LIMITS = EdgeLimits(
    header_timeout_s=1.0,
    body_idle_timeout_s=0.5,
    body_grace_s=1.0,
    body_min_rate_bytes_s=1000,
    v0_max_body_bytes=16 * KIB,
    gateway_max_body_bytes=1 * MIB,
)
STYLE = ErrorStyle()
SLACK = 1.0


class Item(BaseModel):
    name: str


def _max_body(scope: Scope) -> int | None:
    path: str = scope["path"]
    return LIMITS.v0_max_body_bytes if path.startswith("/v0/") else LIMITS.gateway_max_body_bytes


def _app() -> FastAPI:
    api = FastAPI()

    @api.post("/v0/json")
    async def json_body(item: Item) -> dict[str, str]:
        return {"name": item.name}

    @api.post("/upload")
    async def upload(request: Request) -> StreamingResponse:
        size = sum([len(chunk) async for chunk in request.stream()])

        async def pieces() -> AsyncIterator[bytes]:  # longer than the body's idle timeout
            for _ in range(3):
                await asyncio.sleep(0.3)
                yield b"."
            yield str(size).encode()

        return StreamingResponse(pieces())

    @api.post("/relay")  # the gateway's way: the body streamed into httpx
    async def relay(request: Request) -> Response:
        async with httpx.AsyncClient() as client:
            host, own_port = request.scope["server"]
            url = f"http://{host}:{own_port}/upload"
            answer = await client.post(url, content=request.stream())
        return Response(answer.content, answer.status_code)

    @api.get("/ping")
    async def ping() -> PlainTextResponse:
        return PlainTextResponse("pong")

    @api.get("/slow")
    async def slow() -> PlainTextResponse:
        await asyncio.sleep(0.3)
        return PlainTextResponse("slow")

    @api.post("/wrapped")
    async def wrapped() -> None:
        raise HTTPException(400) from BodyRefused(Error.BODY_TOO_LARGE)

    install_body_handlers(api, STYLE)
    return api


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    chosen = free_port()
    config = uvicorn.Config(
        limit_body(_app(), LIMITS, STYLE, _max_body),
        host="127.0.0.1",
        port=chosen,
        http=edge_protocol(LIMITS, STYLE),
        ws="none",
        log_config=None,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="strict edge", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    try:
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        yield chosen
    finally:
        server.should_exit = True
        thread.join(10)


# raw HTTP


@contextlib.contextmanager
def connected(port: int) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        yield sock


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes (the test fails if it takes longer)."""
    deadline = time.monotonic() + within
    data = b""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"not closed within {within}s; got {data[:200]!r}"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def send_slowly(sock: socket.socket, data: bytes, every: float = 0.1) -> None:
    """One byte per `every` seconds, until the server answers (or stops reading)."""
    for i in range(len(data)):
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            return
        if select.select([sock], [], [], every)[0]:
            return


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    """The first response in `raw` (with a Content-Length): status, headers, body, the rest."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    return int(lines[0].split()[1]), headers, rest[:length], rest[length:]


def assert_catalog(raw: bytes, status: int, media: str = "text/html") -> None:
    code, headers, body, _ = parse(raw)
    assert code == status, raw[:300]
    assert headers["content-type"].startswith(media)
    assert headers["connection"] == "close"
    if media == "application/json":
        assert orjson.loads(body)["code"] == str(status)
    else:
        assert f"<h1>{status} ".encode() in body


def post(path: str, length: int | None = None, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n{extra}\r\n"
    ).encode()


# heads


def test_431_for_a_1_mib_header_within_one_second(port: int) -> None:
    with connected(port) as sock:
        started = time.monotonic()
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * MIB)
        answer = read_until_closed(sock, within=1.0 - (time.monotonic() - started))
    assert_catalog(answer, 431)


def test_a_header_that_never_ends_is_cut_near_the_raw_cap(port: int) -> None:
    sent = 0
    with connected(port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        while not select.select([sock], [], [], 0.005)[0]:
            sock.sendall(b"e" * KIB)
            sent += KIB
            assert sent < 10 * LIMITS.raw_head_bytes, "still reading a head far beyond its cap"
        assert_catalog(read_until_closed(sock, within=1.0), 431)


def test_431_in_json_when_the_client_asked_for_it_first(port: int) -> None:
    with connected(port) as sock:
        sock.sendall(
            b"GET /ping HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n"
            b"X-Big: " + b"a" * (20 * KIB) + b"\r\n\r\n"
        )
        answer = read_until_closed(sock, within=1.0)
    assert_catalog(answer, 431, "application/json")


def test_the_head_size_is_the_exact_sum_of_url_names_and_values(port: int) -> None:
    counted = sum(map(len, ("/ping", "Host", "t", "Connection", "close", "X-Fill")))
    for extra, status in ((0, 200), (1, 431)):
        fill = b"f" * (LIMITS.max_header_bytes - counted + extra)
        with connected(port) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
            sock.sendall(b"X-Fill: %s\r\n\r\n" % fill)
            assert parse(read_until_closed(sock, within=1.0))[0] == status


def test_408_for_a_head_sent_one_byte_every_100_ms(port: int) -> None:
    with connected(port) as sock:
        started = time.monotonic()
        send_slowly(sock, b"GET /ping HTTP/1.1\r\nHost: t\r\nX-Padding: " + b"p" * 40)
        answer = read_until_closed(sock, within=LIMITS.header_timeout_s + SLACK)
        assert time.monotonic() - started < LIMITS.header_timeout_s + SLACK
    assert_catalog(answer, 408)


def test_an_idle_connection_is_closed_without_an_answer(port: int) -> None:
    with connected(port) as sock:
        assert read_until_closed(sock, within=LIMITS.header_timeout_s + SLACK) == b""


def test_crlf_between_requests_does_not_keep_a_connection(port: int) -> None:
    with connected(port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = b""
        while not answer.endswith(b"pong"):
            answer += sock.recv(4096)
        started = time.monotonic()
        send_slowly(sock, b"\r\n" * 40, every=0.2)  # each byte stops uvicorn's keep-alive timer
        assert read_until_closed(sock, within=LIMITS.header_timeout_s + SLACK) == b""
        assert time.monotonic() - started < LIMITS.header_timeout_s + SLACK
    assert parse(answer)[0] == 200


@pytest.mark.parametrize(
    ("head", "media"),
    [
        (b"GARBAGE\x01\x02 nonsense", "text/html"),
        # llhttp refuses it at the URL, before any header: HTML
        (b"GET /caf\xc3\xa9 HTTP/1.1\r\nAccept: application/json", "text/html"),
        # uvicorn fails to make a scope of an absolute URL without a path
        (b"GET http://h HTTP/1.1\r\nAccept: application/json", "application/json"),
    ],
)
def test_400_from_the_catalog_for_garbage(port: int, head: bytes, media: str) -> None:
    with connected(port) as sock:
        sock.sendall(head + b"\r\nHost: t\r\n\r\n")
        answer = read_until_closed(sock, within=1.0)
    assert_catalog(answer, 400, media)
    assert b"Bad request/invalid input." in answer


def test_pipelined_keep_alive_requests_still_work(port: int) -> None:
    with connected(port) as sock:
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n" + b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        time.sleep(0.5)
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        rest = read_until_closed(sock, within=2.0)
    bodies = []
    while rest:
        status, _, body, rest = parse(rest)
        assert status == 200
        bodies.append(body)
    assert bodies == [b"slow", b"pong", b"pong"]


def test_a_refused_pipelined_request_waits_for_the_earlier_answer(port: int) -> None:
    with connected(port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGARBAGE\x01\r\n\r\n")
        answer = read_until_closed(sock, within=2.0)
    status, _, body, rest = parse(answer)
    assert (status, body) == (200, b"slow")
    assert_catalog(rest, 400)


# bodies


def test_413_at_once_for_a_declared_length_over_the_limit(port: int) -> None:
    with connected(port) as sock:
        started = time.monotonic()
        sock.sendall(post("/v0/json", 50_000_000, "Expect: 100-continue\r\n"))
        answer = read_until_closed(sock, within=0.5)
        assert time.monotonic() - started < 0.5
    assert_catalog(answer, 413)
    assert b"100 Continue" not in answer


def test_413_for_a_body_without_length_over_the_limit(port: int) -> None:
    chunk = b"a" * (4 * KIB)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)) + b"0\r\n\r\n"
    with connected(port) as sock:
        sock.sendall(post("/v0/json", extra="Accept: application/json\r\n") + body)
        answer = read_until_closed(sock, within=1.0)
    assert_catalog(answer, 413, "application/json")


@pytest.mark.parametrize("path", ["/v0/json", "/relay"])
def test_408_for_a_body_sent_one_byte_every_100_ms(port: int, path: str) -> None:
    body = b'{"name": "' + b"n" * 100 + b'"}'
    bound = LIMITS.body_wait_s(len(body)) + SLACK
    with connected(port) as sock:
        sock.sendall(post(path, len(body)))
        started = time.monotonic()
        send_slowly(sock, body)
        answer = read_until_closed(sock, within=bound)
        assert time.monotonic() - started < bound
    assert_catalog(answer, 408)


def test_408_for_a_body_that_stops(port: int) -> None:
    with connected(port) as sock:
        sock.sendall(post("/v0/json", 100) + b'{"name": ')
        started = time.monotonic()
        answer = read_until_closed(sock, within=LIMITS.body_idle_timeout_s + SLACK)
        assert time.monotonic() - started < LIMITS.body_idle_timeout_s + SLACK
    assert_catalog(answer, 408)


def test_400_for_a_malformed_chunk_while_the_app_reads_the_body(port: int) -> None:
    with connected(port) as sock:
        sock.sendall(post("/upload") + b"4\r\nabcd\r\n")
        time.sleep(0.1)  # the app is reading
        sock.sendall(b"zz\r\n")
        assert_catalog(read_until_closed(sock, within=1.0), 400)


def test_400_for_a_malformed_or_repeated_content_length(port: int) -> None:
    for framing in (b"Content-Length: 1x", b"Content-Length: 2\r\nContent-Length: 2"):
        with connected(port) as sock:
            sock.sendall(b"POST /v0/json HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n\r\n{}")
            assert_catalog(read_until_closed(sock, within=1.0), 400)


def test_the_framing_a_head_announces() -> None:
    assert declared_length([(b"host", b"t")]) is None
    assert declared_length([(b"content-length", b"0")]) is None
    assert declared_length([(b"content-length", b"12")]) == 12
    assert declared_length([(b"transfer-encoding", b"chunked")]) == UNKNOWN_LENGTH
    for bad in ([b"-1"], [b" 1"], [b"1e3"], [b""], [b"9" * 19], [b"1", b"1"]):
        assert declared_length([(b"content-length", v) for v in bad]) is Error.BAD_REQUEST
    both = [(b"content-length", b"1"), (b"transfer-encoding", b"chunked")]
    assert declared_length(both) is Error.BAD_REQUEST


def test_a_refusal_is_recognised_bare_as_a_cause_or_alone_in_a_group() -> None:
    refused = BodyRefused(Error.BODY_TOO_LARGE)
    wrapped = HTTPException(400)
    wrapped.__cause__ = refused
    grouped = ExceptionGroup("g", [ExceptionGroup("h", [refused])])
    for exc in (refused, wrapped, grouped):
        assert refusal_of(exc) is refused
    assert refusal_of(ExceptionGroup("g", [refused, ValueError()])) is None
    assert refusal_of(ValueError()) is None


async def test_a_json_post_and_a_200_kib_upload_still_work(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        answer = await client.post("/v0/json", json={"name": "ann"})
        assert (answer.status_code, answer.json()) == (200, {"name": "ann"})
        upload = await client.post("/upload", content=b"u" * (200 * KIB))
        assert (upload.status_code, upload.content) == (200, b"..." + str(200 * KIB).encode())
        relayed = await client.post("/relay", content=b"r" * (200 * KIB))
        assert (relayed.status_code, relayed.content) == (200, b"..." + str(200 * KIB).encode())


async def test_a_refusal_wrapped_in_an_http_exception_keeps_its_catalog_entry(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        answer = await client.post("/wrapped", headers={"Accept": "application/json"})
    assert answer.status_code == 413
    assert answer.headers["connection"] == "close"
    assert answer.json()["code"] == "413"


async def test_a_refusal_raised_by_a_streamed_body_escapes_httpx_unwrapped(port: int) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.sleep(0.05)
        raise BodyRefused(Error.REQUEST_TIMEOUT)

    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(BodyRefused) as refused:
            await client.post(f"http://127.0.0.1:{port}/upload", content=body())
    assert refused.value.error is Error.REQUEST_TIMEOUT


async def test_the_middleware_answers_a_refusal_that_escapes_the_app() -> None:
    async def reader(scope: Scope, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass

    async def receive() -> Message:
        return {"type": "http.request", "body": b"x" * 600, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    app = limit_body(reader, LIMITS, STYLE, lambda scope: 1000)
    headers = [(b"transfer-encoding", b"chunked"), (b"accept", b"application/problem+json")]
    await app({"type": "http", "headers": headers}, receive, send)
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert orjson.loads(sent[1]["body"])["status"] == 413
