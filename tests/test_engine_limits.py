"""Limits, timeouts and errors: each has a defined answer, the connection closes
after it, and the server keeps serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
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
    parse_events,
    replies,
)

import aserve

HOST = b"Host: test\r\n"


def error_reply(events: list[Any], status: int) -> Reply:
    """The single answer on a connection that the server then closed."""
    [reply] = replies(events)
    assert reply.status == status, reply
    assert isinstance(events[-1], h11.ConnectionClosed), events
    return reply


class Recorder:
    """A handler that answers 200 and remembers the paths it was called for."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: aserve.Request) -> aserve.Response:
        self.paths.append(request.path)
        await request.body()
        return aserve.PlainTextResponse("ok")


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("complete", [True, False], ids=["complete-head", "unfinished-head"])
async def test_head_larger_than_max_head_size_gets_431(serve: ServeFactory, complete: bool) -> None:
    handler = Recorder()
    head = b"GET /big HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 2000 + b"\r\n"
    async with serve(handler, max_head_size=1024) as server:
        events = await exchange(server.port, head + (b"\r\n" if complete else b""))
        error_reply(events, 431)
        await assert_serving(server.port)
    assert handler.paths == ["/"]


async def test_request_target_longer_than_max_url_size_gets_414(serve: ServeFactory) -> None:
    handler = Recorder()
    longest = "/" + "a" * 255
    async with serve(handler, max_url_size=256) as server:
        accepted = await exchange(
            server.port,
            b"GET " + longest.encode() + b" HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n",
        )
        assert replies(accepted)[0].status == 200
        rejected = await exchange(
            server.port, b"GET " + longest.encode() + b"b HTTP/1.1\r\n" + HOST + b"\r\n"
        )
        error_reply(rejected, 414)
        await assert_serving(server.port)
    assert handler.paths == [longest, "/"]


async def test_request_target_with_query_counts_toward_max_url_size(serve: ServeFactory) -> None:
    handler = Recorder()
    async with serve(handler, max_url_size=256) as server:
        events = await exchange(
            server.port, b"GET /?q=" + b"x" * 300 + b" HTTP/1.1\r\n" + HOST + b"\r\n"
        )
        error_reply(events, 414)
    assert handler.paths == []


async def test_content_length_above_max_body_size_gets_413_before_the_handler(
    serve: ServeFactory,
) -> None:
    handler = Recorder()
    async with serve(handler, max_body_size=100) as server:
        fits = await exchange(
            server.port,
            b"POST /fits HTTP/1.1\r\n"
            + HOST
            + b"Connection: close\r\nContent-Length: 100\r\n\r\n"
            + b"x" * 100,
        )
        assert replies(fits)[0].status == 200
        events = await exchange(
            server.port,
            b"POST /upload HTTP/1.1\r\n" + HOST + b"Content-Length: 101\r\n\r\n" + b"x" * 101,
        )
        error_reply(events, 413)
        await assert_serving(server.port)
    assert handler.paths == ["/fits", "/"]


async def test_too_large_body_with_expect_100_continue_gets_413_and_no_100(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    handler = Recorder()
    async with serve(handler, max_body_size=100) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /upload HTTP/1.1\r\n"
            + HOST
            + b"Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
        )
        reply = await client.response("POST")
        assert await client.read_until_close() == b""
        await client.close()
    assert reply.status == 413
    assert reply.informational == []
    assert handler.paths == []


async def test_chunked_body_growing_past_max_body_size_gets_413(serve: ServeFactory) -> None:
    handler = Recorder()
    chunk = b"x" * 60
    body = b"3c\r\n" + chunk + b"\r\n" + b"3c\r\n" + chunk + b"\r\n0\r\n\r\n"
    async with serve(handler, max_body_size=100) as server:
        events = await exchange(
            server.port,
            b"POST /upload HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + body,
        )
        error_reply(events, 413)
        await assert_serving(server.port)


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n" + HOST + b"\r\n",
        b"GET / HTTP/1.1\r\n" + HOST + b"No colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nx",
    ],
    ids=[
        "no-request-line",
        "space-in-target",
        "header-without-colon",
        "missing-host",
        "bad-content-length",
        "conflicting-content-lengths",
    ],
)
async def test_malformed_request_gets_400(serve: ServeFactory, request_bytes: bytes) -> None:
    handler = Recorder()
    async with serve(handler) as server:
        events = await exchange(server.port, request_bytes)
        error_reply(events, 400)
        await assert_serving(server.port)
    assert handler.paths == ["/"]


