"""Sans-IO WebSockets (RFC 6455) for one server connection: everything the
protocol decides, no IO.

Two parts, both without an event loop:

- The opening handshake, read from the request h11 already parsed (never from
  bytes again): `wants_websocket` says whether a request asks for one,
  `read_handshake` checks it (RFC 6455 4.2.1) and gives a `Handshake` or the
  HTTP answer it deserves, `negotiate_deflate` picks a `permessage-deflate`
  offer (RFC 7692) and `response_headers` makes the `101` head.
- `WSConnection`, over a `wsproto.Connection(SERVER)`: bytes in with
  `receive()`; whole messages (``str`` or ``bytes``) and control events out of
  `next_event()`; frames out of `send_message()`, `send_close()`,
  `send_ping()`, `send_pong()`. A message larger than `max_size` (after
  inflating) and every protocol fault wsproto finds become a `Fault` with the
  close code it deserves (1002, 1007, 1009).

wsproto is the state machine, and this class uses it the way the HTTP engine
uses h11: for everything it decides, not for the work it would only do
slower. Bytes are cut into frames here (a head is two to fourteen bytes) and
wsproto is handed whole frames, so that it never holds a partial one between
two frames. The commonest frame -- whole, final, masked, uncompressed text
or binary of at most `FAST_MAX` bytes, outside a fragmented message -- is
read here: unmasked with one integer XOR, text decoded strictly (1007 when it
is not UTF-8), exactly as wsproto would read it; every other frame (control
frames and closes, fragments, compressed, malformed, larger) goes to wsproto,
which validates it and answers. A test sends random frame sequences, cut at
random, both ways and compares the events. Measured with
benchmarks/ws_instructions.py, an echo round trip costs about half the
instructions it costs with wsproto reading every frame (92,000 against 171,000).

Data frames going out are framed here too: a server's frames are unmasked and
sent whole, and the payload is passed on without the two copies wsproto
makes; with `permessage-deflate` they are compressed here, with a small
window and memory level (a deflate state per connection is the largest thing
an idle session holds). Control frames go through wsproto, whose state they
change.

Bounded memory: a data frame whose head announces more than `max_size` bytes
is refused (1009) before its payload comes, unless compressed; a compressed
frame reaches wsproto `INFLATE_SLICE` bytes at a time and the size limit is
checked after each, so no read can inflate past about a thousand times that
before it is refused (deflate's ratio is at most 1032:1). Otherwise at most
the message being assembled is held, up to `max_size`, and a simple frame of
at most `FAST_MAX` bytes until it is whole.

wsproto is an optional dependency (``pip install 'aserve[ws]'``), and it is
imported with the first WebSocket, not with aserve (it is about 40 ms of a
server's start-up): `available()` imports it once and says whether that
worked. Without it the handshake functions still work and `WSConnection`
cannot be made; the server then never upgrades a connection.

This module never imports asyncio: it is tested with tables of bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # at run time, imported by available()
    from wsproto import ConnectionType
    from wsproto.connection import Connection, ConnectionState
    from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
    from wsproto.extensions import PerMessageDeflate
    from wsproto.frame_protocol import CloseReason

_imported: bool | None = None  # whether wsproto imported, once tried


def available() -> bool:
    """Whether wsproto is installed; the first call imports it."""
    global _imported
    if _imported is None:
        try:
            from wsproto import ConnectionType
            from wsproto.connection import Connection, ConnectionState
            from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
            from wsproto.extensions import PerMessageDeflate
            from wsproto.frame_protocol import CloseReason
        except ImportError:  # the core install has no wsproto
            _imported = False
        else:
            globals().update(
                ConnectionType=ConnectionType,
                Connection=Connection,
                ConnectionState=ConnectionState,
                BytesMessage=BytesMessage,
                CloseConnection=CloseConnection,
                Ping=Ping,
                Pong=Pong,
                TextMessage=TextMessage,
                PerMessageDeflate=PerMessageDeflate,
                CloseReason=CloseReason,
            )
            _imported = True
    return _imported


#: What to install for WebSockets, for error messages.
EXTRA: Final = "pip install 'aserve[ws]'"

# RFC 6455 1.3: appended to the client's key before hashing.
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
# RFC 6455 9.1: extension = token *( ";" extension-param ), a param being a
# token with an optional "=" token or quoted-string.
_TOKEN_CHARS = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_PARAM_SOURCE = (
    rb"[ \t]*;[ \t]*(" + _TOKEN_CHARS + rb")(?:[ \t]*=[ \t]*(" + _TOKEN_CHARS + rb'|"[^"\\]*"))?'
)
_EXTENSION: Final = re.compile(
    rb"[ \t]*(" + _TOKEN_CHARS + rb")((?:" + _PARAM_SOURCE + rb")*)[ \t]*(?:,|\Z)"
)
_PARAM: Final = re.compile(_PARAM_SOURCE)

#: Headers of the 101 that the server writes itself: an app may not set them.
RESERVED_HEADERS: Final = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"content-length",
        b"transfer-encoding",
    }
)

#: With permessage-deflate, bytes go to wsproto this many at a time (see the module docstring).
INFLATE_SLICE: Final = 4096
#: The largest simple frame read here rather than by wsproto (module docstring).
FAST_MAX: Final = 64 * 1024
#: The window we ask for and compress with (RFC 7692 7.1.2), and zlib's memory
#: level: about 32 KiB of deflate state per session instead of 256 KiB.
WINDOW_BITS: Final = 12
MEM_LEVEL: Final = 5
#: Messages shorter than this go out uncompressed (RFC 7692 6: per message).
COMPRESS_MIN: Final = 64
#: A payload up to this size is joined to its head (one write); a larger one
#: is written after it, uncopied.
JOIN_MAX: Final = 16 * 1024

# Close codes (RFC 6455 7.4.1).
NORMAL: Final = 1000
GOING_AWAY: Final = 1001
PROTOCOL_ERROR: Final = 1002
UNSUPPORTED_DATA: Final = 1003
ABNORMAL: Final = 1006
INVALID_DATA: Final = 1007
TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011


# --------------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class Handshake:
    """A valid opening handshake: the client's key, the subprotocols it
    offers (in its order of preference) and its extension offers as sent."""

    key: bytes
    subprotocols: tuple[str, ...]
    extensions: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class HandshakeError:
    """The request asked for a WebSocket and cannot have one: answer `status`."""

    status: int
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip(b" \t").lower() for token in value.split(b",")]


def wants_websocket(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request's (lowercase name, value) pairs say ``Upgrade: websocket``."""
    return any(name == b"upgrade" and b"websocket" in _tokens(value) for name, value in headers)


