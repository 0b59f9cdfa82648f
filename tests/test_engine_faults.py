"""Faults, many times over: clients that reset mid-head, mid-body and mid-response,
and handlers that raise, hang past handler_timeout, return garbage or write
after the client left.

Each fault runs in a loop (hundreds of times for resets), then the server must
still answer a normal request promptly, must have logged one clear line per
fault where one is due (and nothing louder than INFO, and no traceback, for a
client's own reset), and must hold nothing: no connection left in its set, no
exchange task left pending, every streamed body closed.

A reset is SO_LINGER 0 then close: the kernel sends RST, the server's next
read or write fails with ECONNRESET or EPIPE. That is the shape that exposes a
writer which does not notice a dead socket.

A watchdog (a chain of loop callbacks) measures how long the event loop went
without a turn. A streamed body whose generator never awaits is the case where
that matters: if the engine writes to a dead socket without ever giving the
loop a turn, nothing else runs again. The generator here checks the watchdog
itself and gives up after `WEDGED_S`, so a wedge fails the test instead of
hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h11
import pytest
from conftest import ServeFactory, raw_socket

import aserve

MIB = 1024 * 1024
#: How many times each reset shape runs.
RESETS = 200
#: Client connections working through one shape at the same time.
PARALLEL = 10
#: Without a loop turn for this long, the loop counts as wedged.
WEDGED_S = 1.0
#: A normal request must be answered within this after the faults ("promptly";
#: generous, for a loaded machine).
PROMPT_S = 2.0
#: Bound on every wait for the server to let go of what it holds.
RELEASE_S = 3.0

STREAM_CHUNK = b"x" * MIB
BIG_BODY = b"b" * (4 * MIB)


# --------------------------------------------------------------------------- tools


class Watchdog:
    """Measures the longest stretch the event loop went without running a callback."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.last = time.monotonic()
        self.longest = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.last = time.monotonic()
        self._beat()

    def _beat(self) -> None:
        now = time.monotonic()
        self.longest = max(self.longest, now - self.last)
        self.last = now
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._beat)

    def starved(self) -> bool:
        """True when the loop has had no turn for WEDGED_S (asked from inside a busy task)."""
        return time.monotonic() - self.last > WEDGED_S

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def recv_at_least(sock: socket.socket, count: int, timeout: float = 3.0) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(timeout):
        while len(data) < count:
            chunk = await loop.sock_recv(sock, 256 * 1024)
            if not chunk:
                break
            data += chunk
    return bytes(data)


async def recv_until_closed(sock: socket.socket, timeout: float = 3.0) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(timeout):
        while chunk := await loop.sock_recv(sock, 256 * 1024):
            data += chunk
    return bytes(data)


def parse(data: bytes, method: str = "GET") -> list[Any]:
    """The h11 events of what the server sent on one connection it then closed."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    client.receive_data(b"")
    events = []
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError as exc:  # a body cut short, say
            events.append(exc)
            break
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            break
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    return events


def status_of(data: bytes) -> int:
    events = parse(data)
    assert events and isinstance(events[0], h11.Response), data[:300]
    return int(events[0].status_code)


async def in_parallel(count: int, one: Callable[[int], Awaitable[None]]) -> None:
    """Run `one(i)` for i in range(count), PARALLEL at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await one(i)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(PARALLEL, count)):
            group.create_task(worker())


