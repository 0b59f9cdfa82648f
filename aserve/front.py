"""What comes before HTTP on a connection: the PROXY protocol header and TLS.

A listener with `proxy_protocol` or HTTPS gets a `FrontProtocol` per connection
instead of an `HTTPProtocol`. It reads, in order:

    PREAMBLE   the PROXY protocol v1/v2 header (proxy_protocol only), from a
               trusted peer; the source it announces becomes the client
    HANDSHAKE  the TLS handshake (HTTPS only)
    OPEN       an `HTTPProtocol` serves the connection

The two first phases are the start of the request head: together they run
under `header_timeout`, swept by the server's clock like every other deadline
(the front sits in the server's connection set until it hands over). A bad or
late PROXY header, a failed or late handshake, or plain HTTP sent to the HTTPS
port (answered with a plain 400 that says so) is one log line with the peer's
address and a close; nothing else is disturbed.

Without TLS, the front steps out of the way once the header is read
(`transport.set_protocol`): the connection then costs nothing more. With TLS
it stays, as a thin layer: an `ssl.SSLObject` over two memory BIOs, records
decrypted into `HTTPProtocol.data_received` and encrypted by `TLSTransport`,
the transport the HTTPProtocol writes to. That layer honours pause_reading
(decrypted bytes wait in the BIO), passes write backpressure through, offers
``ssl_object`` and ``peercert`` as extra info (so sendfile is not used), and
closes with a TLS close_notify: `write_eof` sends it and keeps reading until the
client closes, as a lingering close of plain TCP does.

The server's own loop TLS (``create_server(ssl=...)``) is not used because a
failed handshake is invisible to the server there (no line, no address), its
handshake timer lives outside the one clock, and nothing can be read before the
handshake (the PROXY header comes first).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any, Protocol, cast

from .protocol import FRESH_AT_SHUTDOWN_S
from .proxy import ProxyProtocolError, parse_proxy_header
from .tls import TLSInfo

if TYPE_CHECKING:
    from .server import ServerState

error_log = logging.getLogger("aserve.error")

PREAMBLE, HANDSHAKE, OPEN, CLOSED = range(4)
READ_SIZE = 64 * 1024


class _Upper(Protocol):
    """What the front feeds decrypted records to: the HTTPProtocol, then the
    WebSocketProtocol it may hand the connection to (`TLSTransport.set_protocol`)."""

    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


_PLAIN_TO_TLS = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 50\r\n"
    b"connection: close\r\n\r\n"
    b"This port speaks HTTPS: use https:// to reach it.\n"
)


class FrontProtocol(asyncio.Protocol):
    __slots__ = (
        "_state",
        "_raw",
        "_phase",
        "_client",
        "_preamble",
        "_context",
        "_incoming",
        "_outgoing",
        "_sslobj",
        "_app",
        "_tls",
        "_deadline",
        "_exchange",
        "_app_paused",
        "_write_closed",
        "_heard",
    )

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._raw: asyncio.Transport | None = None
        self._phase = PREAMBLE
        self._client: tuple[str, int] | None = None
        self._preamble = b""
        self._context = state.ssl_context
        self._incoming: ssl.MemoryBIO | None = None
        self._outgoing: ssl.MemoryBIO | None = None
        self._sslobj: ssl.SSLObject | None = None
        self._app: _Upper | None = None
        self._tls: TLSTransport | None = None
        #: Read by the server's clock and its shutdown, as of an HTTPProtocol.
        self._deadline: float | None = None
        self._exchange = None
        self._app_paused = False
        self._write_closed = False
        #: Whether the client sent any byte (a port probe sends none).
        self._heard = False

    # -- before HTTP ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = raw = cast(asyncio.Transport, transport)
        state = self._state
        peer = raw.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._client = (str(peer[0]), int(peer[1]))
        limit = state.config.max_connections
        if limit is not None and len(state.connections) >= limit:
            # No HTTP has been spoken yet, so there is no 503 to give: close.
            state.refused += 1
            state.refusals["max_connections"] += 1
            self._phase = CLOSED
            raw.abort()
            return
        state.connections.add(self)
        self._deadline = state.loop.time() + state.config.header_timeout
        if state.config.proxy_protocol:
            host = self._client[0] if self._client else None
            if host not in state.trusted:
                self._fail(f"PROXY protocol from {host}: not a trusted proxy (forwarded_allow_ips)")
                return
        else:
            self._start_tls()

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        self._heard = True
        if phase == OPEN:
            if self._write_closed:
                return  # lingering after our close_notify: drop what comes
            assert self._incoming is not None
            self._incoming.write(data)
            self._decrypt()
        elif phase == HANDSHAKE:
            assert self._incoming is not None
            self._incoming.write(data)
            self._handshake()
        elif phase == PREAMBLE:
            self._read_preamble(data)

    def _read_preamble(self, data: bytes) -> None:
        buffer = self._preamble + data if self._preamble else data
        try:
            found = parse_proxy_header(buffer)
        except ProxyProtocolError as exc:
            self._fail(f"PROXY protocol from {self._host()}: {exc}")
            return
        if found is None:
            self._preamble = buffer
            return
        self._preamble = b""
        if found.source is not None and found.family in ("TCP4", "TCP6"):
            self._client = found.source
        rest = buffer[found.consumed :]
        if self._context is None:
            self._open_plain(rest)
            return
        self._start_tls()
        if rest:
            self.data_received(rest)

    def _open_plain(self, rest: bytes) -> None:
        state = self._state
        raw = self._raw
        assert raw is not None
        state.connections.discard(self)
        self._phase = CLOSED
        self._deadline = None
        app = state.protocol_class(state)
        raw.set_protocol(app)
        app.connection_made(raw)
        app.set_client(self._client)
        if rest and not raw.is_closing():
            app.data_received(rest)

    def _start_tls(self) -> None:
        context = self._context
        assert context is not None
        self._phase = HANDSHAKE
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    def _handshake(self) -> None:
        sslobj = self._sslobj
        assert sslobj is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._flush()  # the alert, so that the client learns why
            self._handshake_failed(exc)
            return
        except Exception as exc:  # OpenSSL raises a few plain errors too
            self._handshake_failed(exc)
            return
        self._flush()
        self._open_tls()

    def _handshake_failed(self, exc: Exception) -> None:
        reason = getattr(exc, "reason", None)
        if reason == "HTTP_REQUEST":
            raw = self._raw
            assert raw is not None
            raw.write(_PLAIN_TO_TLS)
            self._fail(f"plain HTTP from {self._host()} to the HTTPS port: answered 400")
            return
        text = str(reason).replace("_", " ").lower() if reason else str(exc) or type(exc).__name__
        self._fail(f"TLS handshake with {self._host()} failed: {text}")

    def _open_tls(self) -> None:
        state = self._state
        state.connections.discard(self)
        self._phase = OPEN
        self._deadline = None
        self._tls = tls = TLSTransport(self)
        app = state.protocol_class(state)
        self._app = app
        app.connection_made(tls)
        app.set_client(self._client)
        self._decrypt()

    def _fail(self, message: str) -> None:
        error_log.warning("%s", message)
        self._close_raw()

    def _close_raw(self) -> None:
        state = self._state
        if self._phase != CLOSED:
            self._phase = CLOSED
            self._deadline = None
        if self._raw is not None:
            self._raw.close()
        if self._app is None and self in state.connections:
            state.connections.discard(self)
            state.connection_closed()

    def _host(self) -> str:
        return self._client[0] if self._client else "-"

    # -- asked by the server's clock and shutdown --------------------------

    def deadline_passed(self) -> None:
        self._deadline = None
        if self._state.shutting_down and not self._heard:
            self._close_raw()  # it never began: nothing to tell the log
            return
        if self._phase == PREAMBLE:
            what = "PROXY protocol header"
        elif self._phase == HANDSHAKE:
            what = "TLS handshake"
        else:
            return
        timeout = self._state.config.header_timeout
        self._fail(f"{what} from {self._host()} not completed within {timeout:g}s (header_timeout)")

    def shutdown(self) -> None:
        # A client in its handshake is mid-request: let it finish (under
        # header_timeout); its request is then served and the connection
        # closed. One that has sent nothing yet gets a moment to start.
        if self._phase in (PREAMBLE, HANDSHAKE) and not self._heard:
            grace = self._state.loop.time() + FRESH_AT_SHUTDOWN_S
            if self._deadline is None or self._deadline > grace:
                self._deadline = grace

    def abort(self) -> None:
        if self._raw is not None:
            self._raw.abort()

    # -- TLS records, once open ------------------------------------------

    def _decrypt(self) -> None:
        sslobj = self._sslobj
        incoming = self._incoming
        assert sslobj is not None and incoming is not None
        while not self._app_paused:
            # Asked each time: a record may have switched the connection to a
            # WebSocket (its handler can run inside data_received).
            app = self._app
            if app is None:
                return
            try:
                chunk = sslobj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._tls_eof()  # the client's close_notify
                break
            except ssl.SSLError as exc:
                reason = exc.reason or str(exc)
                error_log.warning("TLS error from %s: %s", self._host(), reason)
                self.abort()
                return
            if not chunk:
                self._tls_eof()
                break
            app.data_received(chunk)
            if not incoming.pending and not sslobj.pending():
                break
        if self._outgoing is not None and self._outgoing.pending:
            self._flush()  # post-handshake messages (session tickets, key updates)

    def _tls_eof(self) -> None:
        app = self._app
        raw = self._raw
        if app is None or raw is None:
            return
        if not app.eof_received():
            if self._tls is not None:
                self._tls.close()

    def _flush(self) -> None:
        outgoing = self._outgoing
        raw = self._raw
        if outgoing is not None and raw is not None and outgoing.pending:
            raw.write(outgoing.read())

    def _resume(self) -> None:
        if self._app_paused:
            self._app_paused = False
            if self._raw is not None:
                self._raw.resume_reading()
            if self._phase == OPEN and not self._write_closed:
                self._decrypt()

    def phase_name(self) -> str:
        """For metrics: before HTTP (a PROXY header, the TLS handshake)."""
        return "handshake" if self._phase != CLOSED else "closing"

    def eof_received(self) -> bool | None:
        if self._phase == OPEN and self._app is not None:
            if self._write_closed:
                return False
            return self._app.eof_received()
        if self._phase == HANDSHAKE and self._heard:
            # A probe, a client that gave up, or one that refused our certificate.
            error_log.warning(
                "TLS handshake with %s failed: the client closed the connection", self._host()
            )
        self._close_raw()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        app = self._app
        self._phase = CLOSED
        self._deadline = None
        if app is not None:
            app.connection_lost(exc)
            # front -> app -> TLSTransport -> front: let reference counting
            # free the connection without waiting for the cycle collector.
            self._app = None
            self._tls = None
            return
        state = self._state
        if self in state.connections:
            state.connections.discard(self)
            state.connection_closed()

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    def __repr__(self) -> str:
        return f"<FrontProtocol {self._client} phase={self._phase}>"


class TLSTransport(asyncio.Transport):
    """The transport an HTTPProtocol writes to under TLS: encrypts into the raw
    transport; reading, flow control and extra info pass through."""

    __slots__ = ("_front", "_closing", "_info")

    def __init__(self, front: FrontProtocol) -> None:
        self._front = front
        self._closing = False
        self._info: TLSInfo | None = None

    def write(self, data: Any) -> None:
        front = self._front
        if self._closing or front._write_closed:
            return
        sslobj = front._sslobj
        assert sslobj is not None
        try:
            sslobj.write(data)
        except ssl.SSLError as exc:
            error_log.warning("TLS error to %s: %s", front._host(), exc.reason or exc)
            front.abort()
            return
        front._flush()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _send_close_notify(self) -> None:
        front = self._front
        if front._write_closed:
            return
        front._write_closed = True
        sslobj = front._sslobj
        if sslobj is not None:
            try:
                sslobj.unwrap()
            except (ssl.SSLError, ValueError):
                pass  # the client's close_notify has not come: it need not
            front._flush()

    def can_write_eof(self) -> bool:
        raw = self._front._raw
        return raw is not None and raw.can_write_eof()

    def write_eof(self) -> None:
        """close_notify, then end the TCP write side; reading goes on."""
        self._send_close_notify()
        raw = self._front._raw
        if raw is not None:
            raw.write_eof()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._send_close_notify()
        raw = self._front._raw
        if raw is not None:
            raw.close()

    def abort(self) -> None:
        self._closing = True
        self._front.abort()

    def is_closing(self) -> bool:
        raw = self._front._raw
        return self._closing or raw is None or raw.is_closing()

    def pause_reading(self) -> None:
        front = self._front
        if not front._app_paused:
            front._app_paused = True
            if front._raw is not None:
                front._raw.pause_reading()

    def resume_reading(self) -> None:
        self._front._resume()

    def is_reading(self) -> bool:
        return not self._front._app_paused

    def get_write_buffer_size(self) -> int:
        raw = self._front._raw
        return raw.get_write_buffer_size() if raw is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        raw = self._front._raw
        return raw.get_write_buffer_limits() if raw is not None else (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raw = self._front._raw
        if raw is not None:
            raw.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        front = self._front
        sslobj = front._sslobj
        if name == "ssl_object":
            return sslobj
        if name == "aserve.tls":
            if self._info is None and sslobj is not None:
                self._info = TLSInfo(sslobj, front._context)
            return self._info
        if name == "sslcontext":
            return front._context
        if sslobj is not None:
            if name == "peercert":
                return sslobj.getpeercert()
            if name == "cipher":
                return sslobj.cipher()
            if name == "compression":
                return sslobj.compression()
        raw = front._raw
        return raw.get_extra_info(name, default) if raw is not None else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Decrypted records go to `protocol` from now on (an HTTPProtocol
        switching to a WebSocket)."""
        self._front._app = cast(_Upper, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        app = self._front._app
        assert app is not None
        return cast(asyncio.BaseProtocol, app)
