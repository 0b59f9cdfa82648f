"""WebSockets over the engine, with clients nobody here wrote (the `websockets`
library) and a raw one for bytes no client would send; on both event loops.

The native API (`App.websocket`) end to end: echo, large messages and the size
limit, close codes both ways, a client that vanishes, pings, subprotocols,
compression, a thousand sessions; the answers to bad handshakes and bad
frames; backpressure both ways; shutdown; TLS; what the logs and the metrics
say. ASGI, Starlette and FastAPI are in test_engine_websocket_asgi.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import (
    READ_TIMEOUT,
    ConnectFactory,
    ServeFactory,
    exchange,
    raw_socket,
    replies,
    send_until_blocked,
    settle,
)
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsclient import BINARY, CLOSE, PING, PONG, TEXT, RawWebSocket, close_payload, frame, handshake

import aserve
from aserve.wsgi import WSGIHandler

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def client(
    server: aserve.Server, path: str = "/ws", scheme: str = "ws", **options: Any
) -> AsyncIterator[ClientConnection]:
    """The `websockets` library's client on `path`."""
    options.setdefault("proxy", None)
    options.setdefault("open_timeout", READ_TIMEOUT)
    options.setdefault("close_timeout", READ_TIMEOUT)
    async with ws_connect(f"{scheme}://127.0.0.1:{server.port}{path}", **options) as conn:
        yield conn


