"""The ASGI ``websocket`` scope: raw ASGI apps, then Starlette and FastAPI
WebSocket routes as their users write them, served over a real socket and
driven by the `websockets` library's client, on both event loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import READ_TIMEOUT, ServeFactory, exchange, replies
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import aserve
from aserve.asgi import ASGIHandler

fastapi = pytest.importorskip("fastapi")
from fastapi import (  # noqa: E402 - after the skip
    Depends,
    FastAPI,
    Query,
    WebSocket,
    WebSocketDisconnect,
    WebSocketException,
)

pytestmark = pytest.mark.timeout(60)

Scope = dict[str, Any]


@contextlib.asynccontextmanager
async def client(
    server: aserve.Server, path: str = "/ws", **options: Any
) -> AsyncIterator[ClientConnection]:
    options.setdefault("proxy", None)
    options.setdefault("open_timeout", READ_TIMEOUT)
    options.setdefault("close_timeout", READ_TIMEOUT)
    async with ws_connect(f"ws://127.0.0.1:{server.port}{path}", **options) as conn:
        yield conn


def raw_app(seen: dict[str, Any]) -> Any:
    """A raw ASGI app: each path shows one part of the protocol."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["started"] = "yes"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"http " + scope["path"].encode()})
            return
        assert scope["type"] == "websocket"
        path = scope["path"][len(scope["root_path"]) :]  # the path under the root path
        seen["scope"] = scope
        assert await receive() == {"type": "websocket.connect"}
        if path == "/ws":
            offered = scope["subprotocols"]
            await send(
                {
                    "type": "websocket.accept",
                    "subprotocol": offered[0] if offered else None,
                    "headers": [(b"x-asgi", b"yes")],
                }
            )
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    seen["disconnect"] = message
                    return
                if message.get("text") is not None:
                    await send({"type": "websocket.send", "text": message["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": message["bytes"]})
        elif path == "/close":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": "closing"})
            await send({"type": "websocket.close", "code": 4004, "reason": "app said so"})
            try:
                await send({"type": "websocket.send", "text": "too late"})
            except OSError as exc:
                seen["late_send"] = exc
        elif path == "/refuse":
            await send({"type": "websocket.close"})
        elif path == "/deny":
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 401,
                    "headers": [(b"www-authenticate", b"Bearer"), (b"content-length", b"9")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"token"})
        elif path == "/silent":
            return
        elif path == "/early-error":
            raise RuntimeError("before accept")
        elif path == "/late-error":
            await send({"type": "websocket.accept"})
            await receive()
            raise RuntimeError("after accept")
        elif path == "/bad-message":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": "a", "bytes": b"b"})

    return app


async def test_asgi_scope_accept_and_echo(serve: ServeFactory) -> None:
    seen: dict[str, Any] = {}
    async with serve(ASGIHandler(raw_app(seen), lifespan="on")) as server:
        port = server.port
        async with client(server, "/ws?room=1", subprotocols=["chat", "x"]) as conn:
            assert conn.subprotocol == "chat"
            assert conn.response is not None and conn.response.headers["x-asgi"] == "yes"
            await conn.send("text \u2603")
            assert await conn.recv() == "text \u2603"
            await conn.send(b"\x00bin")
            assert await conn.recv() == b"\x00bin"
            await conn.close(4100, "bye")
        async with asyncio.timeout(READ_TIMEOUT):
            while "disconnect" not in seen:
                await asyncio.sleep(0.01)
    scope = seen["scope"]
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert (scope["path"], scope["query_string"], scope["raw_path"]) == ("/ws", b"room=1", b"/ws")
    assert scope["subprotocols"] == ["chat", "x"]
    assert scope["state"] == {"started": "yes"}
    assert "websocket.http.response" in scope["extensions"]
    assert (b"upgrade", b"websocket") in scope["headers"]
    assert scope["client"][0] == "127.0.0.1" and scope["server"][1] == port
    assert seen["disconnect"] == {"type": "websocket.disconnect", "code": 4100, "reason": "bye"}


async def test_asgi_close_with_a_code_and_send_after_it_raises_oserror(
    serve: ServeFactory,
) -> None:
    seen: dict[str, Any] = {}
    async with serve(ASGIHandler(raw_app(seen))) as server, client(server, "/close") as conn:
        assert await conn.recv() == "closing"
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4004, "app said so")
    assert isinstance(seen["late_send"], aserve.ClientDisconnected)


@pytest.mark.parametrize(
    ("path", "status"), [("/refuse", 403), ("/silent", 500), ("/early-error", 500)]
)
async def test_asgi_refusals(serve: ServeFactory, path: str, status: int) -> None:
    async with serve(ASGIHandler(raw_app({}))) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with client(server, path):
                pass
        assert refused.value.response.status_code == status


async def test_asgi_denial_response(serve: ServeFactory) -> None:
    async with serve(ASGIHandler(raw_app({}))) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with client(server, "/deny"):
                pass
        response = refused.value.response
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.body == b"no token"