class Signals:
    """Per-request events a handler sets (``?id=N``) and a client waits on."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, key: str) -> asyncio.Event:
        return self._events.setdefault(key, asyncio.Event())

    def set(self, request: aserve.Request) -> None:
        self.event(request.query.get("id", "")).set()

    async def wait(self, key: str, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            await self.event(key).wait()
        del self._events[key]


class Faulty:
    """The handler under test: a normal route and one route per fault."""

    def __init__(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog
        self.signals = Signals()
        self.streams_started = 0
        self.streams_closed = 0
        self.wedged = 0

    async def __call__(self, request: aserve.Request) -> Any:
        path = request.path
        if path == "/":
            return aserve.PlainTextResponse("ok\n")
        if path == "/upload":
            async for _ in request.stream():
                self.signals.set(request)
            return aserve.PlainTextResponse("got it\n")
        if path == "/forever":
            self.signals.set(request)
            return aserve.StreamingResponse(self._forever())
        if path == "/big":
            self.signals.set(request)
            return aserve.Response(BIG_BODY, media_type="application/octet-stream")
        if path == "/raise":
            raise RuntimeError("handler bug on purpose")
        if path == "/raise-mid-stream":
            return aserve.StreamingResponse(self._fails_after_a_chunk())
        if path == "/hang":
            self.signals.set(request)
            await asyncio.sleep(3600)
        if path.startswith("/garbage/"):
            return GARBAGE[path.removeprefix("/garbage/")]
        if path == "/late":
            return await self._late(request)
        if path == "/late-stream":
            return aserve.StreamingResponse(self._late_stream(request))
        return aserve.PlainTextResponse("no such fault\n", status=404)

    async def _forever(self) -> AsyncIterator[bytes]:
        """`while True: yield b"x" * 2**20`, never awaiting; gives up only if the loop starves."""
        self.streams_started += 1
        try:
            while True:
                if self.watchdog.starved():
                    self.wedged += 1
                    return
                yield STREAM_CHUNK
        finally:
            self.streams_closed += 1

    async def _fails_after_a_chunk(self) -> AsyncIterator[bytes]:
        self.streams_started += 1
        try:
            yield b"first chunk\n"
            raise RuntimeError("streamed body bug on purpose")
        finally:
            self.streams_closed += 1

    async def _late(self, request: aserve.Request) -> aserve.Response:
        gone = asyncio.Event()
        request.on_disconnect(gone.set)
        self.signals.set(request)
        async with asyncio.timeout(3):
            await gone.wait()
        return aserve.PlainTextResponse("nobody reads this\n" * 1000)

    async def _late_stream(self, request: aserve.Request) -> AsyncIterator[bytes]:
        self.streams_started += 1
        try:
            gone = asyncio.Event()
            request.on_disconnect(gone.set)
            self.signals.set(request)
            async with asyncio.timeout(3):
                await gone.wait()
            for _ in range(1000):
                yield b"nobody reads this\n" * 100
        finally:
            self.streams_closed += 1


GARBAGE: dict[str, Any] = {
    "none": None,
    "int": 42,
    "str": "a string is not a Response",
    "bytes": b"neither are bytes",
    "dict": {"status": 200},
}


@contextlib.asynccontextmanager
async def watched() -> AsyncIterator[tuple[Watchdog, Faulty]]:
    watchdog = Watchdog()
    watchdog.start()
    try:
        yield watchdog, Faulty(watchdog)
    finally:
        watchdog.stop()


def exchange_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and getattr(task.get_coro(), "__qualname__", "").startswith("Exchange.")
    ]


async def assert_healthy(
    server: aserve.Server, handler: Faulty, watchdog: Watchdog, tasks_before: set[Any]
) -> None:
    """Serves promptly, holds no connection, task or stream, never starved the loop."""
    assert handler.wedged == 0, (
        f"a generator that never awaits starved the event loop for {WEDGED_S}s "
        f"({handler.wedged} times): the engine kept writing to a dead socket without "
        "giving the loop a turn"
    )
    started = time.monotonic()
    async with asyncio.timeout(PROMPT_S):
        sock = await raw_socket(server.port)
        try:
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answer = await recv_until_closed(sock, PROMPT_S)
        finally:
            sock.close()
    assert status_of(answer) == 200, answer[:300]
    took = time.monotonic() - started
    assert took < PROMPT_S, f"a normal request took {took:.2f}s"

    state = server._state
    assert state is not None
    current = asyncio.current_task()
    try:
        async with asyncio.timeout(RELEASE_S):
            while (
                state.connections
                or exchange_tasks()
                or handler.streams_closed < handler.streams_started
                or getattr(state, "active", 0)
            ):
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(
            f"after {RELEASE_S}s the server still holds {len(state.connections)} connection(s) "
            f"{list(state.connections)[:5]}, {len(exchange_tasks())} exchange task(s), "
            f"{handler.streams_started - handler.streams_closed} unclosed stream(s), "
            f"active={getattr(state, 'active', None)}"
        ) from None
    stray = {t for t in asyncio.all_tasks() if not t.done()} - tasks_before - {current}
    assert not stray, f"tasks left behind: {stray}"
    assert watchdog.longest < WEDGED_S, f"the loop went {watchdog.longest:.2f}s without a turn"


def engine_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("aserve") or r.name == "asyncio"]


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """A client's own reset is no server problem: nothing above INFO, no traceback."""
    loud = [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        + (f" [{r.exc_info[0].__name__}]" if r.exc_info and r.exc_info[0] else "")
        for r in engine_records(caplog)
        if r.levelno > logging.INFO or r.exc_info
    ]
    assert not loud, f"{len(loud)} loud record(s) for client resets, first: {loud[:5]}"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="aserve")
    caplog.set_level(logging.WARNING, logger="asyncio")
    return caplog


