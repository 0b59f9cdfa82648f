"""WebSockets for handlers: the `WebSocket` a route of ``@app.websocket`` gets.

The names are Starlette's, which users know::

    @app.websocket("/ws")
    async def echo(ws: aserve.WebSocket) -> None:
        await ws.accept()
        async for message in ws:          # str or bytes, until the client closes
            await ws.send(message)

A `WebSocket` lives beside `Request` (it wraps one: headers, query, path
parameters, client) and knows nothing of sockets. Once accepted it talks to a
`Session`, the engine's side of the connection (aserve/wsprotocol.py), through
four calls: `receive`, `send`, `close` and the close code. Before that it
holds the `Acceptor` the connection offered for this request.

What happens to a handler (see `WebSocketEndpoint`, docs/websockets.md):

- returns without accepting -> the client gets 403 (``close()`` before
  ``accept()`` is the same; `send_denial_response` answers with another);
- raises before accepting -> as any handler that raises (500, or its
  `HTTPException`'s status);
- returns after accepting -> close 1000; raises -> close 1011 and one line on
  ``aserve.error``;
- a read after the client closed or left raises `WebSocketDisconnect` with
  its close code (1006: it left without one); so does a send.

A plain GET (no upgrade) to a WebSocket-only route gets 426 with ``Upgrade:
websocket``; a path that is an HTTP route too is served by that route. When
the server serves no WebSockets (``ws="none"``, no wsproto), an upgrade
request gets 501.

This module must not import the engine (protocol, exchange, flow, server,
wsprotocol): the App side imports it.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from .datastructures import URL, QueryParams, State
from .errors import AserveError, ClientDisconnected
from .headers import Headers, HeadersInput, encode_headers
from .request import Request
from .response import PlainTextResponse, Response
from .routing import Route
from .wsconnection import Handshake, HandshakeError, read_handshake, wants_websocket

if TYPE_CHECKING:
    from .app import App

__all__ = [
    "WebSocket",
    "WebSocketDisconnect",
    "WebSocketEndpoint",
    "WebSocketRoute",
    "WebSocketState",
]

error_log = logging.getLogger("aserve.error")

WebSocketHandler = Callable[["WebSocket"], Awaitable[Any]]


class WebSocketState(enum.Enum):
    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2
    RESPONSE = 3


class WebSocketDisconnect(AserveError):
    """The WebSocket is closed: the client closed it (`code` is its close
    code), left without closing (1006), or the session ended otherwise (the
    code the server closed with: 1001 at shutdown, 1009 for a message too
    large...)."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"WebSocket closed with {self.code}" + (f": {self.reason}" if self.reason else "")


class Session(Protocol):
    """The engine's side of an accepted WebSocket."""

    close_code: int | None
    close_reason: str

    @property
    def open(self) -> bool: ...
    @property
    def client_closed(self) -> bool: ...
    async def receive(self) -> str | bytes | None: ...
    async def send(self, data: str | bytes | bytearray | memoryview) -> None: ...
    def close(self, code: int = 1000, reason: str = "") -> None: ...


class Acceptor(Protocol):
    """What the connection of a request that asks for a WebSocket offers."""

    def accept(
        self,
        peer: Any,
        request: Request,
        handshake: Handshake,
        subprotocol: str | None,
        headers: list[tuple[bytes, bytes]],
    ) -> Session | None: ...


def websocket_acceptor(request: Request) -> Acceptor | None:
    """The acceptor for `request` when it asks for a WebSocket (``Upgrade:
    websocket``) and its connection can switch to one, else None."""
    peer = request._peer
    if peer is None:
        return None
    acceptor: Acceptor | None = getattr(peer, "websockets", None)
    if acceptor is None or not wants_websocket(request._raw_headers):
        return None
    return acceptor