class Seen:
    """What handlers saw, for the test to await."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[aserve.WebSocketDisconnect] = (
            asyncio.get_running_loop().create_future()
        )
        self.release = asyncio.Event()
        self.sent = 0
        self.send_error: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()


def make_app(seen: Seen | None = None) -> aserve.App:
    app = aserve.App()

    @app.get("/")
    async def home(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("hello")

    @app.websocket("/ws")
    async def echo(ws: aserve.WebSocket) -> None:
        await ws.accept()
        async for message in ws:
            await ws.send(message)

    @app.get("/both")
    async def both_http(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("plain")

    @app.websocket("/both")
    async def both_ws(ws: aserve.WebSocket) -> None:
        await ws.accept()
        await ws.send_text("websocket")

    @app.websocket("/close/{code:int}")
    async def close_with(ws: aserve.WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.close(ws.path_params["code"], "bye now")

    @app.websocket("/deny")
    async def deny(ws: aserve.WebSocket) -> None:
        pass

    @app.websocket("/deny-401")
    async def deny_401(ws: aserve.WebSocket) -> None:
        await ws.send_denial_response(
            aserve.PlainTextResponse("who?", status=401, headers={"www-authenticate": "Basic"})
        )

    @app.websocket("/raise")
    async def fail_late(ws: aserve.WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        raise RuntimeError("boom after accept")

    @app.websocket("/raise-early")
    async def fail_early(ws: aserve.WebSocket) -> None:
        raise RuntimeError("boom before accept")

    @app.websocket("/watch")
    async def watch(ws: aserve.WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.receive()
        except aserve.WebSocketDisconnect as exc:
            if seen is not None:
                seen.closed.set_result(exc)

    @app.websocket("/hold")
    async def hold(ws: aserve.WebSocket) -> None:
        # Accepts, then reads nothing until told to; then counts what came.
        await ws.accept()
        assert seen is not None
        await seen.release.wait()
        count = 0
        with contextlib.suppress(aserve.WebSocketDisconnect):
            while True:
                await ws.receive_bytes()
                count += 1
                if count % 16 == 0:
                    await ws.send_text(str(count))

    @app.websocket("/flood")
    async def flood(ws: aserve.WebSocket) -> None:
        await ws.accept()
        assert seen is not None
        chunk = bytes(256 * 1024)
        try:
            while True:
                await ws.send_bytes(chunk)
                seen.sent += 1
        except aserve.WebSocketDisconnect as exc:
            seen.send_error.set_result(exc)

    @app.websocket("/subprotocol")
    async def subprotocol(ws: aserve.WebSocket) -> None:
        chosen = "v1" if "v1" in ws.subprotocols else None
        await ws.accept(subprotocol=chosen, headers={"x-chosen": chosen or "none"})
        await ws.send_text(f"{chosen} of {','.join(ws.subprotocols)}")

    @app.websocket("/bad-subprotocol")
    async def bad_subprotocol(ws: aserve.WebSocket) -> None:
        await ws.accept(subprotocol="never-offered")

    @app.websocket("/rooms/{room}")
    async def room(ws: aserve.WebSocket) -> None:
        await ws.accept()
        await ws.send_json(
            {"room": ws.path_params["room"], "token": ws.query_params.get("token"), "url": ws.url}
        )

    @app.websocket("/typed")
    async def typed(ws: aserve.WebSocket) -> None:
        await ws.accept()
        value = await ws.receive_json()
        await ws.send_json({"got": value})
        async for text in ws.iter_text():
            await ws.send_text(text.upper())

    return app


# --------------------------------------------------------------------------- echo and sizes


async def test_text_and_binary_echo(serve: ServeFactory) -> None:
    async with serve(make_app()) as server, client(server) as conn:
        await conn.send("hello \u2603")
        assert await conn.recv() == "hello \u2603"
        await conn.send(b"\x00\x01\xff")
        assert await conn.recv() == b"\x00\x01\xff"
        await conn.send("")
        assert await conn.recv() == ""


@pytest.mark.parametrize("size", [1024 * 1024, 15 * 1024 * 1024])
async def test_large_messages_echo_whole(serve: ServeFactory, size: int) -> None:
    payload = os.urandom(size)
    async with serve(make_app()) as server, client(server, max_size=None, compression=None) as conn:
        await conn.send(payload)
        assert await conn.recv() == payload
        await conn.send(payload[: size // 2].hex())  # text, twice the bytes
        assert await conn.recv() == payload[: size // 2].hex()


async def test_a_compressed_1_mib_message_echoes(serve: ServeFactory) -> None:
    text = "".join(f"line {i} of a log\n" for i in range(60_000))[: 1024 * 1024]
    async with serve(make_app()) as server, client(server, max_size=None) as conn:
        await conn.send(text)
        assert await conn.recv() == text


async def test_a_message_over_the_default_limit_closes_with_1009(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "aserve.error")
    async with serve(make_app()) as server:
        # Refused on the frame's head, while the client is still sending: no
        # `async with`, whose close() would abort a transport already gone
        # (an asyncio bug this path can reach on the stdlib loop).
        url = f"ws://127.0.0.1:{server.port}/ws"
        conn = await ws_connect(url, proxy=None, max_size=None, compression=None)
        with pytest.raises(ConnectionClosed) as closed:
            await conn.send(bytes(16 * 1024 * 1024 + 1))
            await conn.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await asyncio.wait_for(conn.wait_closed(), READ_TIMEOUT)
        assert any("1009" in r.getMessage() for r in caplog.records if r.name == "aserve.error")
        async with client(server) as conn:  # the server goes on serving
            await conn.send("still here")
            assert await conn.recv() == "still here"


async def test_ws_max_size_counts_inflated_bytes(serve: ServeFactory) -> None:
    async with serve(make_app(), ws_max_size=1000) as server:
        async with client(server) as conn:
            await conn.send("a" * 1000)
            assert await conn.recv() == "a" * 1000
            with pytest.raises(ConnectionClosed) as closed:
                await conn.send("a" * 1001)  # a few bytes on the wire, compressed
                await conn.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# --------------------------------------------------------------------------- closing


@pytest.mark.parametrize("code", [1000, 4001])
async def test_the_server_closes_with_its_code_and_reason(serve: ServeFactory, code: int) -> None:
    async with serve(make_app()) as server, client(server, f"/close/{code}") as conn:
        await conn.send("one")
        assert await conn.recv() == "one"
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, "bye now")


async def test_the_client_closes_and_the_handler_sees_its_code(serve: ServeFactory) -> None:
    seen = Seen()
    async with serve(make_app(seen)) as server:
        async with client(server, "/watch") as conn:
            await conn.close(4002, "later")
            assert conn.close_code == 4002  # the server answered with the same code
        exc = await asyncio.wait_for(seen.closed, READ_TIMEOUT)
        assert (exc.code, exc.reason) == (4002, "later")


async def test_a_client_that_vanishes_is_1006_to_the_handler(serve: ServeFactory) -> None:
    seen = Seen()
    async with serve(make_app(seen)) as server:
        raw = await RawWebSocket.connect(server.port, handshake("/watch"))
        assert raw.status == 101
        raw.writer.transport.abort()  # no close frame, a reset
        exc = await asyncio.wait_for(seen.closed, READ_TIMEOUT)
        assert exc.code == 1006


async def test_a_handler_that_returns_closes_1000(serve: ServeFactory) -> None:
    async with serve(make_app()) as server, client(server, "/both") as conn:
        assert await conn.recv() == "websocket"
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


async def test_a_handler_that_raises_after_accept_closes_1011_with_one_line(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve")
    async with serve(make_app()) as server:
        async with client(server, "/raise") as conn:
            await conn.send("go")
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        lines = [r for r in caplog.records if r.name == "aserve.error"]
        assert len(lines) == 1 and "1011" in lines[0].getMessage()
        assert lines[0].exc_info is not None and "boom after accept" in str(lines[0].exc_info[1])


async def test_a_handler_that_does_not_accept_gives_403(serve: ServeFactory) -> None:
    async with serve(make_app()) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with client(server, "/deny"):
                pass
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as refused:
            async with client(server, "/deny-401"):
                pass
        assert refused.value.response.status_code == 401
        assert refused.value.response.headers["www-authenticate"] == "Basic"


async def test_a_handler_that_raises_before_accept_gives_500(serve: ServeFactory) -> None:
    async with serve(make_app()) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with client(server, "/raise-early"):
                pass
        assert refused.value.response.status_code == 500


# --------------------------------------------------------------------------- pings


async def test_a_client_that_does_not_answer_pings_is_closed_1011(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "aserve.error")
    async with serve(make_app(), ws_ping_interval=0.1, ws_ping_timeout=0.2) as server:
        raw = await RawWebSocket.connect(server.port)
        try:
            first = await raw.read_frame()
            assert first is not None and first.opcode == PING
            close = await raw.read_close()
            assert close.code == 1011 and close.reason == "keepalive ping timeout"
            assert await raw.wait_closed() == b""
        finally:
            await raw.close()
    assert any("ws_ping_timeout" in r.getMessage() for r in caplog.records)


async def test_a_client_that_answers_pings_stays(serve: ServeFactory) -> None:
    async with serve(make_app(), ws_ping_interval=0.1, ws_ping_timeout=0.2) as server:
        raw = await RawWebSocket.connect(server.port)
        try:
            for _ in range(4):
                ping = await raw.read_frame()
                assert ping is not None and ping.opcode == PING
                await raw.send(frame(PONG, ping.payload))
            await raw.send(frame(TEXT, b"alive"))
            while (echo := await raw.read_frame()) is not None and echo.opcode == PING:
                await raw.send(frame(PONG, echo.payload))
            assert echo is not None and echo.payload == b"alive"
        finally:
            await raw.close()


async def test_the_servers_answers_client_pings(serve: ServeFactory) -> None:
    async with serve(make_app()) as server, client(server) as conn:
        pong = await conn.ping(b"are you there")
        await asyncio.wait_for(pong, READ_TIMEOUT)


# --------------------------------------------------------------------------- negotiation


async def test_subprotocol_negotiation(serve: ServeFactory) -> None:
    async with serve(make_app()) as server:
        async with client(server, "/subprotocol", subprotocols=["v2", "v1"]) as conn:
            assert conn.subprotocol == "v1"
            assert conn.response is not None and conn.response.headers["x-chosen"] == "v1"
            assert await conn.recv() == "v1 of v2,v1"
        async with client(server, "/subprotocol") as conn:
            assert conn.subprotocol is None
            assert await conn.recv() == "None of "
        with pytest.raises(InvalidStatus) as refused:  # ValueError before the 101: a 500
            async with client(server, "/bad-subprotocol", subprotocols=["v1"]):
                pass
        assert refused.value.response.status_code == 500


async def test_permessage_deflate_negotiated_and_not(serve: ServeFactory) -> None:
    async with serve(make_app()) as server:
        async with client(server) as conn:
            assert [e.name for e in conn.protocol.extensions] == ["permessage-deflate"]
            await conn.send("z" * 10_000)
            assert await conn.recv() == "z" * 10_000
        async with client(server, compression=None) as conn:
            assert conn.protocol.extensions == []
            await conn.send("z" * 10_000)
            assert await conn.recv() == "z" * 10_000
        # On the wire: the reply to a compressible message is compressed (RSV1).
        offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
        raw = await RawWebSocket.connect(server.port, handshake(extra=(offer,)))
        try:
            assert raw.header("sec-websocket-extensions") == (
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
            )
            await raw.send(frame(TEXT, b"z" * 10_000))
            reply = await raw.read_frame()
            assert reply is not None and reply.rsv == 4 and len(reply.payload) < 200
        finally:
            await raw.close()
    async with serve(make_app(), ws_per_message_deflate=False) as server:
        async with client(server) as conn:
            assert conn.protocol.extensions == []
            await conn.send("z" * 10_000)
            assert await conn.recv() == "z" * 10_000


# --------------------------------------------------------------------------- many


async def test_a_thousand_concurrent_sessions(serve: ServeFactory) -> None:
    async with serve(make_app()) as server:
        ready = asyncio.Event()
        opened = 0

        async def one(i: int) -> str:
            nonlocal opened
            async with client(server, compression=None, open_timeout=30) as conn:
                opened += 1
                if opened == 1000:
                    ready.set()
                await asyncio.wait_for(ready.wait(), 30)  # all open at once
                await conn.send(f"session {i}")
                return str(await conn.recv())

        async with asyncio.timeout(45):
            answers = await asyncio.gather(*(one(i) for i in range(1000)))
        assert answers == [f"session {i}" for i in range(1000)]


# --------------------------------------------------------------------------- routes and plain HTTP


async def test_plain_http_to_websocket_routes(serve: ServeFactory) -> None:
    async with serve(make_app()) as server:
        events = await exchange(
            server.port,
            b"GET /ws HTTP/1.1\r\nHost: t\r\n\r\n"
            b"HEAD /ws HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /ws HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
            b"GET /both HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            ["GET", "HEAD", "POST", "GET"],
        )
        upgrade, head, post, both = replies(events)
        assert upgrade.status == 426 and upgrade.header("upgrade") == "websocket"
        assert head.status == 426
        assert post.status == 405 and "GET" in (post.header("allow") or "")
        assert both.status == 200 and both.body == b"plain"
        async with client(server, "/both") as conn:
            assert await conn.recv() == "websocket"


async def test_an_upgrade_to_an_http_route_is_plain_http_on_a_kept_connection(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(make_app()) as server:
        conn = await connect(server.port)
        await conn.send(handshake("/"))
        reply = await conn.response()
        assert reply.status == 200 and reply.body == b"hello"
        await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await conn.response()).status == 200


async def test_path_params_query_and_url(serve: ServeFactory) -> None:
    async with serve(make_app()) as server, client(server, "/rooms/blue?token=abc") as conn:
        data = json.loads(await conn.recv())
        assert data == {
            "room": "blue",
            "token": "abc",
            "url": f"ws://127.0.0.1:{server.port}/rooms/blue?token=abc",
        }


async def test_typed_receives(serve: ServeFactory) -> None:
    async with serve(make_app()) as server:
        async with client(server, "/typed") as conn:
            await conn.send('{"a": [1, 2]}')
            assert json.loads(await conn.recv()) == {"got": {"a": [1, 2]}}
            await conn.send("shout")
            assert await conn.recv() == "SHOUT"
            await conn.send(b"binary where text is expected")
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
        async with client(server, "/typed") as conn:
            await conn.send("{not json")
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007


async def test_middleware_sees_a_101(serve: ServeFactory) -> None:
    statuses: list[int] = []
    app = make_app()

    @app.middleware
    async def record(request: aserve.Request, call_next: Any) -> aserve.Response:
        response: aserve.Response = await call_next(request)
        response.headers["x-seen"] = "1"  # harmless on a 101 that went out
        statuses.append(response.status_code)
        return response

    async with serve(app) as server:
        async with client(server) as conn:
            await conn.send("x")
            assert await conn.recv() == "x"
        await settle(lambda: len(statuses))
        async with client(server) as conn:  # and the server goes on
            await conn.send("y")
            assert await conn.recv() == "y"
    assert statuses[0] == 101


async def test_ws_none_serves_upgrades_as_plain_http(serve: ServeFactory) -> None:
    async with serve(make_app(), ws="none") as server:
        with pytest.raises(InvalidStatus) as refused:
            async with client(server):
                pass
        assert refused.value.response.status_code == 501
        events = await exchange(server.port, handshake("/")[:-2] + b"Connection: close\r\n\r\n")
        [reply] = replies(events)
        assert reply.status == 200 and reply.body == b"hello"


async def test_a_wsgi_app_gets_no_websockets(serve: ServeFactory, connect: ConnectFactory) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"wsgi saw {environ.get('HTTP_UPGRADE')}".encode()]

    async with serve(WSGIHandler(app)) as server:
        conn = await connect(server.port)
        await conn.send(handshake("/"))
        reply = await conn.response()
        assert reply.status == 200 and reply.body == b"wsgi saw websocket"
        await conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await conn.response()).status == 200


async def test_a_session_does_not_hold_a_concurrency_slot(serve: ServeFactory) -> None:
    async with serve(make_app(), max_concurrency=1, handler_timeout=0.2) as server:
        async with client(server) as conn:
            await conn.send("first")
            assert await conn.recv() == "first"
            events = await exchange(
                server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            assert replies(events)[0].status == 200  # not 503: the session left its slot
            await asyncio.sleep(0.4)  # past handler_timeout: a session is not a slow handler
            await conn.send("second")
            assert await conn.recv() == "second"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (handshake(key="c2hvcnQ="), 400),
        (handshake(key=None), 400),
        (handshake(connection="keep-alive"), 400),
        (handshake(method="POST"), 405),  # the route table: GET only
        (handshake(http_version="1.0"), 400),
    ],
)
async def test_a_bad_handshake_is_answered_in_http(
    serve: ServeFactory, request_bytes: bytes, status: int
) -> None:
    async with serve(make_app()) as server:
        raw = await RawWebSocket.connect(server.port, request_bytes)
        try:
            assert raw.status == status
        finally:
            await raw.close()


async def test_an_unknown_version_gets_426_with_the_one_we_speak(serve: ServeFactory) -> None:
    async with serve(make_app()) as server:
        raw = await RawWebSocket.connect(server.port, handshake(version="8"))
        try:
            assert raw.status == 426 and raw.header("sec-websocket-version") == "13"
        finally:
            await raw.close()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(TEXT, b"unmasked", mask=False), 1002),
        (frame(TEXT, b"\xc3\x28 not utf-8"), 1007),
        (frame(PING, b"x" * 126), 1002),
        (frame(TEXT, b"x", rsv=2), 1002),
        (frame(0x5, b"x"), 1002),
        (frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"), 1002),
        (frame(CLOSE, close_payload(1000) + b"\xff\xfe"), 1007),
    ],
)
async def test_a_bad_frame_gets_its_close_code_and_the_server_serves_on(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture, data: bytes, code: int
) -> None:
    caplog.set_level(logging.WARNING, "aserve.error")
    async with serve(make_app()) as server:
        raw = await RawWebSocket.connect(server.port)
        try:
            assert raw.status == 101
            await raw.send(data)
            close = await raw.read_close()
            assert close.code == code
            await raw.wait_closed()
        finally:
            await raw.close()
        assert [
            r for r in caplog.records if r.name == "aserve.error" and str(code) in r.getMessage()
        ]
        async with client(server) as conn:
            await conn.send("fine")
            assert await conn.recv() == "fine"
        [reply] = replies(
            await exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        )
        assert reply.status == 200


async def test_frames_sent_with_the_handshake_are_read(serve: ServeFactory) -> None:
    async with serve(make_app()) as server:
        raw = await RawWebSocket.connect(
            server.port, handshake() + frame(TEXT, b"early") + frame(BINARY, b"bird")
        )
        try:
            assert raw.status == 101
            first, second = await raw.read_frame(), await raw.read_frame()
            assert first is not None and (first.opcode, first.payload) == (TEXT, b"early")
            assert second is not None and (second.opcode, second.payload) == (BINARY, b"bird")
        finally:
            await raw.close()


# --------------------------------------------------------------------------- backpressure


async def _raw_handshake(sock: socket.socket, path: str) -> None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, handshake(path))
    head = b""
    async with asyncio.timeout(READ_TIMEOUT):
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 4096)
    assert head.startswith(b"HTTP/1.1 101 "), head


async def test_reading_pauses_when_the_handler_does_not_read(serve: ServeFactory) -> None:
    seen = Seen()
    message = frame(BINARY, bytes(64 * 1024))
    async with serve(make_app(seen), ws_max_queue=4) as server:
        sock = await raw_socket(server.port, sndbuf=64 * 1024)
        try:
            await _raw_handshake(sock, "/hold")
            sent = await send_until_blocked(sock, message, 256 * 1024 * 1024)
            # Held: the queue (a few messages), the kernel's buffers; never all of it.
            assert sent < 48 * 1024 * 1024, sent
            seen.release.set()
            # The handler now reads: reading resumes, and what the client
            # sends next goes through (the end of the cut message, then 4 MiB).
            rest = len(message) - sent % len(message)
            assert await send_until_blocked(sock, message[-rest:], rest) == rest
            more = 64 * len(message)
            assert await send_until_blocked(sock, message, more, quiet=2.0) == more
        finally:
            sock.close()


async def test_sending_waits_for_a_client_that_does_not_read(serve: ServeFactory) -> None:
    seen = Seen()
    async with serve(make_app(seen), send_timeout=30) as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        try:
            await _raw_handshake(sock, "/flood")
            sent = await settle(lambda: seen.sent)
            # A handful of 256 KiB messages fill the socket and the transport
            # buffer; then send() waits instead of buffering more.
            assert sent < 64, sent
        finally:
            sock.close()
        # connection_lost fails the waiting send at once.
        exc = await asyncio.wait_for(seen.send_error, READ_TIMEOUT)
        assert exc.code == 1006


# --------------------------------------------------------------------------- shutdown


async def test_shutdown_sends_1001_and_does_not_wait_for_the_grace_period(
    serve: ServeFactory,
) -> None:
    seen = Seen()
    async with serve(make_app(seen), graceful_timeout=10) as server:
        async with client(server, "/watch") as conn:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await server.shutdown()
            assert loop.time() - started < 3
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        exc = await asyncio.wait_for(seen.closed, READ_TIMEOUT)
        assert exc.code == 1001


async def test_shutdown_aborts_a_client_that_never_answers_the_close(serve: ServeFactory) -> None:
    async with serve(make_app(), graceful_timeout=0.3) as server:
        raw = await RawWebSocket.connect(server.port)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await server.shutdown()
            assert loop.time() - started < 3
            close = await raw.read_close()
            assert close.code == 1001
        finally:
            await raw.close()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_websockets_over_tls(serve: ServeFactory, ca: trustme.CA, tmp_path: Path) -> None:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    options = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile), "access_log": True}
    async with serve(make_app(), **options) as server:
        async with client(
            server, scheme="wss", ssl=context, server_hostname="localhost", max_size=None
        ) as conn:
            for size in (10, 100_000, 3 * 1024 * 1024):
                payload = os.urandom(size)
                await conn.send(payload)
                assert await conn.recv() == payload
            assert await asyncio.wait_for(await conn.ping(), READ_TIMEOUT) is not None


# --------------------------------------------------------------------------- logs and metrics


async def test_one_access_log_line_per_session(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.access")
    async with serve(make_app(), access_log=True) as server:
        async with client(server, compression=None) as conn:
            for text in ("one", "two"):
                await conn.send(text)
                await conn.recv()
        await settle(lambda: len(caplog.records))
    [line] = [r.getMessage() for r in caplog.records if r.name == "aserve.access"]
    assert '"GET /ws HTTP/1.1" 101 ' in line
    # In: two masked frames of 9 bytes and a close of 8; out: 5 + 5 and a close of 4.
    assert line.endswith(" websocket in=2/26 out=2/14 close=1000"), line


async def test_the_json_access_log_has_the_session(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.access")
    async with serve(make_app(), access_log=True, access_log_format="json") as server:
        async with client(server, "/close/4000") as conn:
            await conn.send("x")
            await conn.recv()
            with pytest.raises(ConnectionClosed):
                await conn.recv()
        await settle(lambda: len(caplog.records))
    [line] = [r.getMessage() for r in caplog.records if r.name == "aserve.access"]
    record = json.loads(line)
    assert record["status"] == 101 and record["outcome"] == "ok"
    assert record["websocket"]["close_code"] == 4000
    assert record["websocket"]["messages_in"] == record["websocket"]["messages_out"] == 1


async def test_open_websockets_in_metrics_and_the_status_page(serve: ServeFactory) -> None:
    options = {"metrics_path": "/metrics", "status_path": "/status"}
    async with serve(make_app(), **options) as server:

        async def scrape(path: str) -> str:
            events = await exchange(
                server.port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
            )
            return replies(events)[0].body.decode()

        async with client(server, compression=None) as conn:
            await conn.send("counted")
            await conn.recv()
            metrics = await scrape("/metrics")
            assert "aserve_websockets_open 1\n" in metrics
            assert 'aserve_connections_open{phase="websocket"} 1\n' in metrics
            status = json.loads(await scrape("/status?format=json"))
            assert status["websockets"]["open"] == 1
            assert "WebSockets" in await scrape("/status")
        async with asyncio.timeout(READ_TIMEOUT):  # the server sees the TCP close
            while "aserve_websockets_open 0\n" not in (metrics := await scrape("/metrics")):
                await asyncio.sleep(0.02)
        assert "aserve_websocket_sessions_total 1\n" in metrics
        assert 'aserve_websocket_messages_total{direction="in"} 1\n' in metrics


async def test_an_observer_is_told_of_sessions_if_it_asks(serve: ServeFactory) -> None:
    sessions: list[Any] = []
    exchanges: list[Any] = []

    class Recorder:
        def exchange_done(self, done: Any) -> None:
            exchanges.append(done.status)

        def websocket_done(self, session: Any) -> None:
            sessions.append((session.status, session.close_code, session.messages_in))

    class OnlyExchanges:
        def exchange_done(self, done: Any) -> None:
            pass

    async with serve(make_app(), observers=[Recorder(), OnlyExchanges()]) as server:
        async with client(server) as conn:
            await conn.send("m")
            await conn.recv()
        await settle(lambda: len(sessions))
    assert sessions == [(101, 1000, 1)]
    assert exchanges == []  # a session is not an exchange


async def test_raw_close_handshake(serve: ServeFactory) -> None:
    """The client closes first: the server answers with its code, then closes TCP."""
    async with serve(make_app()) as server:
        raw = await RawWebSocket.connect(server.port)
        try:
            await raw.send(frame(TEXT, b"x"))
            echo = await raw.read_frame()
            assert echo is not None and echo.payload == b"x"
            await raw.send(frame(CLOSE, close_payload(4321, "done")))
            close = await raw.read_close()
            assert struct.unpack("!H", close.payload[:2])[0] == 4321
            assert await raw.wait_closed() == b""
        finally:
            await raw.close()