@pytest.mark.parametrize("path", ["/late-error", "/bad-message"])
async def test_asgi_errors_after_accept_close_1011_with_one_line(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.WARNING, "aserve")
    async with serve(ASGIHandler(raw_app({}))) as server:
        with pytest.raises(ConnectionClosed) as closed:
            async with client(server, path) as conn:
                await conn.send("go")
                await conn.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    lines = [r for r in caplog.records if r.name == "aserve.error"]
    assert len(lines) == 1 and "1011" in lines[0].getMessage()


async def test_asgi_http_still_served_beside(serve: ServeFactory) -> None:
    async with serve(ASGIHandler(raw_app({}))) as server:
        [reply] = replies(
            await exchange(server.port, b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        )
        assert reply.body == b"http /x"


async def test_asgi_mounted_under_an_app_sees_its_root_path(serve: ServeFactory) -> None:
    seen: dict[str, Any] = {}
    app = aserve.App()
    app.mount("/api", ASGIHandler(raw_app(seen)))
    async with serve(app, root_path="/outer") as server:
        async with client(server, "/outer/api/ws") as conn:
            await conn.send("via mount")
            assert await conn.recv() == "via mount"
    assert (seen["scope"]["root_path"], seen["scope"]["path"]) == ("/outer/api", "/outer/api/ws")


# --------------------------------------------------------------------------- Starlette


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocketDisconnect as StarletteDisconnect

    closed: list[int] = []

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("starlette home")

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept(
            subprotocol="json" if "json" in websocket.scope["subprotocols"] else None
        )
        try:
            while True:
                data = await websocket.receive_json()
                await websocket.send_json({"echo": data, "path": websocket.url.path})
        except StarletteDisconnect as exc:
            closed.append(exc.code)

    async def count(websocket: WebSocket) -> None:
        await websocket.accept()
        total = 0
        async for text in websocket.iter_text():
            total += int(text)
            await websocket.send_text(str(total))
            if total >= 10:
                await websocket.close(code=4010, reason="enough")
                return

    app = Starlette(
        routes=[Route("/", home), WebSocketRoute("/echo", echo), WebSocketRoute("/count", count)]
    )
    app.state.closed = closed
    return app


async def test_starlette_websocket_routes(serve: ServeFactory) -> None:
    app = starlette_app()
    async with serve(ASGIHandler(app)) as server:
        async with client(server, "/echo", subprotocols=["json"]) as conn:
            assert conn.subprotocol == "json"
            await conn.send('{"n": 1}')
            assert await conn.recv() == '{"echo":{"n":1},"path":"/echo"}'
            await conn.close(4200)
        async with client(server, "/count") as conn:
            answers = []
            for n in ("3", "4", "5"):
                await conn.send(n)
                answers.append(await conn.recv())
            assert answers == ["3", "7", "12"]
            with pytest.raises(ConnectionClosed) as closed:
                await conn.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4010, "enough")
        # No such WebSocket route: Starlette closes before accepting, which is a 403.
        with pytest.raises(InvalidStatus) as refused:
            async with client(server, "/nowhere"):
                pass
        assert refused.value.response.status_code == 403
        [reply] = replies(
            await exchange(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        )
        assert reply.body == b"starlette home"
        async with asyncio.timeout(READ_TIMEOUT):
            while not app.state.closed:
                await asyncio.sleep(0.01)
    assert app.state.closed == [4200]


# --------------------------------------------------------------------------- FastAPI


def fastapi_app() -> Any:
    # FastAPI reads the annotations: its names live at module level (above).
    app = FastAPI()
    members: dict[str, WebSocket] = {}
    left: list[str] = []

    def token_of(token: str | None = Query(default=None)) -> str:
        if token != "secret":
            raise WebSocketException(code=1008, reason="bad token")
        return token

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/chat/{name}")
    async def chat(websocket: WebSocket, name: str, token: str = Depends(token_of)) -> None:
        await websocket.accept()
        members[name] = websocket
        try:
            while True:
                text = await websocket.receive_text()
                for other in list(members.values()):
                    await other.send_text(f"{name}: {text}")
        except WebSocketDisconnect:
            members.pop(name, None)
            left.append(name)

    app.state.left = left
    return app


async def test_fastapi_websocket_chat(serve: ServeFactory) -> None:
    app = fastapi_app()
    async with serve(ASGIHandler(app)) as server:
        async with (
            client(server, "/chat/ann?token=secret") as ann,
            client(server, "/chat/bob?token=secret") as bob,
        ):
            await ann.send("hi bob")
            assert await ann.recv() == "ann: hi bob"
            assert await bob.recv() == "ann: hi bob"
            await bob.send("hi ann")
            assert await ann.recv() == "bob: hi ann"
            assert await bob.recv() == "bob: hi ann"
        # A dependency that refuses before accepting: a 403.
        with pytest.raises(InvalidStatus) as refused:
            async with client(server, "/chat/eve?token=wrong"):
                pass
        assert refused.value.response.status_code == 403
        [reply] = replies(
            await exchange(
                server.port, b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
        )
        assert reply.body == b'{"status":"ok"}'
        async with asyncio.timeout(READ_TIMEOUT):
            while len(app.state.left) < 2:
                await asyncio.sleep(0.01)
    assert sorted(app.state.left) == ["ann", "bob"]
