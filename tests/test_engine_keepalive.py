"""Connection reuse: keep-alive rules per HTTP version, `Connection: close` from
either side, pipelining, and the idle timeout."""

from __future__ import annotations

import asyncio
import contextlib

import h11
from conftest import ConnectFactory, ServeFactory, exchange, replies

import aserve


async def echo_path(request: aserve.Request) -> aserve.Response:
    return aserve.PlainTextResponse(f"{request.http_version} {request.path}")


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n" + extra + b"\r\n"


# --------------------------------------------------------------------------- keep-alive


async def test_http11_keeps_the_connection_open_by_default(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(echo_path) as server:
        client = await connect(server.port)
        await client.send(get("/first"))
        first = await client.response()
        await client.send(get("/second"))
        second = await client.response()
    assert (first.status, first.body) == (200, b"1.1 /first")
    assert (second.status, second.body) == (200, b"1.1 /second")
    assert first.header("connection") is None
    assert second.header("connection") is None


async def test_http10_connection_closes_after_the_response(serve: ServeFactory) -> None:
    async with serve(echo_path) as server:
        events = await exchange(server.port, b"GET /old HTTP/1.0\r\n\r\n")
    [reply] = replies(events)
    assert (reply.status, reply.body) == (200, b"1.0 /old")
    assert isinstance(events[-1], h11.ConnectionClosed)


async def test_http10_keep_alive_request_keeps_the_connection_open(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    keep_alive = b"Connection: keep-alive\r\n"
    async with serve(echo_path) as server:
        client = await connect(server.port)
        await client.send(b"GET /one HTTP/1.0\r\n" + keep_alive + b"\r\n")
        first = await client.response()
        await client.send(b"GET /two HTTP/1.0\r\n" + keep_alive + b"\r\n")
        second = await client.response()
        # Without the header the HTTP/1.0 default applies again: close.
        await client.send(b"GET /three HTTP/1.0\r\n\r\n")
        third = await client.response()
        assert await client.read_until_close() == b""
    for reply, body in ((first, b"1.0 /one"), (second, b"1.0 /two")):
        assert (reply.status, reply.body) == (200, body)
        assert (reply.header("connection") or "").lower() == "keep-alive"
        assert reply.header("content-length") == str(len(body))
    assert third.body == b"1.0 /three"
    assert (third.header("connection") or "close").lower() == "close"


async def test_connection_close_from_the_client_is_honoured(serve: ServeFactory) -> None:
    async with serve(echo_path) as server:
        events = await exchange(server.port, get("/bye", b"Connection: close\r\n"))
    [reply] = replies(events)
    assert (reply.status, reply.body) == (200, b"1.1 /bye")
    assert (reply.header("connection") or "").lower() == "close"
    assert isinstance(events[-1], h11.ConnectionClosed)


async def test_connection_close_from_the_handler_closes_after_the_response(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def closing(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("last one", headers={"Connection": "close"})

    async with serve(closing) as server:
        client = await connect(server.port)
        await client.send(get("/"))
        reply = await client.response()
        assert await client.read_until_close() == b""
    assert (reply.status, reply.body) == (200, b"last one")
    assert (reply.header("connection") or "").lower() == "close"


# --------------------------------------------------------------------------- pipelining


async def test_pipelined_requests_are_answered_in_order_one_at_a_time(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    # The first request is the slowest: answering as handlers finish would reorder.
    delays = {"/a": 0.05, "/b": 0.02, "/c": 0.0}
    active = 0
    most_active = 0

    async def slow_echo(request: aserve.Request) -> aserve.Response:
        nonlocal active, most_active
        active += 1
        most_active = max(most_active, active)
        try:
            await asyncio.sleep(delays[request.path])
        finally:
            active -= 1
        return aserve.PlainTextResponse(f"answer {request.path}")

    async with serve(slow_echo) as server:
        client = await connect(server.port)
        await client.send(get("/a") + get("/b") + get("/c"))
        answers = [await client.response() for _ in range(3)]
    assert [reply.body for reply in answers] == [b"answer /a", b"answer /b", b"answer /c"]
    assert most_active == 1


async def test_pipelined_requests_split_across_sends(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    stream = get("/a") + get("/b") + get("/c", b"Connection: close\r\n")
    async with serve(echo_path) as server:
        client = await connect(server.port)
        # Cut inside the request line of /b and inside the headers of /c.
        cuts = [0, len(get("/a")) + 5, len(get("/a") + get("/b")) + 20, len(stream)]
        for start, end in zip(cuts, cuts[1:], strict=False):
            await client.send(stream[start:end])
        answers = [await client.response() for _ in range(3)]
        assert await client.read_until_close() == b""
    assert [reply.body for reply in answers] == [b"1.1 /a", b"1.1 /b", b"1.1 /c"]


async def test_pipelined_request_after_an_unread_content_length_body_is_framed_correctly(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    # The unread body looks like a request: if the engine forgot to skip it,
    # /smuggled would be answered.
    hidden = get("/smuggled")

    async def ignore_body(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(f"saw {request.method} {request.path}")

    async with serve(ignore_body) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: "
            + str(len(hidden)).encode()
            + b"\r\n\r\n"
            + hidden
            + get("/next")
        )
        first = await client.response()
        second = await client.response()
        await client.assert_silent(0.1)
    assert first.body == b"saw POST /upload"
    assert second.body == b"saw GET /next"


async def test_pipelined_request_after_an_unread_chunked_body_is_framed_correctly(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    hidden = get("/smuggled")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(hidden), hidden)

    async def ignore_body(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(f"saw {request.method} {request.path}")

    async with serve(ignore_body) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked
            + get("/next")
        )
        first = await client.response()
        second = await client.response()
        await client.assert_silent(0.1)
    assert first.body == b"saw POST /upload"
    assert second.body == b"saw GET /next"


async def test_large_unread_body_closes_the_connection_after_the_response(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    # Reading 10 MiB only to throw it away is not worth a connection.
    async def early(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("answered early")

    async with serve(early, max_body_size=None) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /big HTTP/1.1\r\nHost: test\r\nContent-Length: 10485760\r\n\r\n" + b"x" * 1024
        )
        reply = await client.response()
        assert await client.read_until_close() == b""
        await client.close()
    assert (reply.status, reply.body) == (200, b"answered early")
    assert (reply.header("connection") or "").lower() == "close"


async def test_unread_chunked_body_is_discarded_only_up_to_a_limit(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def early(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("answered early")

    async with serve(early, max_body_size=None) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /endless HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"400\r\n"
            + b"x" * 1024
            + b"\r\n"
        )
        reply = await client.response()

        async def keep_sending() -> None:
            chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
            with contextlib.suppress(ConnectionError):
                for _ in range(256):  # 16 MiB, never the last chunk
                    await client.send(chunk)

        sender = asyncio.create_task(keep_sending())
        try:
            # The server drops some of it, then gives up on the connection.
            with contextlib.suppress(ConnectionResetError):
                await client.read_until_close()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await client.close()
    assert (reply.status, reply.body) == (200, b"answered early")


# --------------------------------------------------------------------------- idle timeout


async def test_connection_that_never_sends_is_closed_quietly_after_keep_alive_timeout(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(echo_path, keep_alive_timeout=0.2) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        client = await connect(server.port)
        assert await client.read_until_close() == b""
        waited = loop.time() - started
    assert 0.15 <= waited < 2.0


async def test_idle_keep_alive_connection_is_closed_after_keep_alive_timeout(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(echo_path, keep_alive_timeout=0.2) as server:
        loop = asyncio.get_running_loop()
        client = await connect(server.port)
        await client.send(get("/"))
        reply = await client.response()
        answered = loop.time()
        assert await client.read_until_close() == b""
        waited = loop.time() - answered
    assert reply.status == 200
    assert 0.15 <= waited < 2.0


async def test_keep_alive_timeout_does_not_cut_a_slow_handler(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def slow(request: aserve.Request) -> aserve.Response:
        # Longer than keep_alive_timeout: the connection is busy, not idle.
        await asyncio.sleep(0.4)
        return aserve.PlainTextResponse("worth the wait")

    async with serve(slow, keep_alive_timeout=0.2) as server:
        client = await connect(server.port)
        await client.send(get("/"))
        reply = await client.response()
    assert (reply.status, reply.body) == (200, b"worth the wait")


async def test_each_request_restarts_the_keep_alive_timer(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(echo_path, keep_alive_timeout=0.3) as server:
        client = await connect(server.port)
        # Four requests 0.15 s apart span 0.45 s > keep_alive_timeout.
        for index in range(4):
            await client.send(get(f"/{index}"))
            reply = await client.response()
            assert reply.body == f"1.1 /{index}".encode()
            await client.assert_silent(0.15)
