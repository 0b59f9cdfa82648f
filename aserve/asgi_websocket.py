"""The ASGI ``websocket`` scope (spec 2.4) over aserve's WebSockets.

`ASGIHandler` hands a request here when it asks for a WebSocket and its
connection can switch to one (aserve/websocket.py `websocket_acceptor`); a
bad handshake is answered (400, 426) before the app is called. The app then
runs in the request's own task, as for HTTP, for the whole session:

- ``receive()`` gives ``websocket.connect`` first, then, once accepted,
  ``websocket.receive`` (``text`` or ``bytes``) for each message and finally
  ``websocket.disconnect`` with the close code (1006: the client left without
  one). Before accepting, a second ``receive()`` waits for the client to go.
- ``send()`` takes, before accepting: ``websocket.accept`` (``subprotocol``,
  ``headers``), ``websocket.close`` (refused: HTTP 403), or a denial response
  (``websocket.http.response.start`` then ``.body`` parts, the
  ``websocket.http.response`` extension); after: ``websocket.send`` (exactly
  one of ``bytes`` and ``text``) and ``websocket.close`` (``code``,
  ``reason``). A message out of place or malformed raises `RuntimeError` in
  the app; a send once the WebSocket is closed raises `ClientDisconnected`
  (an `OSError`), as the spec asks.
- The app returns after accepting: close 1000; raises: close 1011 and one line
  on ``aserve.error``. It raises before accepting: 500, as for HTTP; returns
  without accepting, closing or denying: 500 and one line.

Server-side limits (``ws_max_size``...) close the WebSocket with their code;
the app sees ``websocket.disconnect`` with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from .asgi import ASGI_VERSION, Message, _check_headers
from .errors import ClientDisconnected
from .request import Request
from .response import PlainTextResponse, Response
from .websocket import Acceptor, Session, _switched, handshake_refusal
from .wsconnection import Handshake, HandshakeError, read_handshake

if TYPE_CHECKING:
    from .asgi import ASGIHandler

error_log = logging.getLogger("aserve.error")

_EXTENSIONS: Final[dict[str, dict[str, Any]]] = {"websocket.http.response": {}}

# Where the app is in the handshake.
_CONNECTING, _ACCEPTED, _CLOSED, _REFUSED, _RESPONDING, _RESPONDED = range(6)


async def serve_websocket(handler: ASGIHandler, request: Request, acceptor: Acceptor) -> Response:
    """Run `handler`'s app on a ``websocket`` scope for `request`."""
    found = read_handshake(request._method, request._http_version, request._raw_headers)
    if isinstance(found, HandshakeError):
        return handshake_refusal(found)
    if request.root_path or handler.root_path:
        root_path, path, raw_path = handler._paths(request)
    else:
        root_path, path, raw_path = "", request.path, request.raw_path
    extensions = _EXTENSIONS
    if request.scheme == "https":
        tls = request.tls
        if tls is not None:
            extensions = {**_EXTENSIONS, "tls": tls.asgi_extension()}
    scope = {
        "type": "websocket",
        "asgi": ASGI_VERSION,
        "http_version": request.http_version,
        "scheme": "wss" if request.scheme == "https" else "ws",
        "path": path,
        "raw_path": raw_path,
        "query_string": request.query_string,
        "root_path": root_path,
        "headers": request.headers.raw,
        "client": request.client,
        "server": request.server,
        "subprotocols": list(found.subprotocols),
        "state": handler.state.copy(),
        "extensions": extensions,
    }
    run = _WebSocketRun(request, found, acceptor)
    try:
        await handler.app(scope, run.receive, run.send)
    except Exception as exc:
        session = run.session
        if session is None:
            raise  # not accepted: a 500, as for HTTP
        if not isinstance(exc, ClientDisconnected):
            error_log.error(
                "ASGI app failed on WebSocket %s: closed with 1011",
                request.target.decode("latin-1"),
                exc_info=exc,
            )
        session.close(1011, "internal error")
        return _switched()
    return run.outcome()