# --------------------------------------------------------------------------- resets


RESET_SHAPES = [
    "before-any-byte",
    "mid-head",
    # A kept-alive connection whose h11 state went back to the pool (parked),
    # reset while idle, and reset in the head of its second request.
    "idle-after-a-request",
    "mid-second-head",
    "mid-body",
    "stream-at-once",
    "mid-stream-unread",
    "mid-stream-reading",
    "mid-big-body-unread",
    "mid-big-body-reading",
]


async def reset_once(port: int, handler: Faulty, shape: str, i: int) -> None:
    if handler.wedged:
        return  # one wedge is the finding; each costs WEDGED_S, so stop there
    loop = asyncio.get_running_loop()
    key = f"{shape}-{i}"
    sock = await raw_socket(port)
    try:
        if shape == "before-any-byte":
            pass
        elif shape == "mid-head":
            head = b"GET /upload?id=%d HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n" % i
            await loop.sock_sendall(sock, head[: 5 + i % (len(head) - 5)])
        elif shape in ("idle-after-a-request", "mid-second-head"):
            await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            answer = await recv_at_least(sock, 1)
            while not answer.endswith(b"ok\n"):
                answer += await recv_at_least(sock, 1)
            if shape == "mid-second-head":
                head = b"GET /?id=%d HTTP/1.1\r\nHost: t\r\n" % i
                await loop.sock_sendall(sock, head[: 1 + i % (len(head) - 1)])
            else:
                await asyncio.sleep(0.01 * (i % 3))  # parked, then reset
        elif shape == "mid-body":
            await loop.sock_sendall(
                sock,
                b"POST /upload?id=%s HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n"
                % key.encode()
                + b"u" * 20000,
            )
            await handler.signals.wait(key)  # the handler is reading the body
        elif shape == "stream-at-once":
            # The reset lands before the server's first write: that write fails
            # inside transport.write(), with connection_lost only scheduled.
            await loop.sock_sendall(sock, b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
        else:
            path = b"/forever" if "stream" in shape else b"/big"
            await loop.sock_sendall(
                sock, b"GET %s?id=%s HTTP/1.1\r\nHost: t\r\n\r\n" % (path, key.encode())
            )
            await handler.signals.wait(key)  # the handler answered
            if shape.endswith("-reading"):
                await recv_at_least(sock, 300 * 1024)
    finally:
        reset(sock)


@pytest.mark.parametrize("shape", RESET_SHAPES)
async def test_client_resets_leave_nothing_behind(
    shape: str, serve: ServeFactory, logs: pytest.LogCaptureFixture
) -> None:
    tasks_before = set(asyncio.all_tasks())
    async with watched() as (watchdog, handler), serve(handler) as server:
        port = server.port
        await in_parallel(RESETS, lambda i: reset_once(port, handler, shape, i))
        await assert_healthy(server, handler, watchdog, tasks_before)
    assert_quiet(logs)
    if "stream" in shape:
        assert handler.streams_started == RESETS


# --------------------------------------------------------------------------- handlers


async def request(port: int, target: bytes) -> bytes:
    """One request on a fresh connection; what the server sent until it closed."""
    loop = asyncio.get_running_loop()
    sock = await raw_socket(port)
    try:
        head = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target
        await loop.sock_sendall(sock, head)
        return await recv_until_closed(sock)
    finally:
        sock.close()


async def test_handler_that_raises_gets_500_and_one_logged_traceback_each(
    serve: ServeFactory, logs: pytest.LogCaptureFixture
) -> None:
    count = 50
    tasks_before = set(asyncio.all_tasks())
    async with watched() as (watchdog, handler), serve(handler) as server:
        port = server.port
        answers: list[bytes] = []

        async def one(i: int) -> None:
            answers.append(await request(port, b"/raise"))

        await in_parallel(count, one)
        assert [status_of(a) for a in answers] == [500] * count
        assert all(b"handler bug" not in a for a in answers), "the error leaked to the client"
        await assert_healthy(server, handler, watchdog, tasks_before)
    records = [r for r in engine_records(logs) if r.levelno >= logging.WARNING]
    assert len(records) == count, [r.getMessage() for r in records[:5]]
    for record in records:
        assert record.levelno == logging.ERROR
        assert "GET /raise" in record.getMessage()
        assert record.exc_info and isinstance(record.exc_info[1], RuntimeError)


async def test_streamed_body_that_raises_closes_the_connection_and_logs_once(
    serve: ServeFactory, logs: pytest.LogCaptureFixture
) -> None:
    count = 50
    tasks_before = set(asyncio.all_tasks())
    async with watched() as (watchdog, handler), serve(handler) as server:
        port = server.port
        answers: list[bytes] = []

        async def one(i: int) -> None:
            answers.append(await request(port, b"/raise-mid-stream"))

        await in_parallel(count, one)
        for answer in answers:
            events = parse(answer)
            assert isinstance(events[0], h11.Response) and events[0].status_code == 200
            # The body is cut short: no EndOfMessage, so no client takes it for whole.
            assert not any(isinstance(e, h11.EndOfMessage) for e in events), events
        await assert_healthy(server, handler, watchdog, tasks_before)
    records = [r for r in engine_records(logs) if r.levelno >= logging.WARNING]
    assert len(records) == count, [r.getMessage() for r in records[:5]]
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in records)


