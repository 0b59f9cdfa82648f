"""Shared tools for the engine tests: a real Server on port 0 and a raw HTTP client.

The client writes raw bytes over a loopback socket and parses what comes back
with an h11 client connection, so that every framing detail the server gets
wrong shows up as an h11 error or as a wrong event. Every read is bounded by
`READ_TIMEOUT`. Time is waited on only where there is no event to await:
silence (`assert_silent`) and a stall (`settle`, `send_until_blocked`).

The engine tests run twice, once on the stdlib event loop and once on uvloop
(see `pytest_asyncio_loop_factories`), because their transports differ in
exactly the places the engine cares about: write buffering, pausing, closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.util
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import h11
import pytest

if TYPE_CHECKING:
    import aserve

# Let `pytest tests` import the package from the working tree when it is not installed.
_ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("aserve") is None:
    sys.path.insert(0, str(_ROOT))

#: Upper bound for any single wait on the server (a read, a close, a start).
READ_TIMEOUT = 3.0
#: Graceful timeout used when a test's server is shut down at the end of the test.
SHUTDOWN_TIMEOUT = 2.0

Handler = Callable[["aserve.Request"], Awaitable["aserve.Response"]]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    """Run every async engine test on both event loops aserve supports."""
    if item.path.name.startswith("test_engine_"):
        import uvloop

        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


# --------------------------------------------------------------------------- replies


@dataclass
class Reply:
    """One parsed response: the final head, its body, and any 1xx that preceded it."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    http_version: bytes = b"1.1"
    informational: list[h11.InformationalResponse] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The value of header `name` (case-insensitive), or None; fails if it repeats."""
        values = self.header_values(name)
        assert len(values) <= 1, f"header {name!r} repeated: {values}"
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [value.decode("latin-1") for n, value in self.headers if n == key]

    def has_header(self, name: str) -> bool:
        return bool(self.header_values(name))


def merge_data(events: Iterable[Any]) -> list[Any]:
    """Join consecutive h11.Data events: how TCP splits a body is not part of the answer."""
    merged: list[Any] = []
    parts: list[bytes] = []
    for event in events:
        if isinstance(event, h11.Data):
            parts.append(bytes(event.data))
            continue
        if parts:
            merged.append(h11.Data(data=b"".join(parts)))
            parts = []
        merged.append(event)
    if parts:
        merged.append(h11.Data(data=b"".join(parts)))
    return merged


def replies(events: Iterable[Any]) -> list[Reply]:
    """Group a list of h11 client events into one `Reply` per final response."""
    result: list[Reply] = []
    informational: list[h11.InformationalResponse] = []
    current: Reply | None = None
    body: list[bytes] = []
    for event in events:
        if isinstance(event, h11.InformationalResponse):
            informational.append(event)
        elif isinstance(event, h11.Response):
            current = Reply(
                status=event.status_code,
                reason=bytes(event.reason),
                headers=[(bytes(n), bytes(v)) for n, v in event.headers],
                body=b"",
                http_version=bytes(event.http_version),
                informational=informational,
            )
            informational = []
        elif isinstance(event, h11.Data):
            assert current is not None
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert current is not None
            current.body = b"".join(body)
            result.append(current)
            current = None
            body = []
    assert current is None, f"response cut short: {current}"
    return result


def _dummy_request(connection: h11.Connection, method: str) -> None:
    """Put an h11 client in the state of having sent a `method` request.

    The real request bytes are written raw (often malformed on purpose); h11 only
    needs to know the method to frame the answer (HEAD has no body).
    """
    if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
        connection.start_next_cycle()
    if connection.our_state is h11.IDLE:
        connection.send(h11.Request(method=method, target="/", headers=[("Host", "test")]))
        connection.send(h11.EndOfMessage())


def parse_events(data: bytes, methods: Iterable[str] = (), *, closed: bool = True) -> list[Any]:
    """Parse everything a server sent on one connection into h11 events.

    `methods` are the methods of the requests in order (default GET for each).
    With `closed`, the data is taken to end with the server closing the
    connection, which yields a final `h11.ConnectionClosed`.
    """
    if not data and closed:
        return [h11.ConnectionClosed()]
    pending = list(methods)
    connection = h11.Connection(h11.CLIENT)
    connection.receive_data(data)
    if closed:
        connection.receive_data(b"")
    _dummy_request(connection, pending.pop(0) if pending else "GET")
    events: list[Any] = []
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            break
        if event is h11.PAUSED:
            _dummy_request(connection, pending.pop(0) if pending else "GET")
            continue
        events.append(event)
        if isinstance(event, h11.ConnectionClosed):
            break
    return merge_data(events)


# --------------------------------------------------------------------------- raw client


class RawClient:
    """A loopback connection that sends raw bytes and parses replies with h11.

    `received` keeps every byte the server sent, for tests that check the wire
    format itself (chunk framing, status lines).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.received = bytearray()
        self.eof = False

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawClient:
        """Connect to 127.0.0.1:`port`; `rcvbuf` pins a small receive buffer."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            async with asyncio.timeout(READ_TIMEOUT):
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        return cls(reader, writer)

    @property
    def client_port(self) -> int:
        port: int = self.writer.get_extra_info("sockname")[1]
        return port

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _fill(self, timeout: float) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(65536)
        except TimeoutError:
            raise AssertionError(
                f"no answer within {timeout}s; received so far: {bytes(self.received[:2000])!r}"
            ) from None
        self.received += data
        if not data:
            self.eof = True
        self.h11.receive_data(data)
        return data

    async def next_event(self, method: str = "GET", timeout: float = READ_TIMEOUT) -> Any:
        """The next h11 event from the server (expecting an answer to `method`)."""
        _dummy_request(self.h11, method)
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                await self._fill(timeout)
                continue
            if event is h11.PAUSED:
                _dummy_request(self.h11, method)
                continue
            return event

    async def response(self, method: str = "GET", timeout: float = READ_TIMEOUT) -> Reply:
        """Read one complete final response (with any 1xx before it)."""
        events = []
        while True:
            event = await self.next_event(method, timeout)
            assert not isinstance(event, h11.ConnectionClosed), (
                f"connection closed before a complete response; events: {events}, "
                f"received: {bytes(self.received[:2000])!r}"
            )
            events.append(event)
            if isinstance(event, h11.EndOfMessage):
                return replies(events)[0]

    async def read_until_close(self, timeout: float = READ_TIMEOUT) -> bytes:
        """Wait for the server to close; return the bytes no response has consumed."""
        extra = bytearray()
        try:
            async with asyncio.timeout(timeout):
                while data := await self.reader.read(65536):
                    extra += data
        except TimeoutError:
            raise AssertionError(
                f"server did not close the connection within {timeout}s; "
                f"unparsed bytes: {self.h11.trailing_data[0] + bytes(extra)!r}"
            ) from None
        self.received += extra
        self.eof = True
        return self.h11.trailing_data[0] + bytes(extra)

    async def assert_silent(self, duration: float) -> None:
        """Check that nothing arrives (and no close happens) for `duration` seconds.

        Absence cannot be awaited, so this is the one place a test waits for time.
        """
        try:
            async with asyncio.timeout(duration):
                data = await self.reader.read(65536)
        except TimeoutError:
            return
        raise AssertionError(f"expected silence, got {data!r}")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(READ_TIMEOUT):
                await self.writer.wait_closed()


async def exchange(
    port: int, data: bytes, methods: Iterable[str] = (), *, timeout: float = READ_TIMEOUT
) -> list[Any]:
    """Send `data` on a fresh connection, read until the server closes, parse it all.

    Returns the h11 events (consecutive Data merged), ending with
    `h11.ConnectionClosed`. Fails if the server does not close within `timeout`.
    """
    client = await RawClient.connect(port)
    try:
        await client.send(data)
        received = await client.read_until_close(timeout)
    finally:
        await client.close()
    return parse_events(received, methods)


async def assert_serving(port: int) -> None:
    """A fresh connection to the server still gets a 200 for `GET /`."""
    events = await exchange(port, b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    [reply] = replies(events)
    assert reply.status == 200, reply


async def settle(value: Callable[[], int], *, quiet: float = 0.3, limit: float = 5.0) -> int:
    """Wait until `value()` has not changed for `quiet` seconds and return it.

    For progress that stops without any event to await (a generator blocked on a
    full socket, a sender blocked on a full window), this polls; it fails after
    `limit` seconds of continuous change.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last, since = value(), loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.02)
        current = value()
        if current != last:
            last, since = current, loop.time()
        elif loop.time() - since >= quiet:
            return current
    raise AssertionError(f"still changing after {limit}s (last value {last})")


