"""A raw WebSocket client for tests that speak bytes: the opening handshake,
frames exactly as the test writes them (masked or not, malformed on purpose),
and the server's frames parsed back. Every read is bounded by READ_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from dataclasses import dataclass

from conftest import READ_TIMEOUT

KEY = base64.b64encode(b"0123456789abcdef").decode("ascii")

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
#: The masking key of RFC 6455 5.7's examples.
MASK = b"\x37\xfa\x21\x3d"


def handshake(
    path: str = "/ws",
    *,
    key: str | None = KEY,
    version: str | None = "13",
    extra: tuple[str, ...] = (),
    method: str = "GET",
    http_version: str = "1.1",
    connection: str = "Upgrade",
) -> bytes:
    lines = [
        f"{method} {path} HTTP/{http_version}",
        "Host: test",
        "Upgrade: websocket",
        f"Connection: {connection}",
    ]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One frame as a client sends it (masked unless told otherwise);
    `length` lies about the payload's length."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = MASK  # fixed, so that parametrized frames have the same test ids everywhere
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")


@dataclass
class Frame:
    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0

    @property
    def code(self) -> int | None:
        """A close frame's code (None when it has none)."""
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def reason(self) -> str:
        return self.payload[2:].decode("utf-8")


class RawWebSocket:
    """A loopback connection that has done the handshake (or tried to)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.head = b""

    @classmethod
    async def connect(cls, port: int, request: bytes | None = None) -> RawWebSocket:
        """Connect and send the handshake; `head` is the server's answer head
        (read up to its empty line; a body after a refusal stays unread)."""
        async with asyncio.timeout(READ_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            client = cls(reader, writer)
            writer.write(handshake() if request is None else request)
            await writer.drain()
            client.head = await reader.readuntil(b"\r\n\r\n")
        return client

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def header(self, name: str) -> str | None:
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, timeout: float = READ_TIMEOUT) -> Frame | None:
        """The next frame from the server, None when it closed the connection."""
        try:
            async with asyncio.timeout(timeout):
                first = await self.reader.readexactly(2)
                size = first[1] & 0x7F
                if size == 126:
                    size = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif size == 127:
                    size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                assert not first[1] & 0x80, "a server's frames are never masked"
                payload = await self.reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            assert not exc.partial, f"connection closed mid-frame: {exc.partial!r}"
            return None
        except ConnectionResetError:
            return None
        return Frame(first[0] & 0x0F, payload, bool(first[0] & 0x80), (first[0] >> 4) & 0x7)

    async def read_close(self, timeout: float = READ_TIMEOUT) -> Frame:
        """Frames until the server's close frame (data and pings skipped)."""
        while True:
            found = await self.read_frame(timeout)
            assert found is not None, "the server closed the connection without a close frame"
            if found.opcode == CLOSE:
                return found

    async def wait_closed(self, timeout: float = READ_TIMEOUT) -> bytes:
        """Read until the server closes the TCP connection; what came."""
        rest = bytearray()
        try:
            async with asyncio.timeout(timeout):
                while data := await self.reader.read(65536):
                    rest += data
        except ConnectionResetError:
            pass
        return bytes(rest)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(READ_TIMEOUT):
                await self.writer.wait_closed()