class WebSocket:
    """One WebSocket session, as its handler sees it."""

    __slots__ = (
        "request",
        "_handshake",
        "_acceptor",
        "_session",
        "_denial",
        "client_state",
        "application_state",
    )

    def __init__(self, request: Request, handshake: Handshake, acceptor: Acceptor) -> None:
        #: The request that asked for the WebSocket.
        self.request = request
        self._handshake = handshake
        self._acceptor = acceptor
        self._session: Session | None = None
        self._denial: Response | None = None
        self.client_state = WebSocketState.CONNECTING
        self.application_state = WebSocketState.CONNECTING

    # -- the request ------------------------------------------------------

    @property
    def headers(self) -> Headers:
        return self.request.headers

    @property
    def query_params(self) -> QueryParams:
        return self.request.query

    @property
    def query(self) -> QueryParams:
        return self.request.query

    @property
    def path_params(self) -> dict[str, Any]:
        return self.request.path_params

    @property
    def path(self) -> str:
        return self.request.path

    @property
    def url(self) -> URL:
        """The URL the client connected to, with a ``ws`` or ``wss`` scheme."""
        url = str(self.request.url)
        return URL("ws" + url[4:] if url.startswith("http") else url)

    @property
    def client(self) -> tuple[str, int] | None:
        return self.request.client

    @property
    def cookies(self) -> dict[str, str]:
        return self.request.cookies

    @property
    def state(self) -> State:
        return self.request.state

    @property
    def app(self) -> App | None:
        return self.request.app

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offers, in its order of preference."""
        return self._handshake.subprotocols

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol accepted, if any."""
        session = self._session
        return getattr(session, "subprotocol", None) if session is not None else None

    # -- the handshake ----------------------------------------------------

    async def accept(self, subprotocol: str | None = None, headers: HeadersInput = None) -> None:
        """Answer 101: the connection is a WebSocket from now on. `subprotocol`
        must be one the client offered (ValueError otherwise); `headers` are
        added to the 101. Raises `WebSocketDisconnect` (1006) when the
        connection can no longer switch: the client left, or the server is
        stopping."""
        if self.application_state is not WebSocketState.CONNECTING:
            raise RuntimeError(f"accept() on a WebSocket that is {self.application_state.name}")
        raw = encode_headers(headers) if headers else []
        request = self.request
        session = self._acceptor.accept(request._peer, request, self._handshake, subprotocol, raw)
        if session is None:
            self.application_state = self.client_state = WebSocketState.DISCONNECTED
            raise WebSocketDisconnect(1006, "the connection could not switch to a WebSocket")
        self._session = session
        self.application_state = self.client_state = WebSocketState.CONNECTED

    async def send_denial_response(self, response: Response) -> None:
        """Refuse the WebSocket with this HTTP response instead of 403."""
        if self.application_state is not WebSocketState.CONNECTING:
            raise RuntimeError("send_denial_response() after accept() or close()")
        self._denial = response
        self.application_state = WebSocketState.RESPONSE

    # -- messages ---------------------------------------------------------

    def _accepted(self) -> Session:
        session = self._session
        if session is None:
            raise RuntimeError("the WebSocket is not accepted: await websocket.accept() first")
        return session

    async def receive(self) -> str | bytes:
        """The next message, text (str) or binary (bytes). Raises
        `WebSocketDisconnect` once the client closed or left."""
        session = self._accepted()
        message = await session.receive()
        if message is None:
            self.client_state = WebSocketState.DISCONNECTED
            raise WebSocketDisconnect(session.close_code or 1006, session.close_reason)
        return message

    async def receive_text(self) -> str:
        """The next message, which must be text: a binary one closes the
        WebSocket with 1003 (unsupported data)."""
        message = await self.receive()
        if isinstance(message, str):
            return message
        await self._refuse(1003, "expected a text message")
        raise AssertionError  # pragma: no cover - _refuse raises

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary: a text one closes with 1003."""
        message = await self.receive()
        if isinstance(message, bytes):
            return message
        await self._refuse(1003, "expected a binary message")
        raise AssertionError  # pragma: no cover - _refuse raises

    async def receive_json(self, mode: str = "text") -> Any:
        """The next message parsed as JSON (text or binary, as `mode` says);
        one that is not JSON closes with 1007 (inconsistent data)."""
        message = await (self.receive_text() if mode == "text" else self.receive_bytes())
        try:
            return json.loads(message)
        except (ValueError, RecursionError):
            await self._refuse(1007, "expected JSON")

    async def _refuse(self, code: int, reason: str) -> None:
        await self.close(code, reason)
        raise WebSocketDisconnect(code, reason)

    async def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send one message: text for a str, binary otherwise. Raises
        `WebSocketDisconnect` when the WebSocket is closed."""
        session = self._accepted()
        try:
            await session.send(data)
        except ClientDisconnected:
            self.client_state = WebSocketState.DISCONNECTED
            raise WebSocketDisconnect(session.close_code or 1006, session.close_reason) from None

    async def send_text(self, data: str) -> None:
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str, not {type(data).__name__}")
        await self.send(data)

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        if isinstance(data, str):
            raise TypeError("send_bytes() takes bytes, not a str")
        await self.send(data)

    async def send_json(self, data: Any, mode: str = "text") -> None:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        await self.send(text if mode == "text" else text.encode("utf-8"))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket with `code`; before `accept()`, refuse it (403)."""
        if self.application_state is WebSocketState.CONNECTING:
            self.application_state = WebSocketState.DISCONNECTED
            return
        session = self._session
        if session is not None:
            session.close(code, reason)
        self.application_state = WebSocketState.DISCONNECTED

    # -- iteration --------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Every message until the client closes."""
        while True:
            try:
                yield await self.receive()
            except WebSocketDisconnect:
                return

    async def iter_text(self) -> AsyncIterator[str]:
        while True:
            try:
                yield await self.receive_text()
            except WebSocketDisconnect:
                return

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.receive_bytes()
            except WebSocketDisconnect:
                return

    async def iter_json(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.receive_json()
            except WebSocketDisconnect:
                return

    def __repr__(self) -> str:
        return f"<WebSocket {self.request.path!r} {self.application_state.name}>"


def _upgrade_required() -> Response:
    # RFC 9110 15.5.22: a 426 says which protocol to switch to.
    return PlainTextResponse(
        "This is a WebSocket endpoint: connect with a WebSocket client.\n",
        status=426,
        headers={"upgrade": "websocket", "connection": "Upgrade"},
    )


def _switched() -> Response:
    """What a WebSocket route returns once the session is over: the 101 that
    went out, for middleware to see; the engine sends nothing more."""
    return Response(b"", status=101)


class WebSocketEndpoint:
    """The endpoint an `App` route runs for a WebSocket handler.

    With `fallback` (an HTTP GET route on the same path), requests that do not
    ask for a WebSocket go there instead of getting 426.
    """

    __slots__ = ("handler", "fallback", "__name__")

    #: Tells the router that a plain GET route may share the path.
    websocket = True

    def __init__(self, handler: WebSocketHandler) -> None:
        self.handler = handler
        self.fallback: Callable[[Request], Awaitable[Response]] | None = None
        self.__name__ = getattr(handler, "__name__", type(handler).__name__)

    async def __call__(self, request: Request) -> Response:
        acceptor = websocket_acceptor(request)
        if acceptor is None:
            if self.fallback is not None:
                return await self.fallback(request)
            if wants_websocket(request._raw_headers):
                return PlainTextResponse("WebSockets are not enabled on this server.\n", status=501)
            return _upgrade_required()
        found = read_handshake(request._method, request._http_version, request._raw_headers)
        if isinstance(found, HandshakeError):
            return handshake_refusal(found)
        websocket = WebSocket(request, found, acceptor)
        try:
            await self.handler(websocket)
        except (WebSocketDisconnect, ClientDisconnected):
            pass
        except Exception as exc:
            session = websocket._session
            if session is None:
                raise  # not accepted: answered like any handler error
            error_log.error(
                "WebSocket handler failed on %s: closed with 1011",
                request.target.decode("latin-1"),
                exc_info=exc,
            )
            session.close(1011, "internal error")
            return _switched()
        session = websocket._session
        if session is None:
            if websocket._denial is not None:
                return websocket._denial
            return PlainTextResponse("Forbidden\n", status=403)
        session.close(1000)
        return _switched()

    def __repr__(self) -> str:
        return f"WebSocketEndpoint({self.handler!r})"


def handshake_refusal(error: HandshakeError) -> Response:
    """The HTTP answer to a bad WebSocket handshake."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in error.headers]
    return PlainTextResponse(error.reason + "\n", status=error.status, headers=headers)


class WebSocketRoute(Route):
    """A WebSocket route, for ``App(routes=[...])``:
    ``WebSocketRoute("/ws", handler)`` is ``@app.websocket("/ws")``."""

    __slots__ = ()

    def __init__(self, path: str, endpoint: WebSocketHandler, *, name: str | None = None) -> None:
        super().__init__(
            path,
            WebSocketEndpoint(endpoint),
            ("GET",),
            name=name if name is not None else getattr(endpoint, "__name__", None),
        )