async def test_content_length_and_transfer_encoding_together_get_400(serve: ServeFactory) -> None:
    # RFC 9112 section 6.1: a request smuggling vector; h11 itself lets
    # Transfer-Encoding win, so the engine has to refuse it.
    handler = Recorder()
    async with serve(handler) as server:
        events = await exchange(
            server.port,
            b"POST /both HTTP/1.1\r\n"
            + HOST
            + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        error_reply(events, 400)
        await assert_serving(server.port)
    assert handler.paths == ["/"]


@pytest.mark.parametrize(
    ("coding", "status"),
    [(b"gzip", 400), (b"gzip, chunked", 501)],
    ids=["chunked-not-final", "unknown-coding-before-chunked"],
)
async def test_transfer_encoding_other_than_chunked_is_refused(
    serve: ServeFactory, coding: bytes, status: int
) -> None:
    # RFC 9112 6.3: a body whose last coding is not chunked cannot be framed
    # (400, close); 6.1: an unknown coding before a final chunked is a 501.
    handler = Recorder()
    async with serve(handler) as server:
        events = await exchange(
            server.port,
            b"POST /gz HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: " + coding + b"\r\n\r\nxxxx",
        )
        error_reply(events, status)
        await assert_serving(server.port)
    assert handler.paths == ["/"]


async def test_invalid_chunk_framing_gets_400_or_a_close(serve: ServeFactory) -> None:
    handler = Recorder()
    async with serve(handler) as server:
        events = await exchange(
            server.port,
            b"POST /upload HTTP/1.1\r\n"
            + HOST
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"zz\r\nhello\r\n0\r\n\r\n",
        )
        assert isinstance(events[-1], h11.ConnectionClosed), events
        assert [reply.status for reply in replies(events)] in ([400], [])
        await assert_serving(server.port)


# --------------------------------------------------------------------------- timeouts


async def test_unfinished_head_gets_408_after_header_timeout(serve: ServeFactory) -> None:
    loop = asyncio.get_running_loop()
    async with serve(Recorder(), header_timeout=0.2) as server:
        started = loop.time()
        events = await exchange(server.port, b"GET / HTTP/1.1\r\n" + HOST)
        waited = loop.time() - started
        error_reply(events, 408)
        await assert_serving(server.port)
    assert 0.15 <= waited < 2.0


async def test_head_trickled_slowly_still_gets_408(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    # header_timeout counts from the first byte of the head: new bytes do not
    # extend it, or one slow client could hold a connection forever.
    loop = asyncio.get_running_loop()

    async with serve(Recorder(), header_timeout=0.3) as server:
        client = await connect(server.port)

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    await asyncio.sleep(0.05)
                    await client.send(b"X-Slow: 1\r\n")

        await client.send(b"GET / HTTP/1.1\r\n" + HOST)
        started = loop.time()
        trickler = asyncio.create_task(trickle())
        try:
            reply = await client.response()
        finally:
            trickler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await trickler
        waited = loop.time() - started
        await client.close()
    assert reply.status == 408
    assert 0.25 <= waited < 2.0


# --------------------------------------------------------------------------- overload


async def test_connection_past_max_connections_gets_503_and_others_keep_working(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    request = b"GET / HTTP/1.1\r\n" + HOST + b"\r\n"
    async with serve(Recorder(), max_connections=2) as server:
        first = await connect(server.port)
        second = await connect(server.port)
        for client in (first, second):
            await client.send(request)
            assert (await client.response()).status == 200

        newcomer = await connect(server.port)
        await newcomer.send(request)
        rest = await newcomer.read_until_close()
        answers = [reply.status for reply in replies(parse_events(rest))]
        assert answers in ([503], []), rest

        for client in (first, second):
            await client.send(request)
            assert (await client.response()).status == 200


# --------------------------------------------------------------------------- handler errors


async def raises(request: aserve.Request) -> aserve.Response:
    if request.path == "/boom":
        raise RuntimeError("secret-detail-1234")
    return aserve.PlainTextResponse("ok")


def _error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name.startswith("aserve.error") and record.levelno >= logging.ERROR
    ]


async def test_handler_exception_gets_500_without_traceback_and_is_logged(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="aserve.error"):
        async with serve(raises) as server:
            events = await exchange(server.port, b"GET /boom HTTP/1.1\r\n" + HOST + b"\r\n")
            reply = error_reply(events, 500)
            await assert_serving(server.port)
    assert (reply.header("content-type") or "").startswith("text/plain")
    assert b"Internal Server Error" in reply.body
    assert b"Traceback" not in reply.body
    assert b"secret-detail-1234" not in reply.body
    records = _error_records(caplog)
    assert records, caplog.records
    assert any(
        (record.exc_info and record.exc_info[0] is RuntimeError)
        or "secret-detail-1234" in record.getMessage()
        for record in records
    ), records


async def test_handler_exception_with_debug_shows_the_traceback(serve: ServeFactory) -> None:
    async with serve(raises, debug=True) as server:
        events = await exchange(server.port, b"GET /boom HTTP/1.1\r\n" + HOST + b"\r\n")
        reply = error_reply(events, 500)
        await assert_serving(server.port)
    assert b"Traceback" in reply.body
    assert b"RuntimeError: secret-detail-1234" in reply.body


async def test_http_exception_answers_with_its_status_and_a_plain_body(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def teapot(request: aserve.Request) -> aserve.Response:
        if request.path == "/tea":
            raise aserve.HTTPException(418, "short and stout")
        return aserve.PlainTextResponse("ok")

    async with serve(teapot) as server:
        client = await connect(server.port)
        await client.send(b"GET /tea HTTP/1.1\r\n" + HOST + b"\r\n")
        reply = await client.response()
        # The answer is complete and framed: the connection either carries the
        # next request or is closed, never a mix.
        if (reply.header("connection") or "").lower() == "close":
            assert await client.read_until_close() == b""
        else:
            await client.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
            assert (await client.response()).body == b"ok"
        await assert_serving(server.port)
    assert reply.status == 418
    assert (reply.header("content-type") or "").startswith("text/plain")
    assert reply.body.strip() == b"short and stout"


async def test_http_exception_headers_are_sent(serve: ServeFactory) -> None:
    async def protected(request: aserve.Request) -> aserve.Response:
        raise aserve.HTTPException(401, headers={"WWW-Authenticate": 'Basic realm="x"'})

    async with serve(protected) as server:
        events = await exchange(
            server.port, b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
        )
    [reply] = replies(events)
    assert reply.status == 401
    assert reply.header("www-authenticate") == 'Basic realm="x"'
    assert reply.body.strip() == b"Unauthorized"


async def test_handler_error_after_the_head_went_out_closes_the_connection(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def breaks_midway() -> AsyncIterator[bytes]:
        yield b"partial-"
        raise RuntimeError("stream broke")

    async def handler(request: aserve.Request) -> aserve.Response:
        if request.path == "/":
            return aserve.PlainTextResponse("ok")
        return aserve.StreamingResponse(breaks_midway())

    async with serve(handler) as server:
        client = await connect(server.port)
        await client.send(b"GET /stream HTTP/1.1\r\n" + HOST + b"\r\n")
        async with asyncio.timeout(READ_TIMEOUT):
            await client.read_until_close()
        await assert_serving(server.port)
    wire = bytes(client.received)
    assert wire.startswith(b"HTTP/1.1 200 ")
    assert b"partial-" in wire
    # A truncated chunked body: no last-chunk, so the client knows it is incomplete.
    assert not wire.endswith(b"0\r\n\r\n")
    assert wire.count(b"HTTP/1.1 ") == 1
