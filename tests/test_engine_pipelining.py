"""Pipelining without a penalty: requests a client sent ahead run back to back
in one task, and their answers leave in one write per batch, bounded, and
never held back behind a handler that waits.

The write counts are read from a transport that records its writes (the
protocol is driven in process); everything else runs over a real socket."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from conftest import READ_TIMEOUT, ConnectFactory, ServeFactory

import aserve
from aserve.asgi import ASGIHandler
from aserve.config import Config
from aserve.protocol import CORK_LIMIT
from aserve.server import ServerState
from aserve.wsgi import WSGIHandler


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1234)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    @property
    def answers(self) -> int:
        return b"".join(self.writes).count(b"HTTP/1.1 ")


async def drive(handler: Any, data: bytes, answers: int, **options: Any) -> RecordingTransport:
    state = ServerState(Config.build(**options), asyncio.get_running_loop(), handler)
    protocol = state.protocol_class(state)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(data)
    async with asyncio.timeout(READ_TIMEOUT):
        while transport.answers < answers:
            await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


async def test_sixteen_pipelined_answers_leave_in_one_write() -> None:
    tasks: set[asyncio.Task[Any] | None] = set()

    async def hello(request: aserve.Request) -> aserve.Response:
        tasks.add(asyncio.current_task())
        return aserve.PlainTextResponse(request.path)

    transport = await drive(hello, b"".join(get(f"/{i}") for i in range(16)), 16)
    assert len(transport.writes) == 1
    bodies = [
        part.rsplit(b"\r\n\r\n", 1)[-1] for part in transport.writes[0].split(b"HTTP/1.1 ")[1:]
    ]
    assert bodies == [f"/{i}".encode() for i in range(16)]
    assert len(tasks) == 1  # one task ran them all, one after the other


async def test_a_single_request_is_written_at_once() -> None:
    async def hello(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("hi")

    transport = await drive(hello, get("/"), 1)
    assert len(transport.writes) == 1


async def test_gathered_answers_are_written_past_the_cork_limit() -> None:
    big = b"x" * (CORK_LIMIT // 4)

    async def large(request: aserve.Request) -> aserve.Response:
        return aserve.Response(big, media_type="application/octet-stream")

    transport = await drive(large, get("/") * 16, 16)
    assert len(transport.writes) >= 4  # never all 16 answers held at once
    assert max(len(w) for w in transport.writes) <= CORK_LIMIT + len(big) + 1024


async def test_answers_before_a_waiting_handler_are_not_held_back(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    release = asyncio.Event()

    async def handler(request: aserve.Request) -> aserve.Response:
        if request.path == "/wait":
            await release.wait()
        return aserve.PlainTextResponse(request.path)

    async with serve(handler) as server:
        client = await connect(server.port)
        await client.send(get("/a") + get("/b") + get("/wait") + get("/c"))
        # /a and /b arrive while /wait still waits.
        first = await client.response()
        second = await client.response()
        assert (first.body, second.body) == (b"/a", b"/b")
        release.set()
        third = await client.response()
        fourth = await client.response()
        assert (third.body, fourth.body) == (b"/wait", b"/c")


@pytest.mark.parametrize("count", [1000])
async def test_a_long_pipeline_is_answered_whole_and_in_order(
    serve: ServeFactory, connect: ConnectFactory, count: int
) -> None:
    async def handler(request: aserve.Request) -> aserve.Response:
        if request.path.endswith("7"):
            await asyncio.sleep(0)  # some suspend, most do not
        return aserve.PlainTextResponse(request.path)

    async with serve(handler) as server:
        client = await connect(server.port)
        await client.send(b"".join(get(f"/{i}") for i in range(count)))
        bodies = [(await client.response()).body for _ in range(count)]
    assert bodies == [f"/{i}".encode() for i in range(count)]


async def test_a_pipelined_request_past_handler_timeout_is_504_and_the_rest_is_not_served(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    served: list[str] = []

    async def handler(request: aserve.Request) -> aserve.Response:
        served.append(request.path)
        if request.path == "/hang":
            await asyncio.sleep(30)
        return aserve.PlainTextResponse(request.path)

    async with serve(handler, handler_timeout=0.2) as server:
        client = await connect(server.port)
        await client.send(get("/a") + get("/hang") + get("/c"))
        first = await client.response()
        timed_out = await client.response()
        rest = await client.read_until_close()
    assert first.body == b"/a"
    assert timed_out.status == 504
    assert rest == b""
    assert served == ["/a", "/hang"]


async def test_a_handler_error_in_a_pipeline_answers_500_and_goes_on(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def handler(request: aserve.Request) -> aserve.Response:
        if request.path == "/boom":
            raise RuntimeError("boom")
        return aserve.PlainTextResponse(request.path)

    async with serve(handler) as server:
        client = await connect(server.port)
        await client.send(get("/a") + get("/boom") + get("/c"))
        answers = [await client.response() for _ in range(2)]
        assert [a.status for a in answers] == [200, 500]
        # A 500 closes the connection (its state is in doubt); the third
        # request is not answered on it.
        assert await client.read_until_close() == b""


async def test_metrics_and_access_log_count_every_pipelined_request(
    serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.access")

    async def handler(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(request.path)

    async with serve(handler, access_log=True, status_path="/status") as server:
        client = await connect(server.port)
        await client.send(b"".join(get(f"/{i}") for i in range(16)))
        for _ in range(16):
            await client.response()
        await client.send(get("/status?format=json"))
        status = await client.response()
    data = json.loads(status.body)
    assert data["requests"]["total"] == 16
    assert data["connections"]["keepalive_requests"] == 16  # all but the first, with this one
    lines = [r.getMessage() for r in caplog.records if r.name == "aserve.access"]
    assert [line.split('"')[1] for line in lines[:16]] == [f"GET /{i} HTTP/1.1" for i in range(16)]


async def asgi_echo(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def wsgi_echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


def mounted() -> aserve.App:
    app = aserve.App()
    app.mount("/api", ASGIHandler(asgi_echo))
    return app


@pytest.mark.parametrize(
    ("make", "prefix"),
    [
        (lambda: ASGIHandler(asgi_echo), ""),
        (lambda: WSGIHandler(wsgi_echo), ""),  # each request suspends: a thread
        (mounted, "/api"),
    ],
    ids=["asgi", "wsgi", "asgi-under-an-app"],
)
async def test_pipelined_requests_into_adapted_apps_are_answered_in_order(
    serve: ServeFactory, connect: ConnectFactory, make: Any, prefix: str
) -> None:
    async with serve(make()) as server:
        client = await connect(server.port)
        await client.send(b"".join(get(f"{prefix}/{i}") for i in range(32)))
        bodies = [(await client.response()).body for _ in range(32)]
    # ASGI's path is the full one, the mount's prefix included.
    assert bodies == [f"{prefix}/{i}".encode() for i in range(32)]
