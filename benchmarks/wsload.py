"""A WebSocket load generator and client for the benchmarks: echo round trips
over many connections, and idle sessions held open for memory.py.

wrk speaks no WebSocket, so the ``websocket`` group (see groups.py) runs this
instead, pinned to the client CPU as wrk is: each of C connections sends one
masked 64-byte text message, waits for the echo, and sends the next, for D
seconds; it reports round trips per second and the latency percentiles. It is
cheap by design, so that the server, not the client, is what is measured: one
frame is built (and masked) once per connection and sent again and again, and
replies are only framed, never decoded. Standard library only (uvloop when
it imports).

    python wsload.py run PORT [--path /ws] [--connections 64] [--duration 10]
    python wsload.py check PORT [--path /ws]

Both print one JSON object on standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
from typing import Any

HOST = "127.0.0.1"
MESSAGE = b'{"type":"tick","n":1234567,"payload":"abcdefghijklmnopqrstuvwx"}'  # 64 bytes
assert len(MESSAGE) == 64


def handshake(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode("ascii")


def masked_text(payload: bytes) -> bytes:
    """A client's text frame (payload under 126 bytes), masked as RFC 6455 asks."""
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + key + masked


CLOSE_FRAME = bytes([0x88, 0x82]) + b"\x00\x00\x00\x00" + struct.pack("!H", 1000)


class EchoClient(asyncio.Protocol):
    """One connection: the handshake, then echo round trips while `running`."""

    def __init__(self, request: bytes, frame: bytes, stats: Stats) -> None:
        self.request = request
        self.frame = frame
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.sent_at = 0.0
        self.echo: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                if not self.opened.done():
                    self.opened.set_exception(RuntimeError(f"no 101: {head[:200]!r}"))
                return
            self.upgraded = True
            if not self.opened.done():
                self.opened.set_result(None)
        while len(buffer) >= 2:
            size = buffer[1] & 0x7F
            at = 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size = struct.unpack_from("!H", buffer, 2)[0]
                at = 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size = struct.unpack_from("!Q", buffer, 2)[0]
                at = 10
            if len(buffer) < at + size:
                return
            opcode = buffer[0] & 0x0F
            payload = bytes(buffer[at : at + size])
            del buffer[: at + size]
            if opcode in (0x1, 0x2):
                self.reply(payload)
            elif opcode == 0x9 and self.transport is not None:  # a ping: answer it
                self.transport.write(bytes([0x8A, 0x80 | size]) + b"\x00" * 4 + payload)

    def reply(self, payload: bytes) -> None:
        if self.echo is not None and not self.echo.done():
            self.echo.set_result(payload)
            return
        stats = self.stats
        now = time.perf_counter()
        if stats.measuring:
            stats.count += 1
            stats.latencies.append(now - self.sent_at)
        if stats.running and self.transport is not None:
            self.sent_at = now
            self.transport.write(self.frame)

    def start(self) -> None:
        if self.transport is not None:
            self.sent_at = time.perf_counter()
            self.transport.write(self.frame)

    async def roundtrip(self, payload: bytes) -> bytes:
        """One echo outside a measured run (a check, a session opened to be held)."""
        self.echo = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(masked_text(payload))
        try:
            return await asyncio.wait_for(self.echo, 30)
        finally:
            self.echo = None

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(CLOSE_FRAME)
            self.transport.close()


class Stats:
    def __init__(self) -> None:
        self.running = False
        self.measuring = False
        self.count = 0
        self.latencies: list[float] = []


async def connect(port: int, path: str, stats: Stats) -> EchoClient:
    loop = asyncio.get_running_loop()
    request = handshake(port, path)
    frame = masked_text(MESSAGE)
    _, client = await loop.create_connection(lambda: EchoClient(request, frame, stats), HOST, port)
    await asyncio.wait_for(client.opened, 30)
    return client


async def open_sessions(port: int, path: str, count: int, concurrency: int) -> list[EchoClient]:
    """`count` WebSocket sessions, each upgraded and one echo answered; all left open."""
    gate = asyncio.Semaphore(concurrency)
    stats = Stats()

    async def one() -> EchoClient:
        async with gate:
            client = await connect(port, path, stats)
            if await client.roundtrip(b"hello") != b"hello":
                raise RuntimeError("wrong echo")
            return client

    done = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    clients = [c for c in done if isinstance(c, EchoClient)]
    errors = [e for e in done if isinstance(e, BaseException)]
    if errors:
        close_sessions(clients)
        raise RuntimeError(f"{len(errors)} of {count} sessions failed, first: {errors[0]!r}")
    return clients


def close_sessions(clients: list[EchoClient]) -> None:
    for client in clients:
        client.close()


async def warm_up(port: int, path: str, connections: int, messages: int) -> None:
    clients = await open_sessions(port, path, connections, connections)
    try:
        for _ in range(messages):
            await asyncio.gather(*(c.roundtrip(MESSAGE) for c in clients))
    finally:
        close_sessions(clients)


async def run(port: int, path: str, connections: int, duration: float) -> dict[str, Any]:
    stats = Stats()
    clients = await asyncio.gather(*(connect(port, path, stats) for _ in range(connections)))
    stats.running = stats.measuring = True
    started = time.perf_counter()
    for client in clients:
        client.start()
    await asyncio.sleep(duration)
    stats.measuring = False
    elapsed = time.perf_counter() - started
    stats.running = False
    await asyncio.sleep(0.2)  # let the last replies come in
    close_sessions(clients)
    latencies = sorted(stats.latencies)

    def percentile(q: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "round_trips": stats.count,
        "seconds": round(elapsed, 3),
        "per_sec": round(stats.count / elapsed, 1),
        "p50_ms": round(percentile(0.50), 3),
        "p99_ms": round(percentile(0.99), 3),
        "connections": connections,
        "message_bytes": len(MESSAGE),
    }


async def check(port: int, path: str) -> dict[str, Any]:
    stats = Stats()
    client = await connect(port, path, stats)
    try:
        answer = await client.roundtrip(MESSAGE)
    finally:
        client.close()
    if answer != MESSAGE:
        return {"ok": False, "problem": f"echo {answer[:80]!r}, expected {MESSAGE!r}"}
    return {"ok": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["run", "check"])
    parser.add_argument("port", type=int)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        if args.command == "run":
            result = runner(run(args.port, args.path, args.connections, args.duration))
        else:
            result = runner(check(args.port, args.path))
    except Exception as exc:
        print(json.dumps({"ok": False, "problem": repr(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