@pytest.mark.parametrize("kind", sorted(GARBAGE))
async def test_handler_returning_garbage_gets_500_and_one_log_line_each(
    kind: str, serve: ServeFactory, logs: pytest.LogCaptureFixture
) -> None:
    count = 20
    tasks_before = set(asyncio.all_tasks())
    async with watched() as (watchdog, handler), serve(handler) as server:
        port = server.port
        answers: list[bytes] = []

        async def one(i: int) -> None:
            answers.append(await request(port, b"/garbage/" + kind.encode()))

        await in_parallel(count, one)
        assert [status_of(a) for a in answers] == [500] * count
        await assert_healthy(server, handler, watchdog, tasks_before)
    records = [r for r in engine_records(logs) if r.levelno >= logging.WARNING]
    assert len(records) == count, [r.getMessage() for r in records[:5]]
    for record in records:
        text = record.getMessage() + str(record.exc_info[1] if record.exc_info else "")
        assert f"/garbage/{kind}" in text and "Response" in text, text


async def test_handler_hanging_past_handler_timeout_is_cancelled_with_504(
    serve: ServeFactory, logs: pytest.LogCaptureFixture
) -> None:
    count = 30
    cancelled = 0
    tasks_before = set(asyncio.all_tasks())

    async with watched() as (watchdog, handler):

        async def hanging(request: aserve.Request) -> Any:
            nonlocal cancelled
            try:
                return await handler(request)
            except asyncio.CancelledError:
                cancelled += 1
                raise

        async with serve(hanging, handler_timeout=0.3) as server:
            port = server.port
            answers: list[bytes] = []

            async def one(i: int) -> None:
                answers.append(await request(port, b"/hang?id=%d" % i))

            async with asyncio.TaskGroup() as group:  # all at once: the timeouts overlap
                for i in range(count):
                    group.create_task(one(i))
            assert [status_of(a) for a in answers] == [504] * count
            await assert_healthy(server, handler, watchdog, tasks_before)
            assert cancelled == count
    records = [r for r in engine_records(logs) if r.levelno >= logging.WARNING]
    assert len(records) == count, [r.getMessage() for r in records[:5]]
    for record in records:
        assert "/hang" in record.getMessage(), record.getMessage()
        assert not record.exc_info, "a timeout is not a crash: no traceback"


