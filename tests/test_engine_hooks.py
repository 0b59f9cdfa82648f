"""Engine hooks other layers build on: handler startup/shutdown, FileSegment
bodies (sendfile), Unix-socket and inherited-socket listeners, the deadline clock."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import h11
import pytest

import aserve
from aserve.response import FileSegment
from aserve.server import clock_interval


class Hooked:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, request: aserve.Request) -> aserve.Response:
        self.calls.append("request")
        return aserve.PlainTextResponse("ok")

    async def startup(self) -> None:
        self.calls.append("startup")

    async def shutdown(self) -> None:
        self.calls.append("shutdown")


async def get(port: int, target: bytes = b"/", *, method: bytes = b"GET") -> tuple[bytes, bytes]:
    """One request on a fresh connection; returns (head, body) split at the blank line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(method + b" " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def test_startup_runs_before_listening_and_shutdown_after_close() -> None:
    handler = Hooked()
    async with aserve.Server(handler, port=0) as server:
        assert handler.calls == ["startup"]
        head, body = await get(server.port)
        assert body == b"ok"
    assert handler.calls == ["startup", "request", "shutdown"]


async def test_failing_startup_aborts_the_start() -> None:
    class Broken(Hooked):
        async def startup(self) -> None:
            raise RuntimeError("database unreachable")

    server = aserve.Server(Broken(), port=0)
    with pytest.raises(RuntimeError, match="database unreachable"):
        await server.start()
    assert not server.started


@pytest.fixture
def data_file() -> Iterator[tuple[int, bytes]]:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with tempfile.TemporaryFile() as f:
        f.write(payload)
        f.flush()
        yield f.fileno(), payload


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
async def test_file_segments_go_out_whole_and_in_order(
    data_file: tuple[int, bytes], with_length: bool
) -> None:
    fd, payload = data_file
    middle = len(payload) // 2

    async def segments() -> AsyncIterator[bytes | FileSegment]:
        yield b"<"
        yield FileSegment(fd, 0, middle)
        yield b"|"
        yield FileSegment(fd, middle, len(payload) - middle)
        yield b">"

    async def handler(request: aserve.Request) -> aserve.Response:
        headers = {"content-length": str(len(payload) + 3)} if with_length else None
        return aserve.StreamingResponse(segments(), headers=headers)

    async with aserve.Server(handler, port=0) as server:
        head, body = await get(server.port)
    if with_length:
        assert b"content-length: %d" % (len(payload) + 3) in head
        assert body == b"<" + payload[:middle] + b"|" + payload[middle:] + b">"
    else:
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "t")]))
        conn.receive_data(head + b"\r\n\r\n" + body)
        conn.receive_data(b"")
        chunks = []
        while type(event := conn.next_event()) is not h11.EndOfMessage:
            if type(event) is h11.Data:
                chunks.append(event.data)
        assert b"".join(chunks) == b"<" + payload[:middle] + b"|" + payload[middle:] + b">"


async def test_file_segment_to_a_slow_reader_keeps_backpressure(
    data_file: tuple[int, bytes],
) -> None:
    fd, payload = data_file

    async def handler(request: aserve.Request) -> aserve.Response:
        async def body() -> AsyncIterator[FileSegment]:
            yield FileSegment(fd, 0, len(payload))

        return aserve.StreamingResponse(body(), headers={"content-length": str(len(payload))})

    async with aserve.Server(handler, port=0) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = bytearray()
        async with asyncio.timeout(20):
            while data := await loop.sock_recv(sock, 4096):
                received += data
                if len(received) < 64 * 1024:
                    await asyncio.sleep(0.001)  # read slowly at first
        sock.close()
    assert bytes(received).partition(b"\r\n\r\n")[2] == payload


async def test_file_shorter_than_promised_closes_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"abc")
    fd = os.open(path, os.O_RDONLY)

    async def handler(request: aserve.Request) -> aserve.Response:
        async def body() -> AsyncIterator[FileSegment]:
            yield FileSegment(fd, 0, 10)

        return aserve.StreamingResponse(body(), headers={"content-length": "10"})

    try:
        async with aserve.Server(handler, port=0) as server:
            head, body = await get(server.port)
    finally:
        os.close(fd)
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) < 10  # truncated, and the connection closed rather than hanging


async def test_head_request_sends_no_file_bytes(data_file: tuple[int, bytes]) -> None:
    fd, payload = data_file

    async def handler(request: aserve.Request) -> aserve.Response:
        async def body() -> AsyncIterator[FileSegment]:
            yield FileSegment(fd, 0, len(payload))

        return aserve.StreamingResponse(body(), headers={"content-length": str(len(payload))})

    async with aserve.Server(handler, port=0) as server:
        head, body = await get(server.port, method=b"HEAD")
    assert b"content-length: %d" % len(payload) in head
    assert body == b""


async def test_unix_domain_socket_listener(tmp_path: Path) -> None:
    path = str(tmp_path / "aserve.sock")
    async with aserve.Server(Hooked(), uds=path):
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            data = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"ok")
    assert not os.path.exists(path)  # a clean exit leaves no socket file behind


async def test_unix_socket_file_replaced_by_another_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "aserve.sock"
    async with aserve.Server(Hooked(), uds=str(path)):
        path.unlink()
        path.write_text("someone else's")
    assert path.read_text() == "someone else's"


async def test_inherited_socket_listener() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with aserve.Server(Hooked(), fd=sock.detach()):
        head, body = await get(port)
    assert body == b"ok"


def test_clock_interval_follows_the_shortest_timeout() -> None:
    assert clock_interval(aserve.Config.build()) == 0.5
    assert clock_interval(aserve.Config.build(header_timeout=0.2)) == pytest.approx(0.05)
    assert clock_interval(aserve.Config.build(header_timeout=0.001)) == 0.01
    with pytest.raises(aserve.ConfigError):
        aserve.Config.build(uds="/tmp/x", fd=3)


async def test_request_sent_while_the_previous_one_is_busy_is_served_next() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: aserve.Request) -> aserve.Response:
        if request.path == "/slow":
            started.set()
            await release.wait()
        return aserve.PlainTextResponse(request.path)

    async with aserve.Server(handler, port=0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        async with asyncio.timeout(5):
            await started.wait()
        # A separate packet, arriving while /slow is still being handled.
        writer.write(b"GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # let the server read it while /slow is busy
        release.set()
        async with asyncio.timeout(5):
            data = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.endswith(b"/next")


async def test_disconnect_callbacks_fire_once_and_server_address_is_known() -> None:
    seen: dict[str, object] = {}
    entered = asyncio.Event()
    gone = asyncio.Event()

    async def handler(request: aserve.Request) -> aserve.Response:
        seen["server"] = request.server
        seen["before"] = request.disconnected
        request.on_disconnect(gone.set)
        entered.set()
        await gone.wait()
        seen["after"] = request.disconnected
        return aserve.PlainTextResponse("late")

    async with aserve.Server(handler, port=0) as server:
        port = server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        async with asyncio.timeout(5):
            await entered.wait()
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(5):
            await gone.wait()
    assert seen == {"server": ("127.0.0.1", port), "before": False, "after": True}
