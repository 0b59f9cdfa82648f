"""The scenario endpoints (see scenario.py) as one raw ASGI app, for uvicorn,
hypercorn and granian: no framework, the path compared in the app itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import scenario

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TEXT = [(b"content-type", b"text/plain")]
SIZE = scenario.body_size()


async def _text(send: Send, body: bytes) -> None:
    headers = [*TEXT, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/io":
        await asyncio.sleep(scenario.IO_WAIT_S)
    elif path == "/work":
        await asyncio.sleep(scenario.IO_WAIT_S)
        scenario.burn()
    elif path == "/download":
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(SIZE).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for chunk in scenario.chunks(SIZE):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    elif path == "/upload":
        count = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            count += len(message.get("body", b""))
            more = message.get("more_body", False)
        await _text(send, str(count).encode())
        return
    await _text(send, scenario.HELLO)
