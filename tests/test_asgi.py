"""The ASGI adapter against the spec, with small raw ASGI apps over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import READ_TIMEOUT, ConnectFactory, ServeFactory, settle

import aserve
from aserve.asgi import ASGIHandler

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def start(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Message:
    return {"type": "http.response.start", "status": status, "headers": headers or []}


def body(data: bytes = b"", more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        parts.append(message["body"])
        if not message.get("more_body", False):
            return b"".join(parts)


@contextlib.asynccontextmanager
async def client_for(
    serve: ServeFactory, app: Any, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    lifespan = options.pop("lifespan", "off")
    async with serve(ASGIHandler(app, lifespan=lifespan), **options) as server:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=READ_TIMEOUT
        ) as client:
            yield client


# --------------------------------------------------------------------------- scope


async def test_scope_carries_the_request(serve: ServeFactory) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send(start(200, [(b"content-type", b"text/plain")]))
        await send(body(b"ok"))

    async with client_for(serve, app) as client:
        reply = await client.get("/caf%C3%A9/a%2Fb?x=1&y=%20", headers={"X-Custom": "Value"})
    assert reply.status_code == 200
    assert reply.text == "ok"
    assert reply.headers["content-length"] == "2"
    [scope] = seen
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/a/b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == ""
    assert (b"x-custom", b"Value") in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["client"][0] == "127.0.0.1"
    assert scope["state"] == {}
    assert "http.response.pathsend" in scope["extensions"]


async def test_root_path_prefixes_path(serve: ServeFactory) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send(start())
        await send(body())

    async with serve(ASGIHandler(app, lifespan="off", root_path="/api/")) as server:
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{server.port}/users")
    assert seen[0]["root_path"] == "/api"
    assert seen[0]["path"] == "/api/users"
    assert seen[0]["raw_path"] == b"/api/users"


# --------------------------------------------------------------------------- request body


async def test_request_body_arrives_in_http_request_messages(serve: ServeFactory) -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            messages.append(message)
            if not message["more_body"]:
                break
        total = sum(len(m["body"]) for m in messages)
        await send(start())
        await send(body(b"%d" % total))

    payload = bytes(range(256)) * 4096  # 1 MiB
    async with client_for(serve, app) as client:
        reply = await client.post("/", content=payload)
    assert reply.text == str(len(payload))
    assert b"".join(m["body"] for m in messages) == payload
    assert all(m["type"] == "http.request" for m in messages)
    assert messages[-1]["more_body"] is False


async def test_request_without_body_gives_one_empty_message(serve: ServeFactory) -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(await receive())
        await send(start())
        await send(body())

    async with client_for(serve, app) as client:
        await client.get("/")
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}]


async def test_request_body_is_read_with_backpressure(serve: ServeFactory) -> None:
    """An app that does not read leaves the upload in the kernel's buffers."""
    received = 0
    reading = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal received
        message = await receive()
        received += len(message["body"])
        await reading.wait()
        received += len(await read_body(receive))
        await send(start())
        await send(body(b"%d" % received))

    size = 32 * 1024 * 1024
    async with serve(ASGIHandler(app, lifespan="off"), max_body_size=None) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        sent = 0
        chunk = b"x" * 65536

        async def upload() -> None:
            nonlocal sent
            while sent < size:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)

        uploader = asyncio.create_task(upload())
        stalled_at = await settle(lambda: sent)
        assert stalled_at < size // 2, "the server read the whole body without the app asking"
        reading.set()
        async with asyncio.timeout(10):
            await uploader
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()


async def test_http_disconnect_after_the_client_leaves(serve: ServeFactory) -> None:
    got: list[Message] = []
    done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        got.append(await receive())  # waits until the client is gone
        done.set()

    async with serve(ASGIHandler(app, lifespan="off")) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        # A reset, not a FIN: the engine takes a FIN after a whole request as a
        # half-close and keeps answering.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        async with asyncio.timeout(READ_TIMEOUT):
            await done.wait()
    assert got == [{"type": "http.disconnect"}]


# --------------------------------------------------------------------------- responses


async def test_streamed_response_goes_out_chunked(serve: ServeFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"content-type", b"text/plain")]))
        for i in range(5):
            await send(body(b"part %d\n" % i, more=True))
        await send(body())

    async with client_for(serve, app) as client:
        reply = await client.get("/")
        again = await client.get("/")  # the connection is still good
    assert reply.headers["transfer-encoding"] == "chunked"
    assert reply.text == "".join(f"part {i}\n" for i in range(5))
    assert again.text == reply.text


