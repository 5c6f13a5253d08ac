"""A body the endpoint does not read does not cost the client its answer or its connection.

Over a real hypercorn socket: without draining, a chunked body refused early
ends in a connection reset before the client reads its 4xx, or leaves the
connection hanging so that the next request on it never reaches the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from backchannel.endpoints.gateway import RequestGateway
from backchannel.observability.metrics import Metrics
from backchannel.settings import Settings
from tests.support.served import ServedApp, serve_over_hypercorn
from tests.support.waiting import eventually

CHUNK = b"a\r\ngrant_type\r\n"


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[ServedApp]:
    async with serve_over_hypercorn(settings) as app:
        yield app


async def chunked_post(
    served: ServedApp, content_type: str, chunks: int, pause: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """POST /token with a chunked body, written to its end before the answer is read."""
    port = int(served.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        + f"Content-Type: {content_type}\r\n\r\n".encode()
    )
    for _ in range(chunks):
        writer.write(CHUNK)
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return reader, writer, await asyncio.wait_for(read_response(reader), 5)


def record_body_chunks(served: ServedApp) -> list[bytes]:
    """The request body chunks the app takes from the server from now on, in order."""
    taken: list[bytes] = []
    inner = served.app.middleware_stack  # built by the first request (the startup probe)
    assert inner is not None

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                taken.append(message.get("body", b""))
            return message

        await inner(scope, recording_receive, send)

    served.app.middleware_stack = recording
    return taken


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def next_request_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /jwks HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    return await asyncio.wait_for(read_response(reader), 5)


@pytest.mark.parametrize(
    ("content_type", "chunks", "pause", "status"),
    [
        ("text/plain", 3, 0.05, b"400"),  # refused at once, the client still writing
        ("text/plain", 30, 0.0, b"400"),  # more chunks than hypercorn queues for the app
        ("application/x-www-form-urlencoded", 8000, 0.0, b"413"),  # over the size limit
    ],
)
async def test_a_chunked_body_refused_early_gets_its_answer_and_the_connection_serves_on(
    served: ServedApp, content_type: str, chunks: int, pause: float, status: bytes
) -> None:
    reader, writer, answer = await chunked_post(served, content_type, chunks, pause)
    try:
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert b"connection: close" not in answer.lower()
        assert (await next_request_on(reader, writer)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_a_body_not_ended_within_the_bounds_gets_its_answer_with_connection_close() -> None:
    received: list[int] = []

    async def endless_body() -> dict[str, Any]:
        received.append(1)
        return {"type": "http.request", "body": b"x" * 100, "more_body": True}

    async def refusing_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 415, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": [(b"transfer-encoding", b"chunked")]}
    gateway = RequestGateway(
        refusing_app, Metrics(process=False), drain_bytes=1000, drain_seconds=5
    )
    await gateway(scope, endless_body, send)
    assert 10 <= len(received) <= 12  # read up to the bound, then given up
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert (b"connection", b"close") in sent[0]["headers"]


async def test_a_request_without_a_body_passes_straight_through() -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append("app")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        raise AssertionError("nothing to read")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await RequestGateway(app, Metrics(process=False))(
        {"type": "http", "headers": []}, receive, send
    )
    assert calls == ["app"] and len(sent) == 2


@pytest.mark.parametrize("path", ["/token", "/device/requests"])
async def test_a_client_gone_mid_body_leaves_no_traceback_and_no_500(
    served: ServedApp, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = int(served.url.rsplit(":", 1)[1])
    content_type = (
        "application/jose" if path.startswith("/device/") else "application/x-www-form-urlencoded"
    )
    taken = record_body_chunks(served)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: {content_type}\r\n\r\n5\r\ngrant\r\n".encode()
    )
    await writer.drain()

    async def reading_the_body() -> bool:
        return b"grant" in taken

    await eventually(reading_the_body)  # the endpoint has the first chunk, waits for more
    writer.close()
    await writer.wait_closed()

    def about_it() -> list[logging.LogRecord]:
        return [r for r in caplog.records if path in r.getMessage() or r.exc_info]

    async def logged() -> bool:
        return bool(about_it())

    await eventually(logged, within=5)
    assert [(r.levelname, r.getMessage()) for r in about_it()] == [
        ("INFO", f"client went away during the request body on POST {path}")
    ]
