"""Every phase that waits on a client or a handler has a deadline, and it fires.

body_timeout (slow request bodies), send_timeout (clients that do not read),
handler_timeout (handlers that never answer) and max_concurrency (load
shedding), each on a real socket, plus the proof that progress is never cut
off: a body that keeps arriving and a download that keeps moving both finish.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h11
import pytest
from conftest import (
    READ_TIMEOUT,
    ConnectFactory,
    Reply,
    ServeFactory,
    assert_serving,
    exchange,
    raw_socket,
    replies,
)

import aserve

HOST = b"Host: test\r\n"


async def echo_length(request: aserve.Request) -> aserve.Response:
    body = await request.body()
    return aserve.PlainTextResponse(f"{len(body)}")


async def closed_within(client_sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Read until the server closes (or resets) `client_sock`; the bytes and the time taken."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    data = bytearray()
    async with asyncio.timeout(limit):
        while True:
            try:
                chunk = await loop.sock_recv(client_sock, 65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return bytes(data), loop.time() - start


async def trickled_post(port: int, *, pieces: int, gap: float) -> Reply:
    """POST a body of `pieces` bytes, one every `gap` seconds; the one reply."""
    sock = await raw_socket(port)
    with sock:
        sock.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % pieces)
        for _ in range(pieces):
            await asyncio.sleep(gap)
            sock.send(b"x")
        sock.shutdown(socket.SHUT_WR)
        data, _ = await closed_within(sock, READ_TIMEOUT)
    [reply] = replies(_parse(data))
    return reply


# --------------------------------------------------------------------------- body_timeout


async def test_slow_post_gets_408_after_body_timeout(serve: ServeFactory) -> None:
    async with serve(echo_length, body_timeout=0.3) as server:
        sock = await raw_socket(server.port)
        with sock:
            sock.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 100\r\n\r\nabc")
            data, took = await closed_within(sock, READ_TIMEOUT)
        [reply] = replies(_parse(data))
        assert reply.status == 408
        assert reply.header("connection") == "close"
        assert 0.2 < took < 1.5
        await assert_serving(server.port)


async def test_body_that_keeps_arriving_is_never_cut_off(serve: ServeFactory) -> None:
    async with serve(echo_length, body_timeout=0.3) as server:
        # 8 gaps of 0.1 s: 0.8 s in all, well past body_timeout.
        reply = await trickled_post(server.port, pieces=8, gap=0.1)
        assert reply.status == 200 and reply.body == b"8"


async def test_body_timeout_after_the_response_started_closes(serve: ServeFactory) -> None:
    async def streamed_echo(request: aserve.Request) -> aserve.Response:
        async def gen() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                yield chunk

        return aserve.StreamingResponse(gen())

    async with serve(streamed_echo, body_timeout=0.3) as server:
        sock = await raw_socket(server.port)
        with sock:
            sock.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 100\r\n\r\nabc")
            data, took = await closed_within(sock, READ_TIMEOUT)
        assert data.startswith(b"HTTP/1.1 200 ")
        assert b"abc" in data
        assert b"0\r\n\r\n" not in data  # no clean end: the body was cut
        assert took < 1.5
        await assert_serving(server.port)


async def test_unread_body_is_discarded_under_body_timeout(serve: ServeFactory) -> None:
    async def quick(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("quick")

    async with serve(quick, body_timeout=0.3) as server:
        sock = await raw_socket(server.port)
        with sock:
            sock.send(b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1000\r\n\r\nabc")
            data, took = await closed_within(sock, READ_TIMEOUT)
        [reply] = replies(_parse(data))
        assert reply.status == 200 and reply.body == b"quick"
        assert 0.2 < took < 1.5


async def test_body_timeout_reaches_the_handler_as_client_disconnected(
    serve: ServeFactory,
) -> None:
    seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def reader(request: aserve.Request) -> aserve.Response:
        try:
            await request.body()
        except aserve.ClientDisconnected as exc:
            seen.set_result(f"disconnected: {exc}")
            raise
        seen.set_result("read")
        return aserve.PlainTextResponse("read")

    async with serve(reader, body_timeout=0.3) as server:
        events = await exchange(
            server.port, b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\nab"
        )
        assert replies(events)[0].status == 408
        async with asyncio.timeout(READ_TIMEOUT):
            assert (await seen).startswith("disconnected")


# --------------------------------------------------------------------------- send_timeout


async def small_window_client(port: int, request: bytes) -> socket.socket:
    """A connection with a 4 KiB receive buffer that sent `request`: what it
    then reads (or does not) decides how fast the server can write."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        async with asyncio.timeout(READ_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        sock.send(request)
    except BaseException:
        sock.close()
        raise
    return sock