class _WebSocketRun:
    """One ASGI WebSocket session: the app's receive and send."""

    __slots__ = (
        "request",
        "handshake",
        "acceptor",
        "session",
        "phase",
        "connected",
        "status",
        "headers",
        "body",
    )

    def __init__(self, request: Request, handshake: Handshake, acceptor: Acceptor) -> None:
        self.request = request
        self.handshake = handshake
        self.acceptor = acceptor
        self.session: Session | None = None
        self.phase = _CONNECTING
        self.connected = False  # websocket.connect given
        # A denial response, as it comes.
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    async def receive(self) -> Message:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        session = self.session
        if session is None:
            # Not accepted (yet): nothing comes but the client leaving.
            if self.phase == _CONNECTING:
                await self._client_gone()
            return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        message = await session.receive()
        if message is None:
            return {
                "type": "websocket.disconnect",
                "code": session.close_code or 1006,
                "reason": session.close_reason,
            }
        if type(message) is str:
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    async def _client_gone(self) -> None:
        gone = asyncio.get_running_loop().create_future()

        def left() -> None:
            if not gone.done():
                gone.set_result(None)

        self.request.on_disconnect(left)
        await gone

    async def send(self, message: Message) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        phase = self.phase
        if phase == _ACCEPTED:
            session = self.session
            assert session is not None
            if kind == "websocket.send":
                data = message.get("bytes")
                text = message.get("text")
                if text is not None and data is None and isinstance(text, str):
                    await session.send(text)
                    return
                if data is not None and text is None and isinstance(data, bytes | bytearray):
                    await session.send(data)
                    return
                raise RuntimeError(
                    f"websocket.send needs exactly one of 'bytes' (bytes) and 'text' (str): "
                    f"{message!r:.80}"
                )
            if kind == "websocket.close":
                self.phase = _CLOSED
                session.close(*_close_args(message))
                return
        elif phase == _CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
                return
            if kind == "websocket.close":
                self.phase = _REFUSED
                return
            if kind == "websocket.http.response.start":
                status = message.get("status")
                if not isinstance(status, int) or not 100 <= status <= 599 or status == 101:
                    raise RuntimeError(f"invalid status in {message!r:.80}")
                self.headers, _ = _check_headers(message.get("headers") or [])
                self.status = status
                self.phase = _RESPONDING
                return
        elif phase == _RESPONDING and kind == "websocket.http.response.body":
            body = message.get("body", b"")
            if not isinstance(body, bytes | bytearray | memoryview):
                raise RuntimeError("websocket.http.response.body 'body' must be bytes")
            self.body.append(bytes(body))
            if not message.get("more_body", False):
                self.phase = _RESPONDED
            return
        elif phase == _CLOSED and kind in ("websocket.send", "websocket.close"):
            if kind == "websocket.close":
                return  # closing twice is harmless
            raise ClientDisconnected("the WebSocket is closed")
        state = ("connecting", "accepted", "closed", "refused", "responding", "responded")[phase]
        raise RuntimeError(f"unexpected ASGI message {kind!r} on a WebSocket that is {state}")

    def _accept(self, message: Message) -> None:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and not isinstance(subprotocol, str):
            raise RuntimeError(f"websocket.accept 'subprotocol' must be a str: {subprotocol!r}")
        headers, _ = _check_headers(message.get("headers") or [])
        request = self.request
        try:
            session = self.acceptor.accept(
                request._peer, request, self.handshake, subprotocol, headers
            )
        except ValueError as exc:
            raise RuntimeError(f"websocket.accept: {exc}") from None
        if session is None:
            self.phase = _CLOSED
            raise ClientDisconnected("the connection could not switch to a WebSocket")
        self.session = session
        self.phase = _ACCEPTED

    def outcome(self) -> Response:
        """What the app's session comes to, once it returned."""
        phase = self.phase
        session = self.session
        if session is not None:
            session.close(1000)
            return _switched()
        if phase == _RESPONDED:
            return Response(b"".join(self.body), status=self.status, headers=_text(self.headers))
        if phase == _REFUSED:
            return PlainTextResponse("Forbidden\n", status=403)
        if phase == _CLOSED:  # the client left while we accepted
            return PlainTextResponse("Forbidden\n", status=403)
        what = "finishing its denial response" if phase == _RESPONDING else "accepting or closing"
        error_log.error(
            "ASGI app returned without %s the WebSocket on %s",
            what,
            self.request.target.decode("latin-1"),
        )
        return PlainTextResponse("Internal Server Error\n", status=500)


def _close_args(message: Message) -> tuple[int, str]:
    code = message.get("code", 1000)
    reason = message.get("reason") or ""
    if not isinstance(code, int) or not isinstance(reason, str):
        raise RuntimeError(f"invalid websocket.close {message!r:.80}")
    return code, reason


def _text(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    # The body's length is the Response's to say.
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in headers
        if name not in (b"content-length", b"transfer-encoding")
    ]
