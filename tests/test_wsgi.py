"""The WSGI adapter against PEP 3333, with small raw WSGI apps over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest
from conftest import READ_TIMEOUT, ConnectFactory, ServeFactory, settle

import aserve
from aserve.wsgi import WSGIHandler

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], None]]


@contextlib.asynccontextmanager
async def client_for(
    serve: ServeFactory, app: Any, *, threads: int = 4, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    root_path = options.pop("root_path", "")
    async with serve(WSGIHandler(app, threads=threads, root_path=root_path), **options) as server:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=READ_TIMEOUT
        ) as client:
            yield client


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, ", b"World!"]


async def test_list_body_becomes_one_response_with_length(serve: ServeFactory) -> None:
    async with client_for(serve, hello) as client:
        reply = await client.get("/")
    assert reply.text == "Hello, World!"
    assert reply.headers["content-length"] == "13"
    assert reply.headers["content-type"] == "text/plain"


async def test_environ_follows_pep_3333(serve: ServeFactory) -> None:
    seen: list[Environ] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(dict(environ))
        start_response("204 No Content", [])
        return []

    async with client_for(serve, app, root_path="/mount") as client:
        reply = await client.get(
            "/mount/caf%C3%A9/a%2Fb?x=1&y=%20",
            headers={"X-Custom": "v", "Cookie": "a=1", "Content-Type": "text/x"},
        )
    assert reply.status_code == 204
    [environ] = seen
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["SCRIPT_NAME"] == "/mount"
    # Percent-decoded bytes, as latin-1: "é" is two characters here.
    assert environ["PATH_INFO"] == "/caf\xc3\xa9/a/b"
    assert environ["QUERY_STRING"] == "x=1&y=%20"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["SERVER_NAME"] == "127.0.0.1"
    assert environ["SERVER_PORT"].isdigit()
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["HTTP_X_CUSTOM"] == "v"
    assert environ["HTTP_COOKIE"] == "a=1"
    assert environ["CONTENT_TYPE"] == "text/x"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.input"].read() == b""
    environ["wsgi.errors"].write("to the log\n")


async def test_headers_with_underscores_are_dropped(serve: ServeFactory) -> None:
    seen: list[Environ] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [])
        return [b""]

    async with client_for(serve, app) as client:
        await client.get("/", headers={"X_Forwarded_For": "1.2.3.4", "X-Real": "yes"})
    assert "HTTP_X_FORWARDED_FOR" not in seen[0]
    assert seen[0]["HTTP_X_REAL"] == "yes"


async def test_repeated_headers_are_joined(connect: ConnectFactory, serve: ServeFactory) -> None:
    seen: list[Environ] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [])
        return [b""]

    async with serve(WSGIHandler(app)) as server:
        port = server.port
        client = await connect(port)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\nAccept: a\r\nAccept: b\r\n\r\n")
        await client.response()
    assert seen[0]["HTTP_ACCEPT"] == "a,b"
    assert seen[0]["HTTP_HOST"] == "t"
    # SERVER_NAME/PORT name the socket the request came in on (PEP 3333), not the Host header.
    assert seen[0]["SERVER_NAME"] == "127.0.0.1"
    assert seen[0]["SERVER_PORT"] == str(port)


async def test_wsgi_input_read_forms(serve: ServeFactory) -> None:
    results: dict[str, Any] = {}

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        results["line"] = stream.readline()
        results["five"] = stream.read(5)
        results["lines"] = stream.readlines()
        results["rest"] = stream.read()
        start_response("200 OK", [])
        return [b"ok"]

    async with client_for(serve, app) as client:
        await client.post("/", content=b"first line\nabcdefg\nsecond\nthird")
    assert results == {
        "line": b"first line\n",
        "five": b"abcde",
        "lines": [b"fg\n", b"second\n", b"third"],
        "rest": b"",
    }


async def test_wsgi_input_streams_a_large_body(serve: ServeFactory) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        total = 0
        largest = 0
        while chunk := environ["wsgi.input"].read(65536):
            total += len(chunk)
            largest = max(largest, len(chunk))
        start_response("200 OK", [])
        return [b"%d %d" % (total, largest)]

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(128):
            yield b"u" * 65536

    async with client_for(serve, app, max_body_size=None) as client:
        reply = await client.post("/", content=upload())
    total, largest = map(int, reply.text.split())
    assert total == 128 * 65536
    assert largest <= 65536


async def test_wsgi_input_is_read_with_backpressure(serve: ServeFactory) -> None:
    reading = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.input"].read(1)
        reading.wait(READ_TIMEOUT * 2)
        total = 1 + len(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b"%d" % total]

    size = 32 * 1024 * 1024
    async with serve(WSGIHandler(app), max_body_size=None) as server:
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
        assert stalled_at < size // 2
        reading.set()
        async with asyncio.timeout(10):
            await uploader
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()


async def test_generator_body_is_streamed(serve: ServeFactory) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for i in range(20):
            yield b"line %d\n" % i

    async with client_for(serve, app) as client:
        reply = await client.get("/")
        again = await client.get("/")
    assert reply.headers["transfer-encoding"] == "chunked"
    assert reply.text == "".join(f"line {i}\n" for i in range(20))
    assert again.text == reply.text


async def test_generator_with_content_length_is_one_response(serve: ServeFactory) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        yield b"hello"

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.text == "hello"
    assert "transfer-encoding" not in reply.headers


async def test_start_response_inside_the_generator(serve: ServeFactory) -> None:
    """PEP 3333 lets an app call start_response on its iterable's first next()."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        yield b""
        start_response("201 Created", [("Content-Type", "text/plain")])
        yield b"late"

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.status_code == 201
    assert reply.text == "late"