async def test_body_that_stalls_past_body_timeout_gets_408(
    serve: ServeFactory, logs: pytest.LogCaptureFixture
) -> None:
    count = 30
    tasks_before = set(asyncio.all_tasks())
    async with watched() as (watchdog, handler), serve(handler, body_timeout=0.3) as server:
        port = server.port
        loop = asyncio.get_running_loop()
        answers: list[bytes] = []

        async def one(i: int) -> None:
            sock = await raw_socket(port)
            try:
                await loop.sock_sendall(
                    sock,
                    b"POST /upload?id=s%d HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" % i
                    + b"u" * 10,
                )
                answers.append(await recv_until_closed(sock))
            finally:
                sock.close()

        async with asyncio.TaskGroup() as group:
            for i in range(count):
                group.create_task(one(i))
        assert [status_of(a) for a in answers] == [408] * count
        await assert_healthy(server, handler, watchdog, tasks_before)
    # The refusal is one WARNING line on aserve.error; nothing louder, no traceback.
    assert not [r for r in engine_records(logs) if r.levelno > logging.WARNING or r.exc_info]


@pytest.mark.parametrize("target", [b"/late", b"/late-stream"])
async def test_handler_writing_after_the_client_left_is_quiet_and_holds_nothing(
    target: bytes, serve: ServeFactory, logs: pytest.LogCaptureFixture
) -> None:
    count = 100
    tasks_before = set(asyncio.all_tasks())
    async with watched() as (watchdog, handler), serve(handler) as server:
        port = server.port
        loop = asyncio.get_running_loop()

        async def one(i: int) -> None:
            key = f"{target.decode()}-{i}"
            sock = await raw_socket(port)
            try:
                await loop.sock_sendall(
                    sock, b"GET %s?id=%s HTTP/1.1\r\nHost: t\r\n\r\n" % (target, key.encode())
                )
                await handler.signals.wait(key)
            finally:
                if i % 2:
                    reset(sock)
                else:
                    sock.close()

        await in_parallel(count, one)
        await assert_healthy(server, handler, watchdog, tasks_before)
    assert_quiet(logs)


async def test_client_that_stops_reading_is_aborted_after_send_timeout(
    serve: ServeFactory, logs: pytest.LogCaptureFixture
) -> None:
    count = 10
    tasks_before = set(asyncio.all_tasks())
    async with watched() as (watchdog, handler), serve(handler, send_timeout=0.5) as server:
        port = server.port
        loop = asyncio.get_running_loop()
        socks = []
        try:
            for i in range(count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", port))
                key = f"stall-{i}"
                await loop.sock_sendall(
                    sock, b"GET /forever?id=%s HTTP/1.1\r\nHost: t\r\n\r\n" % key.encode()
                )
                await handler.signals.wait(key)
            # Nobody reads: every stream must be cut and closed, which
            # assert_healthy waits for (RELEASE_S) along with the rest.
            await assert_healthy(server, handler, watchdog, tasks_before)
        finally:
            for sock in socks:
                sock.close()
    assert handler.streams_started == count
    # The refusal is one WARNING line on aserve.error; nothing louder, no traceback.
    assert not [r for r in engine_records(logs) if r.levelno > logging.WARNING or r.exc_info]
