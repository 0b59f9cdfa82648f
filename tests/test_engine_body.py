"""Request bodies: Content-Length and chunked uploads, the body helpers, and
`Expect: 100-continue` answered only when the handler reads."""

from __future__ import annotations

import asyncio
import json

import h11
from conftest import READ_TIMEOUT, ConnectFactory, ServeFactory

import aserve


async def echo_body(request: aserve.Request) -> aserve.Response:
    return aserve.Response(await request.body(), media_type="application/octet-stream")


def post(body_headers: bytes, path: str = "/") -> bytes:
    return b"POST " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n" + body_headers + b"\r\n"


async def test_content_length_body_is_delivered_to_the_handler(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    payload = bytes(range(256)) * 64
    async with serve(echo_body) as server:
        client = await connect(server.port)
        await client.send(post(b"Content-Length: %d\r\n" % len(payload)))
        # The body arrives in pieces, after the head.
        for start in range(0, len(payload), 5000):
            await client.send(payload[start : start + 5000])
        reply = await client.response()
    assert reply.status == 200
    assert reply.body == payload


async def test_chunked_body_is_delivered_to_the_handler(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(echo_body) as server:
        client = await connect(server.port)
        await client.send(
            post(b"Transfer-Encoding: chunked\r\n")
            + b"5\r\nhello\r\n"
            + b"1;ext=value\r\n \r\n"
            + b"5\r\nworld\r\n"
            + b"0\r\nX-Trailer: ignored\r\n\r\n"
        )
        reply = await client.response()
        # The connection is reusable after a chunked upload.
        await client.send(post(b"Content-Length: 3\r\n") + b"abc")
        again = await client.response()
    assert reply.body == b"hello world"
    assert again.body == b"abc"


async def test_body_stream_yields_every_byte_in_order(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    payload = b"".join(b"%06d\n" % n for n in range(20000))

    async def count(request: aserve.Request) -> aserve.Response:
        chunks = [chunk async for chunk in request.stream()]
        assert all(chunks), "empty chunks from stream()"
        return aserve.Response(b"".join(chunks))

    async with serve(count) as server:
        client = await connect(server.port)
        await client.send(post(b"Content-Length: %d\r\n" % len(payload)) + payload)
        reply = await client.response()
    assert reply.body == payload


async def test_text_and_json_helpers_decode_the_body(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def decode(request: aserve.Request) -> aserve.Response:
        if request.path == "/json":
            return aserve.JSONResponse({"got": await request.json()})
        return aserve.PlainTextResponse((await request.text()).upper())

    document = json.dumps({"name": "zoë", "n": [1, 2]}).encode()
    text = "grüße".encode()
    async with serve(decode) as server:
        client = await connect(server.port)
        await client.send(
            post(
                b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(document), "/json"
            )
            + document
        )
        as_json = await client.response()
        await client.send(
            post(
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(text),
                "/text",
            )
            + text
        )
        as_text = await client.response()
    assert json.loads(as_json.body) == {"got": {"name": "zoë", "n": [1, 2]}}
    assert as_text.body.decode("utf-8") == "GRÜSSE"


async def test_request_without_body_reads_as_empty(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(echo_body) as server:
        client = await connect(server.port)
        await client.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        reply = await client.response()
    assert (reply.status, reply.body) == (200, b"")


# --------------------------------------------------------------------------- 100-continue

EXPECTING = b"Expect: 100-continue\r\nContent-Length: 5\r\n"


async def test_100_continue_is_sent_only_once_the_handler_reads(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    started = asyncio.Event()
    read_now = asyncio.Event()

    async def reluctant(request: aserve.Request) -> aserve.Response:
        started.set()
        await read_now.wait()
        return aserve.Response(await request.body())

    async with serve(reluctant) as server:
        client = await connect(server.port)
        await client.send(post(EXPECTING))
        async with asyncio.timeout(READ_TIMEOUT):
            await started.wait()
        # The handler runs but has not asked for the body: no 100 yet.
        await client.assert_silent(0.1)
        read_now.set()
        continue_ = await client.next_event("POST")
        assert isinstance(continue_, h11.InformationalResponse), continue_
        assert continue_.status_code == 100
        assert bytes(client.received).startswith(b"HTTP/1.1 100 Continue\r\n")
        await client.send(b"hello")
        reply = await client.response("POST")
    assert (reply.status, reply.body) == (200, b"hello")


async def test_no_100_continue_when_the_handler_answers_without_reading(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def refuse(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("not interested", status=403)

    async with serve(refuse) as server:
        client = await connect(server.port)
        await client.send(post(EXPECTING))
        first = await client.next_event("POST")
        assert isinstance(first, h11.Response), first
        assert first.status_code == 403
        await client.close()
    assert b" 100 " not in bytes(client.received).split(b"\r\n", 1)[0]
    assert not bytes(client.received).startswith(b"HTTP/1.1 100")


async def test_100_continue_is_sent_once_for_a_streamed_read(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async def stream_in(request: aserve.Request) -> aserve.Response:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return aserve.PlainTextResponse(str(size))

    async with serve(stream_in) as server:
        client = await connect(server.port)
        await client.send(post(b"Expect: 100-continue\r\nContent-Length: 10\r\n"))
        continue_ = await client.next_event("POST")
        assert isinstance(continue_, h11.InformationalResponse)
        await client.send(b"01234")
        await client.send(b"56789")
        reply = await client.response("POST")
    assert reply.body == b"10"
    assert bytes(client.received).count(b"100 Continue") == 1