async def raw_socket(port: int, *, sndbuf: int | None = None) -> socket.socket:
    """A non-blocking socket connected to 127.0.0.1:`port`, for byte-level flow tests.

    `sndbuf` pins a small send buffer, so that what the server accepted, not
    what our kernel queued, decides how much can be sent.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.setblocking(False)
        async with asyncio.timeout(READ_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def wait_writable(sock: socket.socket, timeout: float) -> bool:
    """Wait until `sock` can take more data; False after `timeout` seconds without."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_writer(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await ready
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_writer(sock.fileno())


async def send_until_blocked(
    sock: socket.socket, pattern: bytes, limit: int, *, quiet: float = 0.3
) -> int:
    """Send `pattern` over and over, as fast as the peer takes it, and return the count.

    Stops after `limit` bytes, or once the socket stayed full for `quiet`
    seconds: the peer stopped reading. Partial sends resume mid-pattern, so the
    byte stream stays a clean repetition of `pattern`.
    """
    sent = 0
    while sent < limit:
        offset = sent % len(pattern)
        try:
            sent += sock.send(pattern[offset : offset + limit - sent])
        except BlockingIOError:
            if not await wait_writable(sock, quiet):
                break
    return sent


async def refused(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port` any more."""
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return False


# --------------------------------------------------------------------------- fixtures

ServeFactory = Callable[..., contextlib.AbstractAsyncContextManager["aserve.Server"]]
ConnectFactory = Callable[..., Awaitable[RawClient]]


@pytest.fixture
def serve() -> ServeFactory:
    """`async with serve(handler, **options) as server:` runs a real Server on port 0.

    The server is shut down on leaving the block with a short graceful timeout,
    so that a test that leaves a handler hanging fails fast instead of waiting.
    """
    import aserve

    @contextlib.asynccontextmanager
    async def _serve(handler: Handler, **options: Any) -> AsyncIterator[aserve.Server]:
        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", 0)
        server = aserve.Server(handler, **options)
        async with asyncio.timeout(READ_TIMEOUT):
            await server.start()
        try:
            yield server
        finally:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT + READ_TIMEOUT):
                await server.shutdown(timeout=SHUTDOWN_TIMEOUT)

    return _serve


@pytest.fixture
async def connect() -> AsyncIterator[ConnectFactory]:
    """`await connect(port)` opens a RawClient that is closed when the test ends."""
    clients: list[RawClient] = []

    async def _connect(port: int, **kwargs: Any) -> RawClient:
        client = await RawClient.connect(port, **kwargs)
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        await client.close()


# --------------------------------------------------------------------------- the command


START_TIMEOUT = 10.0
EXIT_TIMEOUT = 10.0
START_LINE = re.compile(
    r"aserve (?P<version>\S+) serving (?P<what>.+) on "
    r"(?P<url>http://127\.0\.0\.1:(?P<port>\d+)|http\+unix://(?P<path>\S+)) "
    r"\(press Ctrl\+C to quit\)"
)


class Running:
    """A started `aserve` process and what its start line said."""

    def __init__(self, proc: subprocess.Popen[str], match: re.Match[str]) -> None:
        self.proc = proc
        self.match = match

    @property
    def port(self) -> int:
        return int(self.match.group("port"))

    def get(self, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response

    def body(self, path: str) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("GET", path)
        data = conn.getresponse().read()
        conn.close()
        return data

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        """Signal the server, wait for it to exit; its status and stderr."""
        self.proc.send_signal(sig)
        try:
            _, stderr = self.proc.communicate(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
            raise AssertionError(f"aserve did not exit after {sig!r}; stderr:\n{stderr}") from None
        return self.proc.returncode, stderr


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASERVE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def run_aserve(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = EXIT_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run `python -m aserve ARGS` to completion (for options that make it exit)."""
    return subprocess.run(
        [sys.executable, "-m", "aserve", *args],
        cwd=cwd,
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return proc.stdout.readline()


class Start(Protocol):
    def __call__(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> Running: ...


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    procs: list[subprocess.Popen[str]] = []

    def _start(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Running:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aserve", *args],
            cwd=cwd or tmp_path,
            env=environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        line = read_line(proc, START_TIMEOUT)
        match = START_LINE.fullmatch(line.strip())
        if match is None:
            proc.kill()
            _, stderr = proc.communicate()
            raise AssertionError(f"no start line, got {line!r}; stderr:\n{stderr}")
        return Running(proc, match)

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
