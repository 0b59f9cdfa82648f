"""Response framing on the wire: Content-Length, chunked, close-delimited, HEAD,
and the headers the engine adds itself (Date, Server)."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import AsyncIterator

import h11
import pytest
from conftest import ConnectFactory, ServeFactory, exchange, replies

import aserve

GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"

# RFC 7231 section 7.1.1.1: IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


async def hello(request: aserve.Request) -> aserve.Response:
    return aserve.Response(b"hello world", media_type="text/plain")


async def three_chunks() -> AsyncIterator[bytes]:
    for part in (b"one", b"two", b"three"):
        yield part


async def streaming(request: aserve.Request) -> aserve.Response:
    return aserve.StreamingResponse(three_chunks(), media_type="text/plain")


async def test_response_with_known_length_has_content_length(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(hello) as server:
        client = await connect(server.port)
        await client.send(GET)
        reply = await client.response()
    assert reply.status == 200
    assert reply.header("content-length") == "11"
    assert not reply.has_header("transfer-encoding")
    assert (reply.header("content-type") or "").startswith("text/plain")
    assert reply.body == b"hello world"


async def test_empty_response_has_content_length_zero(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def empty(request: aserve.Request) -> aserve.Response:
        return aserve.Response()

    async with serve(empty) as server:
        client = await connect(server.port)
        await client.send(GET)
        reply = await client.response()
    assert (reply.status, reply.header("content-length"), reply.body) == (200, "0", b"")


async def test_no_content_response_has_no_length_and_no_body(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def no_content(request: aserve.Request) -> aserve.Response:
        return aserve.Response(status=204)

    async with serve(no_content) as server:
        client = await connect(server.port)
        await client.send(GET + GET)
        first = await client.response()
        second = await client.response()
    assert first.status == second.status == 204
    assert not first.has_header("content-length")
    assert not first.has_header("transfer-encoding")
    assert client.received.count(b"HTTP/1.1 204 ") == 2


async def test_streaming_response_is_chunked_on_http11(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(streaming) as server:
        client = await connect(server.port)
        await client.send(GET)
        reply = await client.response()
        # The connection stays usable after a chunked body.
        await client.send(GET)
        again = await client.response()
    assert reply.status == 200
    assert reply.header("transfer-encoding") == "chunked"
    assert not reply.has_header("content-length")
    assert reply.body == again.body == b"onetwothree"
    head, _, wire_body = bytes(client.received).partition(b"\r\n\r\n")
    assert wire_body.split(b"HTTP/1.1 ")[0].endswith(b"0\r\n\r\n")


async def test_streaming_response_accepts_a_sync_iterable(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def sync_stream(request: aserve.Request) -> aserve.Response:
        return aserve.StreamingResponse(iter([b"alpha", b"", b"beta"]))

    async with serve(sync_stream) as server:
        client = await connect(server.port)
        await client.send(GET)
        reply = await client.response()
    assert reply.header("transfer-encoding") == "chunked"
    assert reply.body == b"alphabeta"


async def test_streaming_response_is_close_delimited_on_http10(serve: ServeFactory) -> None:
    async with serve(streaming) as server:
        events = await exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
    [reply] = replies(events)
    assert reply.status == 200
    assert not reply.has_header("transfer-encoding")
    assert not reply.has_header("content-length")
    assert reply.body == b"onetwothree"
    assert isinstance(events[-1], h11.ConnectionClosed)


async def test_streaming_response_with_declared_length_is_not_chunked(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def declared(request: aserve.Request) -> aserve.Response:
        return aserve.StreamingResponse(three_chunks(), headers={"Content-Length": "11"})

    async with serve(declared) as server:
        client = await connect(server.port)
        await client.send(GET)
        reply = await client.response()
    assert reply.header("content-length") == "11"
    assert not reply.has_header("transfer-encoding")
    assert reply.body == b"onetwothree"


async def test_head_sends_headers_only_and_keeps_the_connection(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    methods = []

    async def recording(request: aserve.Request) -> aserve.Response:
        methods.append(request.method)
        return await hello(request)

    async with serve(recording) as server:
        client = await connect(server.port)
        await client.send(GET)
        get = await client.response()
        await client.send(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n")
        head = await client.response("HEAD")
        # h11 frames a HEAD answer as empty: body bytes sent by mistake would
        # show up as garbage in front of this next response.
        await client.send(GET)
        after = await client.response()
    assert methods == ["GET", "HEAD", "GET"]
    assert head.status == 200
    assert head.header("content-length") == get.header("content-length") == "11"
    assert head.body == b""
    assert after.body == b"hello world"
    assert bytes(client.received).count(b"hello world") == 2


async def test_pipelined_head_then_get_are_framed_apart(serve: ServeFactory) -> None:
    async with serve(hello) as server:
        events = await exchange(
            server.port,
            b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
            methods=["HEAD", "GET"],
        )
    head, get = replies(events)
    assert (head.header("content-length"), head.body) == ("11", b"")
    assert get.body == b"hello world"


async def test_date_header_is_an_rfc7231_date_close_to_now(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(hello) as server:
        client = await connect(server.port)
        await client.send(GET)
        reply = await client.response()
    date = reply.header("date")
    assert date is not None
    assert IMF_FIXDATE.fullmatch(date), date
    sent = email.utils.parsedate_to_datetime(date).timestamp()
    assert abs(sent - time.time()) < 5


async def test_date_header_is_absent_when_disabled(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(hello, date_header=False) as server:
        client = await connect(server.port)
        await client.send(GET)
        reply = await client.response()
    assert not reply.has_header("date")
    assert reply.body == b"hello world"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "aserve"),
        ({"server_header": "edge/2.1"}, "edge/2.1"),
        ({"server_header": ""}, None),
    ],
    ids=["default", "custom", "disabled"],
)
async def test_server_header(
    serve: ServeFactory, connect: ConnectFactory, options: dict[str, str], expected: str | None
) -> None:
    async with serve(hello, **options) as server:
        client = await connect(server.port)
        await client.send(GET)
        reply = await client.response()
    assert reply.header("server") == expected


async def test_request_exposes_method_target_version_headers_and_client(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def describe(request: aserve.Request) -> aserve.Response:
        assert request.client is not None
        return aserve.JSONResponse(
            {
                "method": request.method,
                "path": request.path,
                "raw_path": request.raw_path.decode("latin-1"),
                "query_string": request.query_string.decode("latin-1"),
                "http_version": request.http_version,
                "x_custom": request.headers.get("x-CUSTOM"),
                "missing": request.headers.get("x-missing"),
                "client": [request.client[0], request.client[1]],
            }
        )

    async with serve(describe) as server:
        client = await connect(server.port)
        await client.send(
            b"DELETE /a%20b/c?x=1&y=%20 HTTP/1.1\r\nHost: test\r\nX-Custom: Value 1\r\n\r\n"
        )
        reply = await client.response()
    assert (reply.header("content-type") or "").startswith("application/json")
    assert json.loads(reply.body) == {
        "method": "DELETE",
        "path": "/a b/c",
        "raw_path": "/a%20b/c",
        "query_string": "x=1&y=%20",
        "http_version": "1.1",
        "x_custom": "Value 1",
        "missing": None,
        "client": ["127.0.0.1", client.client_port],
    }