async def test_streamed_response_waits_for_a_slow_client(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    sent = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal sent
        await send(start())
        chunk = b"x" * 65536
        while True:
            await send(body(chunk, more=True))
            sent += len(chunk)

    async with serve(ASGIHandler(app, lifespan="off")) as server:
        client = await connect(server.port, rcvbuf=16384)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        stalled = await settle(lambda: sent)
        # The app is held in send(): what it produced is what the socket took,
        # not an unbounded buffer.
        assert stalled < 16 * 1024 * 1024
        await client.close()


async def test_send_raises_oserror_once_the_client_left(serve: ServeFactory) -> None:
    errors: list[BaseException] = []
    finished = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start())
        try:
            while True:
                await send(body(b"x" * 65536, more=True))
        except OSError as exc:
            errors.append(exc)
        finally:
            finished.set()

    async with serve(ASGIHandler(app, lifespan="off")) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        async with asyncio.timeout(READ_TIMEOUT):
            await finished.wait()
    assert len(errors) == 1
    assert isinstance(errors[0], aserve.ClientDisconnected)


async def test_head_request_keeps_the_apps_content_length(serve: ServeFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"content-length", b"11")]))
        await send(body(b"" if scope["method"] == "HEAD" else b"hello world"))

    async with client_for(serve, app) as client:
        reply = await client.head("/")
        full = await client.get("/")
    assert reply.headers["content-length"] == "11"
    assert reply.content == b""
    assert full.content == b"hello world"


async def test_pathsend_sends_the_file(serve: ServeFactory, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 1000)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert "http.response.pathsend" in scope["extensions"]
        await send(start(200, [(b"content-type", b"application/octet-stream")]))
        await send({"type": "http.response.pathsend", "path": str(path)})

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.headers["content-length"] == str(256 * 1000)
    assert reply.content == path.read_bytes()


async def test_sends_from_another_task_are_streamed(serve: ServeFactory) -> None:
    """Django's ASGI handler and SSE libraries send from a task of their own."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def produce() -> None:
            await send(start(201, [(b"content-type", b"text/plain")]))
            for i in range(4):
                await send(body(b"%d," % i, more=True))
                await asyncio.sleep(0)
            await send(body(b"end"))

        await asyncio.create_task(produce())

    async with client_for(serve, app) as client:
        reply = await client.get("/")
        whole = await client.get("/")
    assert reply.status_code == 201
    assert reply.text == "0,1,2,3,end"
    assert whole.text == reply.text


async def test_complete_response_from_another_task(serve: ServeFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def respond() -> None:
            await send(start(200))
            await send(body(b"from a task"))

        task = asyncio.create_task(respond())
        await asyncio.wait([task])

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.text == "from a task"
    assert reply.headers["content-length"] == "11"


async def test_work_after_the_response_does_not_delay_it(serve: ServeFactory) -> None:
    release = asyncio.Event()
    finished = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start())
        await send(body(b"sent"))
        await release.wait()  # a background task, as Starlette runs them
        finished.set()

    async with client_for(serve, app) as client:
        reply = await client.get("/")
        assert reply.text == "sent"
        assert not finished.is_set()
        release.set()
        async with asyncio.timeout(READ_TIMEOUT):
            await finished.wait()


async def test_asyncio_timeout_inside_the_app(serve: ServeFactory) -> None:
    """Cancellation reaches the app the way a Task delivers it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
            text = b"no timeout"
        except TimeoutError:
            text = b"timed out"
        await send(start())
        await send(body(text))

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.text == "timed out"