async def test_client_that_never_reads_a_stream_is_aborted_and_the_generator_closed(
    serve: ServeFactory,
) -> None:
    closed = asyncio.Event()

    async def endless(request: aserve.Request) -> aserve.Response:
        if request.path == "/":
            return aserve.PlainTextResponse("ok")

        async def gen() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"x" * 65536
            finally:
                closed.set()

        return aserve.StreamingResponse(gen())

    async with serve(endless, send_timeout=0.3) as server:
        sock = await small_window_client(server.port, b"GET /endless HTTP/1.1\r\n" + HOST + b"\r\n")
        with sock:
            # Never read: the server must give up on its own.
            async with asyncio.timeout(READ_TIMEOUT):
                await closed.wait()
        await assert_serving(server.port)


async def test_client_that_never_reads_a_large_body_in_hand_is_aborted(
    serve: ServeFactory,
) -> None:
    body = b"y" * (8 * 1024 * 1024)
    entered = asyncio.Event()

    async def big(request: aserve.Request) -> aserve.Response:
        entered.set()
        return aserve.Response(body)

    async with serve(big, send_timeout=0.3) as server:
        sock = await small_window_client(server.port, b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        with sock:
            state = server._state
            assert state is not None
            async with asyncio.timeout(READ_TIMEOUT):
                await entered.wait()
                while state.connections:
                    await asyncio.sleep(0.05)
        await assert_serving(server.port)


async def test_client_that_never_reads_a_file_response_is_aborted(
    serve: ServeFactory, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"f" * (16 * 1024 * 1024))

    entered = asyncio.Event()

    async def download(request: aserve.Request) -> aserve.Response:
        if request.path == "/":
            return aserve.PlainTextResponse("ok")
        entered.set()
        return aserve.FileResponse(big)

    async with serve(download, send_timeout=0.3) as server:
        sock = await small_window_client(server.port, b"GET /big HTTP/1.1\r\n" + HOST + b"\r\n")
        with sock:
            state = server._state
            assert state is not None
            async with asyncio.timeout(READ_TIMEOUT):
                await entered.wait()
                while state.connections:  # sendfile stopped, the connection let go
                    await asyncio.sleep(0.05)
            # The client learns of it: a reset once the queued bytes are read.
            loop = asyncio.get_running_loop()
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(READ_TIMEOUT):
                    while await loop.sock_recv(sock, 65536):
                        pass
        await assert_serving(server.port)


async def test_slow_reader_that_keeps_reading_gets_everything(serve: ServeFactory) -> None:
    size = 1024 * 1024
    body = bytes(range(256)) * (size // 256)

    async def big(request: aserve.Request) -> aserve.Response:
        async def gen() -> AsyncIterator[bytes]:
            for start in range(0, size, 65536):
                yield body[start : start + 65536]

        return aserve.StreamingResponse(gen(), headers={"content-length": str(size)})

    async with serve(big, send_timeout=0.3) as server:
        sock = await small_window_client(
            server.port, b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
        )
        loop = asyncio.get_running_loop()
        received = bytearray()
        with sock:
            started = loop.time()
            async with asyncio.timeout(20):
                while True:
                    # Read a little, then pause longer than nothing but a
                    # per-write (not per-progress) timeout would allow in total.
                    chunk = await loop.sock_recv(sock, 65536)
                    if not chunk:
                        break
                    received += chunk
                    await asyncio.sleep(0.01)
        assert loop.time() - started > 0.3  # slower in all than send_timeout
        assert received.endswith(body)


# --------------------------------------------------------------------------- handler_timeout


async def test_hung_handler_gets_504_and_is_cancelled(serve: ServeFactory) -> None:
    cancelled = asyncio.Event()

    async def hang(request: aserve.Request) -> aserve.Response:
        if request.path == "/":
            return aserve.PlainTextResponse("ok")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async with serve(hang, handler_timeout=0.3) as server:
        start = time.monotonic()
        events = await exchange(server.port, b"GET /hang HTTP/1.1\r\n" + HOST + b"\r\n")
        took = time.monotonic() - start
        [reply] = replies(events)
        assert reply.status == 504
        assert isinstance(events[-1], h11.ConnectionClosed)
        assert 0.25 < took < 1.5
        async with asyncio.timeout(READ_TIMEOUT):
            await cancelled.wait()
        state = server._state
        assert state is not None and state.active == 0
        await assert_serving(server.port)


async def test_handler_timeout_does_not_count_waiting_for_the_body(serve: ServeFactory) -> None:
    async with serve(echo_length, handler_timeout=0.3, body_timeout=2) as server:
        # 0.9 s of body, three times the handler's budget.
        reply = await trickled_post(server.port, pieces=6, gap=0.15)
        assert reply.status == 200 and reply.body == b"6"


async def test_handler_timeout_ends_with_the_response_head(serve: ServeFactory) -> None:
    async def slow_stream(request: aserve.Request) -> aserve.Response:
        async def gen() -> AsyncIterator[bytes]:
            for _ in range(6):
                await asyncio.sleep(0.1)
                yield b"tick\n"

        return aserve.StreamingResponse(gen())

    async with serve(slow_stream, handler_timeout=0.3) as server:
        events = await exchange(
            server.port, b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
        )
        [reply] = replies(events)
        assert reply.status == 200 and reply.body == b"tick\n" * 6


# --------------------------------------------------------------------------- max_concurrency


async def test_past_max_concurrency_a_request_gets_503_and_the_connection_stays(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def gated(request: aserve.Request) -> aserve.Response:
        if request.path == "/hold":
            entered.set()
            await release.wait()
        return aserve.PlainTextResponse("done")

    async with serve(gated, max_concurrency=1, retry_after=7) as server:
        holder = await connect(server.port)
        await holder.send(b"GET /hold HTTP/1.1\r\n" + HOST + b"\r\n")
        async with asyncio.timeout(READ_TIMEOUT):
            await entered.wait()
        other = await connect(server.port)
        await other.send(b"GET /x HTTP/1.1\r\n" + HOST + b"\r\n")
        reply = await other.response()
        assert reply.status == 503
        assert reply.header("retry-after") == "7"
        assert reply.header("connection") is None  # keep-alive
        release.set()
        assert (await holder.response()).status == 200
        await other.send(b"GET /x HTTP/1.1\r\n" + HOST + b"\r\n")
        reply = await other.response()
        assert reply.status == 200 and reply.body == b"done"


async def test_shed_request_with_a_body_keeps_the_connection_framed(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def gated(request: aserve.Request) -> aserve.Response:
        if request.path == "/hold":
            entered.set()
            await release.wait()
        return aserve.PlainTextResponse((await request.body()).decode())

    async with serve(gated, max_concurrency=1) as server:
        holder = await connect(server.port)
        await holder.send(b"GET /hold HTTP/1.1\r\n" + HOST + b"\r\n")
        async with asyncio.timeout(READ_TIMEOUT):
            await entered.wait()
        other = await connect(server.port)
        await other.send(b"POST /x HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nhello")
        reply = await other.response()
        assert reply.status == 503 and reply.header("retry-after") == "1"
        release.set()
        await holder.response()
        await other.send(b"POST /x HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc")
        assert (await other.response()).body == b"abc"


async def test_refusals_are_logged_as_one_line_a_second(
    serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aserve.error")
    async with serve(echo_length, max_connections=1) as server:
        holder = await connect(server.port)
        await holder.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        assert (await holder.response()).status == 200
        for _ in range(5):
            events = await exchange(server.port, b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
            assert replies(events)[0].status == 503

        def counted() -> list[int]:
            return [
                int(r.getMessage().split()[1])
                for r in caplog.records
                if r.getMessage().startswith("refused ") and "max_connections" in r.getMessage()
            ]

        async with asyncio.timeout(READ_TIMEOUT):
            while sum(counted()) < 5:
                await asyncio.sleep(0.05)
    # Five refusals, counted in the clock's once-a-second line (two if a tick
    # fell between them), never a line each.
    assert sum(counted()) == 5 and len(counted()) <= 2, counted()


# --------------------------------------------------------------------------- defects


def _read_then_reset(port: int, path: bytes, amount: int) -> None:
    """A client in its own thread: ask for `path`, read `amount` bytes, reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"\r\n")
        got = 0
        while got < amount:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.timeout(25, method="thread")  # a wedged loop ignores signals
async def test_reset_during_a_stream_that_never_awaits_does_not_wedge_the_loop(
    serve: ServeFactory,
) -> None:
    closed = 0

    async def firehose(request: aserve.Request) -> aserve.Response:
        if request.path == "/":
            return aserve.PlainTextResponse("ok")

        async def gen() -> AsyncIterator[bytes]:
            nonlocal closed
            try:
                while True:
                    yield b"x" * 2**20
            finally:
                closed += 1

        return aserve.StreamingResponse(gen())

    rounds = 20
    async with serve(firehose) as server:
        for _ in range(rounds):
            # The client runs in a thread so that it resets while the
            # generator is writing, not while the loop happens to run it.
            await asyncio.to_thread(_read_then_reset, server.port, b"/stream", 3 << 20)
            await assert_serving(server.port)
        async with asyncio.timeout(READ_TIMEOUT):
            while closed < rounds:
                await asyncio.sleep(0.01)


async def test_shared_large_body_is_not_copied_per_client(serve: ServeFactory) -> None:
    body = b"s" * (32 * 1024 * 1024)

    async def shared(request: aserve.Request) -> aserve.Response:
        return aserve.Response(body)

    async with serve(shared, send_timeout=30) as server:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            socks = []
            for _ in range(3):
                sock = await small_window_client(
                    server.port, b"GET / HTTP/1.1\r\n" + HOST + b"\r\n"
                )
                socks.append(sock)
            await asyncio.sleep(0.3)  # let each exchange block on its socket
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            for sock in socks:
                sock.close()
        # Three stalled clients of one 32 MiB body: a few slices buffered, no copies.
        assert grown < 8 * 1024 * 1024, grown


@pytest.mark.parametrize(
    "body",
    [b"zz\r\n", b"5\r\nabcdefgh\r\n", b"3\r\nabcXY", b"-1\r\n"],
    ids=["bad-size", "data-longer-than-size", "data-without-crlf", "negative-size"],
)
@pytest.mark.parametrize("reads", [True, False], ids=["handler-reads", "handler-does-not-read"])
async def test_bad_chunked_framing_during_the_handler_gets_400(
    serve: ServeFactory, body: bytes, reads: bool
) -> None:
    gate = asyncio.Event()

    async def handler(request: aserve.Request) -> aserve.Response:
        if reads:
            await request.body()
        else:
            await gate.wait()  # answers only after the bad bytes came
        return aserve.PlainTextResponse("ok")

    async with serve(handler) as server:
        sock = await raw_socket(server.port)
        with sock:
            sock.send(b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n")
            await asyncio.sleep(0.05)  # the handler is running
            sock.send(body)
            data, _ = await closed_within(sock, READ_TIMEOUT)
        gate.set()
        [reply] = replies(_parse(data))
        assert reply.status == 400, reply
        await assert_serving(server.port)


def _parse(data: bytes) -> list[object]:
    from conftest import parse_events

    return parse_events(data)


# --------------------------------------------------------------------------- seams


async def test_hung_asgi_app_mounted_in_an_app_gets_504_and_is_cancelled(
    serve: ServeFactory,
) -> None:
    from aserve.asgi import ASGIHandler

    cancelled = asyncio.Event()

    async def hung_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    app = aserve.App()
    app.mount("/asgi", ASGIHandler(hung_asgi))

    @app.get("/")
    async def index(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("ok")

    async with serve(app, handler_timeout=0.3) as server:
        events = await exchange(server.port, b"GET /asgi/x HTTP/1.1\r\n" + HOST + b"\r\n")
        assert replies(events)[0].status == 504
        async with asyncio.timeout(READ_TIMEOUT):
            await cancelled.wait()
        await assert_serving(server.port)


async def test_slow_body_to_an_asgi_app_gets_408(serve: ServeFactory) -> None:
    from aserve.asgi import ASGIHandler

    async def reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(body)})

    async with serve(ASGIHandler(reader), body_timeout=0.3) as server:
        events = await exchange(
            server.port, b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\nab"
        )
        assert replies(events)[0].status == 408
        reply = await trickled_post(server.port, pieces=4, gap=0.1)
        assert reply.status == 200 and reply.body == b"4"


async def test_hung_wsgi_app_gets_504_and_the_server_keeps_serving(serve: ServeFactory) -> None:
    import threading

    from aserve.wsgi import WSGIHandler

    release = threading.Event()

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/hang":
            release.wait(READ_TIMEOUT)  # a thread cannot be cancelled: it is let go
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    async with serve(WSGIHandler(wsgi_app), handler_timeout=0.3) as server:
        try:
            events = await exchange(server.port, b"GET /hang HTTP/1.1\r\n" + HOST + b"\r\n")
            assert replies(events)[0].status == 504
            await assert_serving(server.port)
        finally:
            release.set()
