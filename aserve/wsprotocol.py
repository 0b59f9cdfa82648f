"""WebSocketProtocol: a connection after its 101. Moves bytes, owns one deadline.

Everything RFC 6455 decides is in `wsconnection.WSConnection` (sans-IO); this
class feeds it the socket's bytes, queues the messages it gives for the
handler, writes the frames the handler sends, answers pings, runs the close
handshake and keeps the session's phase:

    OPEN     messages both ways    deadline: ws_ping_interval of silence from
                                   the client -> a ping; then ws_ping_timeout
                                   -> close 1011
    CLOSING  our close went out    deadline: CLOSE_TIMEOUT_S for the client's
                                   close -> TCP closed
    CLOSED   the close handshake is over or failed; the transport is closing
             (after a protocol fault: its write side shut, reading and
             dropping for LINGER_S, so the client reads our close frame)

In any phase, while the socket takes nothing of what we wrote, send_timeout
runs as it does for HTTP (aserve/protocol.py): no progress -> abort.

The handler's side is `receive()`, `send()` and `close()` (the `Session` of
aserve/websocket.py and aserve/asgi_websocket.py), run in the handler's own
exchange task. Reading pauses while the queue of messages the handler has not
taken holds `ws_max_queue` messages or `QUEUE_HIGH_BYTES`, and resumes below
half of both; `send()` waits while the transport has paused writing. When the
connection is lost, a waiting `receive()` returns None at once and a waiting
`send()` raises `ClientDisconnected`.

`Acceptor.accept` is how a handler's accept reaches here: it negotiates, builds
the 101 and asks the `HTTPProtocol` to switch (`switch_protocols`), which
hands the transport to a new `WebSocketProtocol` (`take_over`).

This module never imports an application module (routing, app, asgi, wsgi).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from . import wsconnection as ws
from .errors import ClientDisconnected
from .flow import WriteGate
from .watch import Watched, set_reset

if TYPE_CHECKING:
    from .connection import HeaderTriples
    from .exchange import Exchange
    from .request import Request
    from .server import ServerState
    from .tls import TLSInfo

error_log = logging.getLogger("aserve.error")

OPEN, CLOSING, CLOSED = range(3)

#: How long the client gets to answer our close frame.
CLOSE_TIMEOUT_S = 5.0
#: After a protocol fault, how long the client's bytes are read and dropped
#: once our write side is shut (so that it reads our close, not a reset).
LINGER_S = 2.0
#: The unread messages' size past which reading pauses (with ws_max_queue
#: messages), and below which it resumes (with half of that count).
QUEUE_HIGH_BYTES = 1024 * 1024
QUEUE_LOW_BYTES = 256 * 1024


class SwitchingPeer(Protocol):
    """What the HTTP connection of a request offers to switch protocols."""

    def switch_protocols(self, headers: HeaderTriples, successor: WebSocketProtocol) -> bool: ...


class Acceptor:
    """Accepts WebSocket handshakes for one server (None in its state when it
    serves none): `HTTPProtocol.websockets` gives it to handlers."""

    __slots__ = ("_state",)

    def __init__(self, state: ServerState) -> None:
        self._state = state

    @staticmethod
    def ready() -> bool:
        """Whether WebSockets can be served: wsproto imports (asked, and
        wsproto imported, with the first request that asks for one)."""
        return ws.available()

    def accept(
        self,
        peer: SwitchingPeer,
        request: Request,
        handshake: ws.Handshake,
        subprotocol: str | None,
        headers: list[tuple[bytes, bytes]],
    ) -> WebSocketProtocol | None:
        """Answer `101` and carry on as a WebSocket; the session, or None when
        the connection can no longer switch (the client left, the server is
        stopping). ValueError for a subprotocol the client did not offer or a
        header the server sets itself."""
        state = self._state
        config = state.config
        deflate = (
            ws.negotiate_deflate(handshake.extensions) if config.ws_per_message_deflate else None
        )
        head = ws.response_headers(handshake, subprotocol, deflate, headers)
        if state.shutting_down:
            return None
        core = ws.WSConnection(config.ws_max_size, deflate)
        session = WebSocketProtocol(state, core, request, subprotocol)
        if not peer.switch_protocols(head, session):
            return None
        # The request asks its connection (disconnected, on_disconnect, tls...)
        # of the session from now on; the HTTP side can then be freed whole.
        request._peer = session
        return session


class WebSocketProtocol(Watched, asyncio.Protocol):
    __slots__ = (
        "_state",
        "_loop",
        "_transport",
        "_core",
        "_phase",
        "_exchange",
        "_deadline",
        "_until",
        "_send_deadline",
        "_send_mark",
        "_ping_out",
        "_heard",
        "_disconnect_callbacks",
        "_queue",
        "_queued",
        "_queue_full",
        "_max_queue",
        "_waiter",
        "_gate",
        "_read_paused",
        "_lost",
        "_app_closed",
        "_pong_due",
        "_started",
        "request",
        "subprotocol",
        "close_code",
        "close_reason",
        "outcome",
        "status",
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "head_bytes",
        "duration",
    )

    def __init__(
        self,
        state: ServerState,
        core: ws.WSConnection,
        request: Request,
        subprotocol: str | None = None,
    ) -> None:
        self._state = state
        self._loop = state.loop
        self._transport: asyncio.Transport | None = None
        self._core = core
        self._phase = OPEN
        #: The exchange whose task runs the handler: the server's shutdown
        #: waits for its task, and cancels it when the grace period is over.
        self._exchange: Exchange | None = None
        self._deadline: float | None = None
        self._until: float | None = None
        self._send_deadline: float | None = None
        self._send_mark = 0
        self._ping_out = False
        self._heard = False
        self._disconnect_callbacks: list[Callable[[], object]] | None = None
        # A list, not a deque: an idle session holds it empty (56 bytes
        # against a deque's 760), and it never holds more than ws_max_queue.
        self._queue: list[str | bytes] = []
        self._queued = 0
        self._queue_full = False
        self._max_queue = state.config.ws_max_queue
        self._waiter: asyncio.Future[None] | None = None
        self._gate: WriteGate | None = None
        self._read_paused = False
        self._lost = False
        self._app_closed = False
        self._pong_due: bytes | None = None
        self._started = time.perf_counter()
        #: The request that asked for the WebSocket.
        self.request = request
        self.subprotocol = subprotocol
        #: The code of the first close frame either side sent (1006: the
        #: connection ended without one), and its reason.
        self.close_code: int | None = None
        self.close_reason = ""
        #: How the session ended, for observers: "ok" (a close frame ended it),
        #: "client-gone", "ping-timeout", "protocol-error", "send-timeout".
        self.outcome = "ok"
        self.status = 101
        self.messages_in = self.messages_out = 0
        #: Bytes of frames read and written (the 101's head is `head_bytes`).
        self.bytes_in = self.bytes_out = 0
        self.head_bytes = 0
        self.duration = 0.0

    # -- the handoff ------------------------------------------------------

    def take_over(
        self,
        transport: asyncio.BaseTransport,
        data: bytes,
        exchange: Exchange | None,
        *,
        head_bytes: int = 0,
        reading_paused: bool = False,
        writing_paused: bool = False,
    ) -> None:
        """Become the connection's protocol (the transport already calls us):
        `data` is what the client sent after its request."""
        self._transport = transport = cast(asyncio.Transport, transport)
        self._exchange = exchange
        self.head_bytes = head_bytes
        self._state.connections.add(self)
        if writing_paused:
            self.pause_writing()
        interval = self._state.config.ws_ping_interval
        if interval is not None:
            self._arm(interval)
        if data:
            self.data_received(data)
        if reading_paused and not self._read_paused and not self._lost:
            transport.resume_reading()  # paused for HTTP (pipelining): not ours to keep

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        # Never the first protocol of a connection: take_over starts it.
        raise RuntimeError("a WebSocketProtocol starts with take_over(), after a 101")

    def data_received(self, data: bytes) -> None:
        if self._phase == CLOSED:
            return  # after the close handshake or a fault: dropped
        self.bytes_in += len(data)
        self._heard = True
        self._core.receive(data)
        self._pump()

    def eof_received(self) -> bool | None:
        # The client shut its sending side: whatever it meant, no close frame
        # can come any more.
        if self._phase != CLOSED:
            if self.close_code is None:
                self.close_code = ws.ABNORMAL
                self.outcome = "client-gone"
            self._phase = CLOSED
            self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._phase = CLOSED
        self._deadline = self._until = self._send_deadline = None
        if self.close_code is None:
            self.close_code = ws.ABNORMAL
            self.outcome = "client-gone"
        state = self._state
        state.connections.discard(self)
        self._wake()
        if self._gate is not None:
            self._gate.connection_lost()
        self._fire_disconnect()
        self.duration = time.perf_counter() - self._started
        observer = state.observer
        if observer is not None:
            told = getattr(observer, "websocket_done", None)
            if told is not None:
                try:
                    told(self)
                except Exception as error:  # a broken observer must not break serving
                    error_log.error("the access log or metrics failed", exc_info=error)
        state.connection_closed()

    def pause_writing(self) -> None:
        if self._gate is None:
            self._gate = WriteGate()
        self._gate.pause()
        self._watch_send()

    def resume_writing(self) -> None:
        if self._gate is not None:
            self._gate.resume()
        pong = self._pong_due
        if pong is not None:
            self._pong_due = None
            self._write(self._core.send_pong(pong))
        if self._phase == CLOSED:
            self._watch_send(renew=True)  # a closing transport still flushing
        elif self._send_deadline is not None:
            self._send_deadline = None
            self._refresh_deadline()

    # -- reading ----------------------------------------------------------

    def _pump(self) -> None:
        """Take the core's events until it needs bytes or the queue is full."""
        core = self._core
        queue = self._queue
        while not self._queue_full:
            event = core.next_event()
            if event is None:
                return
            kind = type(event)
            if kind is str or kind is bytes:
                self.messages_in += 1
                if self._app_closed or self._phase != OPEN:
                    continue  # after our close: dropped (RFC 6455 1.4)
                message = cast("str | bytes", event)
                queue.append(message)
                self._queued += len(message)
                if len(queue) >= self._max_queue or self._queued >= QUEUE_HIGH_BYTES:
                    self._queue_full = True
                    self._pause_reading()
                self._wake()
            elif kind is ws.PingEvent:
                payload = cast(ws.PingEvent, event).payload
                gate = self._gate
                if gate is not None and gate.paused:
                    # The client does not read: owe it one pong, the latest
                    # (RFC 6455 5.5.3), instead of queueing one per ping.
                    self._pong_due = payload
                else:
                    self._write(core.send_pong(payload))
            elif kind is ws.Close:
                close = cast(ws.Close, event)
                self._client_closed(close.code, close.reason)
                return
            elif kind is ws.Fault:
                self._fault(cast(ws.Fault, event))
                return
            # A pong needs nothing: any byte from the client counts as life.

    def _client_closed(self, code: int, reason: str) -> None:
        if self._phase == OPEN:
            # RFC 6455 5.5.1: answer with the code received; then the server
            # closes the TCP connection first (7.1.1).
            self.close_code = code
            self.close_reason = reason
            self._write(self._core.send_close(code, reason))
        self._phase = CLOSED
        self._until = None
        self._wake()
        self._close_transport()

    def _fault(self, fault: ws.Fault) -> None:
        """The client broke the protocol or a limit: close frame with the
        code, write side shut, the rest of what it sends dropped."""
        if self.close_code is None:
            self.close_code = fault.code
            self.close_reason = fault.reason
        self.outcome = "protocol-error"
        client = self.request.client
        error_log.warning(
            "WebSocket from %s: %s: closed with %d",
            client[0] if client else "-",
            fault.reason,
            fault.code,
        )
        self._write(self._core.send_close(fault.code, _short(fault.reason)))
        self._phase = CLOSED
        self._wake()
        transport = self._transport
        if transport is None or self._lost:
            return
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except (OSError, RuntimeError):
                transport.close()
                return
            if self._read_paused:
                self._read_paused = False
                transport.resume_reading()
            self._arm(LINGER_S)
        else:
            self._close_transport()

    def _pause_reading(self) -> None:
        if not self._read_paused and not self._lost and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused:
            self._read_paused = False
            if not self._lost and self._transport is not None:
                self._transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the handler's side (Session) --------------------------------------

    @property
    def open(self) -> bool:
        """Messages may still be sent: no close frame went either way."""
        return self._phase == OPEN and not self._lost

    @property
    def client_closed(self) -> bool:
        """The client sent its close frame, or left."""
        return self._phase == CLOSED or self._lost

    async def receive(self) -> str | bytes | None:
        """The next message; None once the session is over (then
        `close_code` and `close_reason` say why). Messages the client sent
        before its close are delivered first, unless the handler closed."""
        while True:
            queue = self._queue
            if queue and not self._app_closed:
                message = queue.pop(0)
                self._queued -= len(message)
                if (
                    self._queue_full
                    and len(queue) <= self._max_queue // 2
                    and self._queued <= QUEUE_LOW_BYTES
                ):
                    self._queue_full = False
                    self._pump()
                    if not self._queue_full:
                        self._resume_reading()
                return message
            if self._phase != OPEN or self._lost:
                return None
            if self._waiter is not None:
                raise RuntimeError("another task is already receiving on this WebSocket")
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send one message; waits while the socket is behind. Raises
        `ClientDisconnected` once the session is closing or closed."""
        if self._phase != OPEN or self._lost or not self._core.can_send:
            raise ClientDisconnected("the WebSocket is closed")
        for piece in self._core.send_message(data):
            self._write(piece)
        self.messages_out += 1
        gate = self._gate
        if gate is not None and gate.paused:
            await gate.wait()

    def close(self, code: int = ws.NORMAL, reason: str = "") -> None:
        """Start the close handshake (nothing more is received for the
        handler); a no-op once it has started."""
        self._app_closed = True
        if self._phase == OPEN and not self._lost:
            self._start_close(code, reason)

    def _start_close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self._write(self._core.send_close(code, reason))
        self._phase = CLOSING
        self._ping_out = False
        self._arm(CLOSE_TIMEOUT_S)
        if self._queue_full:
            # The client's close may wait behind messages nobody will read.
            self._queue.clear()
            self._queued = 0
            self._queue_full = False
            self._pump()
            self._resume_reading()
        self._wake()

    # -- the request's peer (aserve.request.Peer) --------------------------

    @property
    def disconnected(self) -> bool:
        return self._lost or self._phase == CLOSED

    @property
    def server_address(self) -> tuple[str, int] | None:
        transport = self._transport
        name = transport.get_extra_info("sockname") if transport is not None else None
        if isinstance(name, tuple) and len(name) >= 2:
            return (str(name[0]), int(name[1]))
        return None

    @property
    def tls(self) -> TLSInfo | None:
        transport = self._transport
        return transport.get_extra_info("aserve.tls") if transport is not None else None

    def on_disconnect(self, callback: Callable[[], object]) -> None:
        if self._lost:
            callback()
        elif self._disconnect_callbacks is None:
            self._disconnect_callbacks = [callback]
        else:
            self._disconnect_callbacks.append(callback)

    # -- writing ----------------------------------------------------------

    def _write(self, data: Any) -> None:
        if data and not self._lost and self._transport is not None:
            self.bytes_out += len(data)
            self._transport.write(data)

    @property
    def bytes_sent(self) -> int:
        """What was written on the connection for this session, the 101 included."""
        return self.head_bytes + self.bytes_out

    # -- deadlines, closing -----------------------------------------------

    def _refresh_deadline(self) -> None:
        best = self._until
        send = self._send_deadline
        if send is not None and (best is None or send < best):
            best = send
        self._deadline = best

    def deadline_passed(self) -> None:
        """Called by the server's clock once `_deadline` is behind it."""
        self._deadline = None
        transport = self._transport
        if self._lost or transport is None:
            return
        config = self._state.config
        now = self._loop.time()
        send = self._send_deadline
        if send is not None and send <= now and self._send_stalled(transport, now):
            if self.close_code is None:
                self.close_code = ws.ABNORMAL
            self.outcome = "send-timeout"
            error_log.warning(
                "closing the WebSocket of %s: it read nothing for %gs (send_timeout)",
                self._host(),
                config.send_timeout,
            )
            self._reset()
            return
        until = self._until
        if until is not None and until <= now:
            self._until = None
            phase = self._phase
            if phase == OPEN:
                self._keepalive()
            else:
                # CLOSING: the client never answered our close; CLOSED: the
                # linger after a fault is over.
                self._phase = CLOSED
                self._close_transport()
        self._refresh_deadline()

    def _keepalive(self) -> None:
        config = self._state.config
        interval = config.ws_ping_interval
        timeout = config.ws_ping_timeout
        if self._heard:
            # The client spoke since the last look: alive, no ping needed.
            self._heard = False
            self._ping_out = False
            if interval is not None:
                self._arm(interval)
            return
        if self._ping_out:
            self.outcome = "ping-timeout"
            error_log.warning(
                "WebSocket of %s: no answer to a ping within %gs (ws_ping_timeout): "
                "closed with 1011",
                self._host(),
                timeout or 0,
            )
            if self.close_code is None:
                self.close_code = ws.INTERNAL_ERROR
                self.close_reason = "keepalive ping timeout"
            self._write(self._core.send_close(ws.INTERNAL_ERROR, "keepalive ping timeout"))
            self._phase = CLOSED
            self._wake()
            self._close_transport()
            return
        stamp = int(self._loop.time() * 1000) & 0xFFFFFFFF
        self._write(self._core.send_ping(struct.pack("!I", stamp)))
        if timeout is not None:
            self._ping_out = True
            self._arm(timeout)
        elif interval is not None:
            self._arm(interval)

    def _close_transport(self) -> None:
        transport = self._transport
        if transport is None or self._lost:
            return
        self._until = None
        transport.close()
        if transport.get_write_buffer_size():
            self._watch_send()
        else:
            self._refresh_deadline()

    def shutdown(self) -> None:
        """The server is stopping: close 1001 (going away) an open session;
        the client's close then ends it (or CLOSE_TIMEOUT_S, or the server's
        graceful_timeout)."""
        if self._lost:
            return
        if self._phase == OPEN:
            self._start_close(ws.GOING_AWAY, "server shutting down")
        elif self._phase == CLOSED:
            self._close_transport()

    def _reset(self) -> None:
        transport = self._transport
        set_reset(transport)
        if transport is not None and not self._lost:
            transport.abort()

    def abort(self) -> None:
        """Cut the connection now and cancel the handler (a forced shutdown)."""
        exchange = self._exchange
        if exchange is not None and exchange.task is not None:
            exchange.task.cancel()
        if self._transport is not None and not self._lost:
            self._transport.abort()

    def phase_name(self) -> str:
        """For metrics and the status page."""
        return "websocket" if self._phase == OPEN else "closing"

    def _host(self) -> str:
        client = self.request.client
        return client[0] if client else "-"

    def __repr__(self) -> str:
        return f"<WebSocketProtocol {self.request.client} phase={self._phase}>"


def _short(reason: str) -> str:
    # A close frame's reason fits in 123 bytes (RFC 6455 5.5: control frames
    # carry at most 125): wsproto cuts it at a character boundary.
    return reason[:120]


def make_acceptor(state: ServerState) -> Acceptor | None:
    """The server's acceptor, or None when it serves no WebSockets."""
    if state.config.ws == "none":
        return None
    return Acceptor(state)