def read_handshake(
    method: bytes, http_version: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> Handshake | HandshakeError:
    """Check a request that asks for a WebSocket (RFC 6455 4.2.1)."""
    if method != b"GET":
        return HandshakeError(400, "A WebSocket handshake must be a GET request")
    if http_version != b"1.1":
        return HandshakeError(400, "A WebSocket handshake needs HTTP/1.1")
    connection_upgrade = False
    keys: list[bytes] = []
    versions: list[bytes] = []
    protocols: list[str] = []
    extensions: list[bytes] = []
    for name, value in headers:
        if name == b"connection":
            connection_upgrade = connection_upgrade or b"upgrade" in _tokens(value)
        elif name == b"sec-websocket-key":
            keys.append(value.strip(b" \t"))
        elif name == b"sec-websocket-version":
            versions.append(value.strip(b" \t"))
        elif name == b"sec-websocket-protocol":
            for token in value.split(b","):
                token = token.strip(b" \t")
                if not token:
                    continue
                if _TOKEN.fullmatch(token) is None:
                    return HandshakeError(400, "Malformed Sec-WebSocket-Protocol")
                protocols.append(token.decode("ascii"))
        elif name == b"sec-websocket-extensions":
            extensions.append(value)
        elif name == b"content-length":
            if value.strip(b" \t") != b"0":
                return HandshakeError(400, "A WebSocket handshake has no body")
        elif name == b"transfer-encoding":
            return HandshakeError(400, "A WebSocket handshake has no body")
    if not connection_upgrade:
        return HandshakeError(400, "A WebSocket handshake needs Connection: Upgrade")
    if versions != [b"13"]:
        # RFC 6455 4.2.2 and 4.4: say which version we speak.
        return HandshakeError(
            426, "Unsupported WebSocket version", ((b"sec-websocket-version", b"13"),)
        )
    if len(keys) != 1 or not _valid_key(keys[0]):
        return HandshakeError(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    return Handshake(keys[0], tuple(protocols), tuple(extensions))


def _valid_key(key: bytes) -> bool:
    # RFC 6455 4.1: a nonce of 16 random bytes, base64-encoded (24 characters).
    if len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def accept_token(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a client's key (RFC 6455 4.2.2, step 5.4)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


@dataclass(frozen=True, slots=True)
class Deflate:
    """The permessage-deflate parameters agreed on (RFC 7692 7.1)."""

    #: Our response's header value.
    response: str
    server_no_context_takeover: bool
    client_no_context_takeover: bool
    #: Our compression window; the client's, which we inflate (15 when it set none).
    server_max_window_bits: int
    client_max_window_bits: int


def negotiate_deflate(offers: Sequence[bytes]) -> Deflate | None:
    """The first acceptable permessage-deflate offer of the client's, or None.

    An offer with an unknown, repeated or malformed parameter is declined, as
    RFC 7692 5 asks, and the next one tried. We ask for a window of
    `WINDOW_BITS` where the offer lets us (always for ours, RFC 7692
    7.1.2.1; for the client's when it offered ``client_max_window_bits``).
    """
    for value in offers:
        for name, params in _extension_offers(value):
            if name != "permessage-deflate" or params is None:
                continue
            found = _deflate_params(params)
            if found is not None:
                return found
    return None


def _extension_offers(value: bytes) -> list[tuple[str, list[tuple[str, str | None]] | None]]:
    """(name, params) of each extension in a header value; params None when unreadable."""
    offers: list[tuple[str, list[tuple[str, str | None]] | None]] = []
    pos = 0
    while pos < len(value):
        match = _EXTENSION.match(value, pos)
        if match is None or match.end() == pos:
            break  # the rest is malformed: nothing more is offered
        pos = match.end()
        params: list[tuple[str, str | None]] = []
        for param in _PARAM.finditer(match.group(2)):
            raw = param.group(2)
            text = None if raw is None else raw.strip(b'"').decode("latin-1")
            params.append((param.group(1).decode("ascii").lower(), text))
        offers.append((match.group(1).decode("ascii").lower(), params))
    return offers


def _deflate_params(params: list[tuple[str, str | None]]) -> Deflate | None:
    seen: set[str] = set()
    server_no = client_no = False
    server_bits: int | None = None
    client_bits: int | None = None
    client_bits_offered = False
    for name, value in params:
        if name in seen:
            return None
        seen.add(name)
        if name == "server_no_context_takeover" and value is None:
            server_no = True
        elif name == "client_no_context_takeover" and value is None:
            client_no = True
        elif name == "server_max_window_bits":
            server_bits = _window_bits(value)
            if server_bits is None:
                return None
        elif name == "client_max_window_bits":
            client_bits_offered = True
            if value is not None:
                client_bits = _window_bits(value)
                if client_bits is None:
                    return None
        else:
            return None
    if server_bits == 8:
        return None  # zlib cannot compress raw deflate with a 256-byte window
    ours = min(server_bits or WINDOW_BITS, WINDOW_BITS)
    theirs = min(client_bits or WINDOW_BITS, WINDOW_BITS) if client_bits_offered else 15
    response = ["permessage-deflate"]
    if server_no:
        response.append("server_no_context_takeover")
    if client_no:
        response.append("client_no_context_takeover")
    response.append(f"server_max_window_bits={ours}")
    if client_bits_offered:
        response.append(f"client_max_window_bits={theirs}")
    return Deflate("; ".join(response), server_no, client_no, ours, max(theirs, 9))


def _window_bits(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def response_headers(
    handshake: Handshake,
    subprotocol: str | None,
    deflate: Deflate | None,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> list[tuple[bytes, bytes, bytes]]:
    """The headers of the 101 (name as sent, lowercase name, value). Raises
    ValueError for a subprotocol the client did not offer or an extra header
    the server sets itself."""
    headers = [
        (b"upgrade", b"upgrade", b"websocket"),
        (b"connection", b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"sec-websocket-accept", accept_token(handshake.key)),
    ]
    if subprotocol is not None:
        if subprotocol not in handshake.subprotocols:
            offered = ", ".join(handshake.subprotocols) or "none"
            raise ValueError(
                f"subprotocol {subprotocol!r} was not offered by the client (offered: {offered})"
            )
        value = subprotocol.encode("ascii")
        headers.append((b"sec-websocket-protocol", b"sec-websocket-protocol", value))
    if deflate is not None:
        value = deflate.response.encode("ascii")
        headers.append((b"sec-websocket-extensions", b"sec-websocket-extensions", value))
    for name, value in extra:
        lower = name.lower()
        if lower in RESERVED_HEADERS:
            raise ValueError(f"the {name.decode('latin-1')} header of a 101 is the server's")
        headers.append((name, lower, value))
    return headers


# --------------------------------------------------------------------------- the connection


@dataclass(frozen=True, slots=True)
class Close:
    """The client sent a close frame (its code: 1005 when it gave none)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Fault:
    """The client broke the protocol or a limit: close with `code`."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class PingEvent:
    """A ping: answer it with `send_pong(payload)`."""

    payload: bytes


class PongEvent:
    """A pong, an answer to our ping (or unsolicited, which RFC 6455 5.5.3 allows)."""

    __slots__ = ()


PONG: Final = PongEvent()

Event = str | bytes | Close | Fault | PingEvent | PongEvent


class WSConnection:
    """One server-side WebSocket connection after the 101, as a sans-IO object."""

    __slots__ = (
        "_conn",
        "_events",
        "_buffer",
        "_feeding",
        "_slice",
        "_mid",
        "_fast",
        "_max_size",
        "_parts",
        "_size",
        "_deflate",
        "_compressor",
        "fault",
    )

    def __init__(self, max_size: int, deflate: Deflate | None = None, data: bytes = b"") -> None:
        if not available():
            raise RuntimeError(f"WebSockets need wsproto: {EXTRA}")
        extensions: list[Any] = []
        if deflate is not None:
            extension = PerMessageDeflate()
            # The agreed parameters, as a client would learn them from our response.
            extension.finalize(deflate.response)
            extensions.append(extension)
        self._conn = Connection(ConnectionType.SERVER, extensions)
        self._events: Any = None
        # Bytes received and neither read here nor handed to wsproto; wsproto
        # gets them a frame at a time, so that between frames it holds none.
        self._buffer = bytearray()
        # Bytes of the frame being handed to wsproto that are still to come.
        self._feeding = 0
        # How many bytes of a compressed frame wsproto gets at a time.
        self._slice = INFLATE_SLICE
        # wsproto is inside a fragmented message: every data frame goes to it.
        self._mid = False
        #: Read simple frames here (see FAST_MAX); False: wsproto reads all.
        self._fast = True
        self._max_size = max_size
        # The unfinished message: its parts and their size in bytes.
        self._parts: list[Any] = []
        self._size = 0
        self._deflate = deflate
        self._compressor: Any = None
        #: Set once the client broke the protocol: nothing more is read.
        self.fault: Fault | None = None
        if data:
            self.receive(data)

    # -- bytes in ---------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Feed bytes from the socket."""
        if self.fault is not None or self._conn.state is ConnectionState.CLOSED:
            return  # nothing after a fault or the close handshake is read
        self._buffer += data

    def next_event(self) -> Event | None:
        """The next whole message (str or bytes), `PingEvent`, `PONG`,
        `Close` or `Fault`; None when more bytes are needed."""
        if self.fault is not None:
            return None
        conn = self._conn
        while True:
            events = self._events
            if events is not None:
                event = next(events, None)
                if event is not None:
                    found = self._event(event)
                    if found is not None:
                        return found
                    continue
                self._events = None
            state = conn.state
            if state is not ConnectionState.OPEN and state is not ConnectionState.LOCAL_CLOSING:
                return None  # the client's close came: nothing after it is read
            buffer = self._buffer
            if self._feeding:
                if not buffer:
                    return None
                self._feed(self._feeding)
                continue
            if len(buffer) < 2:
                return None
            frame = self._frame(buffer)
            if frame is None:
                return None  # a head still incomplete
            if not isinstance(frame, int):
                return frame  # a message read here, or a fault
            self._feeding = frame
            self._feed(frame)

    def _frame(self, buffer: bytearray) -> Event | int | None:
        """Read the frame at the start of `buffer` when it is a simple one: a
        whole, final, masked, uncompressed text or binary frame of at most
        FAST_MAX bytes, outside a fragmented message; every other frame is
        wsproto's to read (its length is returned: it gets exactly that
        frame). None while its head or a simple frame is incomplete."""
        first = buffer[0]
        second = buffer[1]
        size = second & 0x7F
        at = 2
        if size == 126:
            if len(buffer) < 4:
                return None
            size = (buffer[2] << 8) | buffer[3]
            at = 4
            minimal = size > 125
        elif size == 127:
            if len(buffer) < 10:
                return None
            size = int.from_bytes(buffer[2:10], "big")
            at = 10
            minimal = size > 0xFFFF and size < 1 << 63
        else:
            minimal = True
        opcode = first & 0x0F
        if opcode <= 2 and minimal and not first & 0x40 and size > self._max_size:
            # Refused on its head, before its payload comes (a compressed one
            # may inflate to anything: its size is checked once inflated).
            return self._fail(TOO_BIG, f"message larger than {self._max_size} bytes")
        length = at + 4 + size if second & 0x80 else at + size
        if (
            first & 0xF0 == 0x80  # final, no reserved bit: not compressed
            and (opcode == 1 or opcode == 2)
            and second & 0x80  # masked, as every client frame must be
            and minimal
            and size <= FAST_MAX
            and self._fast
            and not self._mid
        ):
            if len(buffer) < length:
                return None
            key = buffer[at : at + 4]
            payload = bytes(buffer[at + 4 : length])
            del buffer[:length]
            if size:
                mask = int.from_bytes(key * (size // 4 + 1), "little") & ((1 << (size * 8)) - 1)
                payload = (int.from_bytes(payload, "little") ^ mask).to_bytes(size, "little")
            if opcode == 2:
                return payload
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                return self._fail(INVALID_DATA, str(exc))
        if opcode <= 2:
            self._mid = not first & 0x80  # a data frame: its message goes on unless final
        return length

    def _feed(self, wanted: int) -> None:
        """Hand wsproto up to `wanted` bytes of the frame under way (a slice
        at a time when compressed, see the module docstring)."""
        buffer = self._buffer
        count = min(wanted, len(buffer))
        if self._deflate is not None:
            count = min(count, self._slice)
        if count == len(buffer):
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:count])
            del buffer[:count]
        self._feeding = wanted - count
        self._conn.receive_data(data)
        self._events = self._conn.events()

    def _event(self, event: Any) -> Event | None:
        """One of wsproto's events as ours (None: part of a message)."""
        kind = type(event)
        if kind is TextMessage or kind is BytesMessage:
            data = event.data
            if kind is TextMessage and not data.isascii():
                size = self._size + len(data.encode("utf-8"))
            else:
                size = self._size + len(data)
            if size > self._max_size:
                return self._fail(TOO_BIG, f"message larger than {self._max_size} bytes")
            if event.message_finished:
                parts = self._parts
                self._size = 0
                message: str | bytes = data
                if parts:
                    parts.append(data)
                    self._parts = []
                    message = "".join(parts) if kind is TextMessage else b"".join(parts)
                return message
            self._parts.append(data)
            self._size = size
            return None
        if kind is Ping:
            return PingEvent(bytes(event.payload))
        if kind is Pong:
            return PONG
        if kind is CloseConnection:
            state = self._conn.state
            code = int(event.code)
            if state is ConnectionState.OPEN or state is ConnectionState.LOCAL_CLOSING:
                # wsproto reports a fault as a close it "received", and
                # leaves its state as it was: a real close moves it on.
                return self._fail(code, event.reason or "protocol error")
            return Close(code, event.reason or "")
        return None  # pragma: no cover - wsproto has no other events for a server

    def _fail(self, code: int, reason: str) -> Fault:
        fault = self.fault = Fault(code, reason)
        self._buffer.clear()
        self._parts = []
        self._events = None
        return fault

    # -- state ------------------------------------------------------------

    @property
    def can_send(self) -> bool:
        """Data may still be sent: no close frame went either way."""
        return self._conn.state is ConnectionState.OPEN and self.fault is None

    @property
    def deflate(self) -> Deflate | None:
        return self._deflate

    # -- bytes out --------------------------------------------------------

    def send_message(self, data: str | bytes | bytearray | memoryview) -> list[Any]:
        """The frame of one message, as pieces to write in order: the head
        with a small payload, or the head then the payload itself."""
        if isinstance(data, str):
            first = 0x81
            payload: Any = data.encode("utf-8")
        else:
            first = 0x82
            payload = data
        size = len(payload)
        if self._deflate is not None and size >= COMPRESS_MIN:
            payload = self._compress(payload)
            size = len(payload)
            first |= 0x40  # RSV1: this message is compressed (RFC 7692 6)
        if size < 126:
            head = bytes((first, size))
        elif size < 65536:
            head = struct.pack("!BBH", first, 126, size)
        else:
            head = struct.pack("!BBQ", first, 127, size)
        if size <= JOIN_MAX:
            return [head + payload]
        return [head, payload]

    def _compress(self, payload: Any) -> bytes:
        deflate = self._deflate
        assert deflate is not None
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION,
                zlib.DEFLATED,
                -deflate.server_max_window_bits,
                MEM_LEVEL,
            )
        out: bytes = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if deflate.server_no_context_takeover:
            self._compressor = None
        # RFC 7692 7.2.1: the sync flush's empty block (00 00 ff ff) is left off.
        return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out

    def send_ping(self, payload: bytes = b"") -> bytes:
        if self._conn.state is not ConnectionState.OPEN:
            return b""
        return self._conn.send(Ping(payload=payload))

    def send_pong(self, payload: bytes) -> bytes:
        if self._conn.state is not ConnectionState.OPEN:
            return b""
        return self._conn.send(Pong(payload=payload))

    def send_close(self, code: int = NORMAL, reason: str = "") -> bytes:
        """Our close frame (the answer to the client's, when it sent one first);
        empty when one already went out."""
        state = self._conn.state
        if state is not ConnectionState.OPEN and state is not ConnectionState.REMOTE_CLOSING:
            return b""
        if code == 1005:
            # The client's close had no code: ours has none either (wsproto
            # knows "no code" by this member; it sends other local-only codes,
            # 1006 and 1015, as 1000).
            return self._conn.send(CloseConnection(code=CloseReason.NO_STATUS_RCVD))
        return self._conn.send(CloseConnection(code=code, reason=reason or None))