async def test_anyio_cancel_scope_around_receive(serve: ServeFactory) -> None:
    """Starlette's `request.is_disconnected()`: a receive() in a cancelled scope."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        with anyio.CancelScope() as cancel_scope:
            cancel_scope.cancel()
            await receive()
        await send(start())
        await send(body(b"cancelled" if cancel_scope.cancelled_caught else b"not cancelled"))

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.text == "cancelled"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "case",
    [
        "raise before start",
        "raise after start",
        "return without response",
        "return after start",
        "bad header",
        "bad status",
        "unknown message",
        "body before start",
        "wrong content-length",
    ],
)
async def test_app_errors_give_500(
    serve: ServeFactory, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if case == "raise before start":
            raise ValueError("boom")
        if case == "raise after start":
            await send(start())
            raise ValueError("boom")
        if case == "return without response":
            return
        if case == "return after start":
            await send(start())
            return
        if case == "bad header":
            await send(start(200, [(b"x-evil", b"a\r\nset-cookie: x=1")]))
        if case == "bad status":
            await send(start(99))
        if case == "unknown message":
            await send({"type": "http.response.nonsense"})
        if case == "body before start":
            await send(body(b"x"))
        if case == "wrong content-length":
            await send(start(200, [(b"content-length", b"100")]))
        await send(body(b"short"))

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.status_code == 500
    assert "set-cookie" not in reply.headers
    assert any(r.name == "aserve.error" for r in caplog.records)


async def test_error_after_the_body_started_closes_the_connection(
    serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(200, [(b"content-type", b"text/plain")]))
        await send(body(b"partial", more=True))
        raise ValueError("boom after the head")

    async with serve(ASGIHandler(app, lifespan="off")) as server:
        client = await connect(server.port)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        received = await client.read_until_close()
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"partial" in received
    assert not received.endswith(b"0\r\n\r\n")  # no last chunk: the client sees it cut
    assert any("boom after the head" in str(r.exc_info) for r in caplog.records)


async def test_error_after_a_complete_response_sends_it(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start(503, [(b"content-type", b"text/plain")]))
        await send(body(b"handled by the app"))
        raise ValueError("re-raised for the log")

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.status_code == 503
    assert reply.text == "handled by the app"
    assert any("re-raised for the log" in str(r.exc_info) for r in caplog.records)


async def test_error_in_work_after_the_response_is_logged(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start())
        await send(body(b"fine"))
        await asyncio.sleep(0.01)
        raise ValueError("background failure")

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    # Leaving the block shut the server down, which waits for the exchange.
    assert reply.text == "fine"
    assert any("background failure" in str(r.exc_info) for r in caplog.records)


async def test_next_request_on_the_connection_after_background_work(
    serve: ServeFactory,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start())
        await send(body(b"fine"))
        await asyncio.sleep(0.2)

    async with client_for(serve, app) as client:
        first = await client.get("/")
        async with asyncio.timeout(1.5):
            second = await client.get("/")
    assert first.text == second.text == "fine"


async def test_body_too_large_reaches_the_client_as_413(serve: ServeFactory) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await send(start())
        await send(body(b"read it all"))

    async with serve(ASGIHandler(app, lifespan="off"), max_body_size=1000) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"800\r\n" + b"x" * 0x800 + b"\r\n")
        await writer.drain()
        async with asyncio.timeout(READ_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413")
        writer.close()


# --------------------------------------------------------------------------- lifespan


def lifespan_app(
    log: list[str], *, fail_startup: bool = False, fail_shutdown: bool = False
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    log.append("startup")
                    scope["state"]["connection"] = "db"
                    if fail_startup:
                        await send({"type": "lifespan.startup.failed", "message": "no db"})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    log.append("shutdown")
                    if fail_shutdown:
                        await send({"type": "lifespan.shutdown.failed", "message": "stuck"})
                    else:
                        await send({"type": "lifespan.shutdown.complete"})
                    return
        text = repr(sorted(scope["state"].items())).encode()
        scope["state"]["mutated"] = True  # a copy: never seen by the next request
        await send(start())
        await send(body(text))

    return app


@pytest.mark.parametrize("mode", ["auto", "on"])
async def test_lifespan_runs_and_shares_state(serve: ServeFactory, mode: str) -> None:
    log: list[str] = []
    async with client_for(serve, lifespan_app(log), lifespan=mode) as client:
        assert log == ["startup"]
        first = await client.get("/")
        second = await client.get("/")
    assert log == ["startup", "shutdown"]
    assert first.text == second.text == "[('connection', 'db')]"


async def test_lifespan_off_never_calls_the_app(serve: ServeFactory) -> None:
    log: list[str] = []
    async with client_for(serve, lifespan_app(log), lifespan="off") as client:
        await client.get("/")
    assert log == []


@pytest.mark.parametrize("mode", ["auto", "on"])
async def test_lifespan_startup_failure_stops_the_server(mode: str) -> None:
    log: list[str] = []
    server = aserve.Server(ASGIHandler(lifespan_app(log, fail_startup=True), lifespan=mode), port=0)
    with pytest.raises(RuntimeError, match="no db"):
        await server.start()
    assert not server.started


async def test_lifespan_shutdown_failure_is_logged(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    async with client_for(serve, lifespan_app(log, fail_shutdown=True), lifespan="on"):
        pass
    assert log == ["startup", "shutdown"]
    assert any("stuck" in r.getMessage() for r in caplog.records)


async def http_only(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope type {scope['type']}")
    await send(start())
    await send(body(b"http only"))


async def test_lifespan_auto_tolerates_an_app_without_it(serve: ServeFactory) -> None:
    async with client_for(serve, http_only, lifespan="auto") as client:
        reply = await client.get("/")
    assert reply.text == "http only"


async def test_lifespan_on_requires_it() -> None:
    server = aserve.Server(ASGIHandler(http_only, lifespan="on"), port=0)
    with pytest.raises(RuntimeError, match="unsupported scope type"):
        await server.start()


def test_lifespan_mode_is_checked() -> None:
    with pytest.raises(aserve.ConfigError):
        ASGIHandler(http_only, lifespan="maybe")  # type: ignore[arg-type]