async def test_streamed_body_waits_for_a_slow_client(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    produced = 0
    closed = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        nonlocal produced
        start_response("200 OK", [])
        try:
            while True:
                yield b"x" * 65536
                produced += 65536
        finally:
            closed.set()

    async with serve(WSGIHandler(app, threads=2)) as server:
        client = await connect(server.port, rcvbuf=16384)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        stalled = await settle(lambda: produced)
        assert stalled < 16 * 1024 * 1024  # the worker waits for the socket
        await client.close()
        async with asyncio.timeout(READ_TIMEOUT):
            await asyncio.to_thread(closed.wait, READ_TIMEOUT)
        assert closed.is_set()


class ClosingBody:
    """An iterable with close(), as PEP 3333 says the server must call."""

    def __init__(self, chunks: list[bytes], closed: threading.Event) -> None:
        self.chunks = chunks
        self.closed = closed

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed.set()


@pytest.mark.parametrize("length", [True, False])
async def test_close_is_called_on_the_iterable(serve: ServeFactory, length: bool) -> None:
    closed = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        headers = [("Content-Length", "6")] if length else []
        start_response("200 OK", headers)
        return ClosingBody([b"abc", b"def"], closed)

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.text == "abcdef"
    assert closed.is_set()


async def test_write_callable(serve: ServeFactory) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [])
        write(b"written, ")
        return [b"then returned"]

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.text == "written, then returned"


async def test_exc_info_replaces_the_head_before_it_is_sent(serve: ServeFactory) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("X-First", "yes")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Second", "yes")], sys.exc_info())
        return [b"error page"]

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.status_code == 500
    assert reply.text == "error page"
    assert "x-first" not in reply.headers
    assert reply.headers["x-second"] == "yes"


async def test_exc_info_after_the_head_was_sent_reraises(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    raised: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first chunk"
        try:
            raise ValueError("too late")
        except ValueError:
            try:
                start_response("500 Internal Server Error", [], sys.exc_info())
            except ValueError as exc:
                raised.append(exc)
                raise

    async with serve(WSGIHandler(app)) as server:
        client = await connect(server.port)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        received = await client.read_until_close()
    assert received.startswith(b"HTTP/1.1 200 ")
    assert not received.endswith(b"0\r\n\r\n")  # cut short: the connection closed
    assert [str(e) for e in raised] == ["too late"]


async def test_start_response_twice_without_exc_info_is_an_error(serve: ServeFactory) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return [b""]

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.status_code == 500


@pytest.mark.parametrize(
    "status, headers",
    [
        ("200 OK", [("X-Evil", "a\r\nSet-Cookie: x=1")]),
        ("OK", []),
        ("99 Nope", []),
    ],
)
async def test_bad_heads_give_500(
    serve: ServeFactory, status: str, headers: list[tuple[str, str]]
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, headers)
        return [b"body"]

    async with client_for(serve, app) as client:
        reply = await client.get("/")
    assert reply.status_code == 500
    assert "set-cookie" not in reply.headers


async def test_app_error_before_the_head_is_a_500(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        raise RuntimeError("wsgi boom")

    async with client_for(serve, app) as client:
        reply = await client.get("/")
        again = await client.get("/")
    assert reply.status_code == again.status_code == 500
    assert any("wsgi boom" in str(r.exc_info) for r in caplog.records)


async def test_body_too_large_is_a_413(serve: ServeFactory) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            environ["wsgi.input"].read()
        except Exception:
            start_response("500 Internal Server Error", [])  # as a framework would
            return [b"the app's error page"]
        start_response("200 OK", [])
        return [b"read"]

    async with serve(WSGIHandler(app), max_body_size=1000) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"800\r\n" + b"x" * 0x800 + b"\r\n")
        await writer.drain()
        async with asyncio.timeout(READ_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413")
        writer.close()


async def test_thread_pool_is_bounded(serve: ServeFactory) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(READ_TIMEOUT)
        with lock:
            running -= 1
        start_response("200 OK", [])
        return [b"done"]

    async with client_for(serve, app, threads=2) as client:
        requests = [asyncio.create_task(client.get("/")) for _ in range(6)]
        await settle(lambda: running)
        assert running == 2
        release.set()
        replies = await asyncio.gather(*requests)
    assert [r.text for r in replies] == ["done"] * 6
    assert peak == 2


def test_threads_must_be_positive() -> None:
    with pytest.raises(aserve.ConfigError):
        WSGIHandler(hello, threads=0)
