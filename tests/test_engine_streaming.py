"""Flow control both ways and clients that go away: a streaming body never runs
ahead of the socket, an unread upload is not buffered, and a disconnect stops
the work it concerns without leaking tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import h11
from conftest import (
    READ_TIMEOUT,
    ConnectFactory,
    RawClient,
    ServeFactory,
    assert_serving,
    raw_socket,
    send_until_blocked,
    settle,
)

import aserve

MIB = 1024 * 1024
#: What kernel socket buffers on loopback plus the engine's own high-water marks
#: may hold; anything past it means the engine buffered without limit.
BUFFERED_AT_MOST = 16 * MIB


async def ok(request: aserve.Request) -> aserve.Response:
    return aserve.PlainTextResponse("ok")


# --------------------------------------------------------------------------- write backpressure


async def test_streaming_body_waits_for_a_client_that_does_not_read(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    chunk = b"w" * (64 * 1024)
    chunks = 512  # 32 MiB, twice what buffers may legitimately hold
    produced = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(chunks):
            produced += 1
            yield chunk

    async def handler(request: aserve.Request) -> aserve.Response:
        return aserve.StreamingResponse(body())

    async with serve(handler) as server:
        # A small fixed receive window; the stream reader stops reading at 128 KiB.
        client = await connect(server.port, rcvbuf=64 * 1024)
        await client.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        stalled_at = await settle(lambda: produced)
        assert stalled_at * len(chunk) < BUFFERED_AT_MOST, f"{stalled_at} chunks produced"
        assert stalled_at < chunks

        reply = await client.response(timeout=10)
        assert reply.status == 200
        assert len(reply.body) == chunks * len(chunk)
        assert produced == chunks
        # Still a working keep-alive connection.
        await client.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        assert len((await client.response(timeout=10)).body) == chunks * len(chunk)


# --------------------------------------------------------------------------- read backpressure


async def test_unread_upload_is_not_buffered_and_resumes_when_read(serve: ServeFactory) -> None:
    total = 50 * MIB
    started = asyncio.Event()
    release = asyncio.Event()

    async def late_reader(request: aserve.Request) -> aserve.Response:
        started.set()
        await release.wait()
        size = 0
        async for piece in request.stream():
            size += len(piece)
        return aserve.PlainTextResponse(str(size))

    chunk = b"u" * (256 * 1024)
    async with serve(late_reader, max_body_size=None) as server:
        sock = await raw_socket(server.port, sndbuf=64 * 1024)
        client: RawClient | None = None
        try:
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(READ_TIMEOUT):
                await loop.sock_sendall(
                    sock, b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % total
                )
                await started.wait()

            # Send without waiting for anyone until the socket stays full.
            sent = await send_until_blocked(sock, chunk, total)
            assert sent < BUFFERED_AT_MOST, f"the server took {sent / MIB:.1f} MiB unread"

            # The handler reads now: the server resumes and takes the rest.
            release.set()
            reader, writer = await asyncio.open_connection(sock=sock)
            client = RawClient(reader, writer)
            while sent < total:
                piece = chunk[: total - sent]
                await client.send(piece)
                sent += len(piece)
            reply = await client.response(timeout=10)
        finally:
            release.set()
            if client is not None:
                await client.close()
            else:
                sock.close()
    assert (reply.status, reply.body) == (200, str(total).encode())


async def test_pipelined_flood_is_not_buffered_while_a_request_is_served(
    serve: ServeFactory,
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def first_is_slow(request: aserve.Request) -> aserve.Response:
        if request.path == "/first":
            started.set()
            await release.wait()
        return await ok(request)

    request = b"GET /next HTTP/1.1\r\nHost: test\r\n\r\n"
    async with serve(first_is_slow) as server:
        sock = await raw_socket(server.port, sndbuf=64 * 1024)
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                await asyncio.get_running_loop().sock_sendall(
                    sock, b"GET /first HTTP/1.1\r\nHost: test\r\n\r\n"
                )
                await started.wait()
            sent = await send_until_blocked(sock, request * 4096, 64 * MIB)
        finally:
            release.set()
            sock.close()
        assert sent < BUFFERED_AT_MOST, (
            f"the server took {sent / MIB:.1f} MiB of pipelined requests"
        )
        await assert_serving(server.port)


# --------------------------------------------------------------------------- disconnects


async def test_client_disconnect_mid_stream_closes_the_body_iterator(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    streaming = asyncio.Event()
    finalized = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"z" * 16384
                streaming.set()
        finally:
            finalized.set()

    async def handler(request: aserve.Request) -> aserve.Response:
        if request.path == "/":
            return await ok(request)
        return aserve.StreamingResponse(endless())

    async with serve(handler) as server:
        client = await connect(server.port)
        await client.send(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        head = await client.next_event()
        assert isinstance(head, h11.Response)
        async with asyncio.timeout(READ_TIMEOUT):
            await streaming.wait()
        await client.close()
        async with asyncio.timeout(READ_TIMEOUT):
            await finalized.wait()
        await assert_serving(server.port)


async def test_client_disconnect_mid_upload_raises_client_disconnected(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def reader(request: aserve.Request) -> aserve.Response:
        if request.path == "/":
            return await ok(request)
        try:
            await request.body()
        except aserve.ClientDisconnected:
            outcome.set_result("disconnected")
            raise
        except BaseException as exc:
            outcome.set_result(f"raised {exc!r}")
            raise
        outcome.set_result("body complete")
        return aserve.PlainTextResponse("unexpected")

    async with serve(reader) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n" + b"u" * 1000
        )
        await client.close()
        async with asyncio.timeout(READ_TIMEOUT):
            assert await outcome == "disconnected"
        await assert_serving(server.port)


async def test_is_disconnected_turns_true_when_the_client_leaves_mid_upload(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    started = asyncio.Event()
    noticed = asyncio.Event()

    async def watcher(request: aserve.Request) -> aserve.Response:
        if request.path == "/":
            return await ok(request)
        assert not await request.is_disconnected()
        started.set()
        # is_disconnected() is a poll by design; the test bounds how long this runs.
        while not await request.is_disconnected():
            await asyncio.sleep(0.01)
        noticed.set()
        return aserve.PlainTextResponse("gone")

    async with serve(watcher) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n" + b"u" * 10
        )
        async with asyncio.timeout(READ_TIMEOUT):
            await started.wait()
        await client.close()
        async with asyncio.timeout(READ_TIMEOUT):
            await noticed.wait()
        await assert_serving(server.port)


async def test_no_tasks_are_left_after_shutdown(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    before = asyncio.all_tasks()
    streaming = asyncio.Event()
    uploading = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"z" * 16384
            streaming.set()

    async def handler(request: aserve.Request) -> aserve.Response:
        if request.path == "/stream":
            return aserve.StreamingResponse(endless())
        if request.path == "/upload":
            uploading.set()
            with contextlib.suppress(aserve.ClientDisconnected):
                await request.body()
        return await ok(request)

    async with serve(handler) as server:
        idle = await connect(server.port)
        await idle.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await idle.response()).status == 200

        abandoned_stream = await connect(server.port)
        await abandoned_stream.send(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        async with asyncio.timeout(READ_TIMEOUT):
            await streaming.wait()
        await abandoned_stream.close()

        abandoned_upload = await connect(server.port)
        await abandoned_upload.send(
            b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\nabc"
        )
        async with asyncio.timeout(READ_TIMEOUT):
            await uploading.wait()
        await abandoned_upload.close()
        await assert_serving(server.port)

    leftover = asyncio.all_tasks() - before
    assert not leftover, leftover
