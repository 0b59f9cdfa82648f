"""A thousand slow clients against one server while a normal client is served.

The slow clients are the three shapes of a slow-HTTP attack, all at once:

- slow heads (slowloris): a request head dribbled a header line at a time;
  the server must answer 408 and close within header_timeout (+ grace) of the
  first byte;
- slow bodies (R.U.D.Y.): a POST whose body arrives a byte at a time and then
  stalls; the server must answer 408 or close within body_timeout (+ grace)
  of the last byte;
- slow readers: a request for a large streamed response whose answer is never
  read, through a small receive window; the server must abort the connection
  (a reset) within send_timeout (+ grace) of the request.

Meanwhile a normal client keeps asking `GET /`, alternately on a fresh
connection and on one kept-alive connection: every request must succeed and
its p99 latency stay under 100 ms. Client and server share the event loop, so
the latency counts everything the loop does for the thousand others too.

The slow readers set a small MSS (TCP_MAXSEG) before connecting, as clients on
a real network have; on loopback the MSS is 64 KiB and the kernel would give
each server socket a send buffer of megabytes, which a thousand connections
should not cost. When a slow reader's connection ended is read from the
kernel (TCP_INFO: CLOSE after a reset, CLOSE_WAIT after a FIN) without
reading a byte of the answer, so this test is for Linux.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import resource
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import h11
import pytest
from conftest import READ_TIMEOUT, RawClient, ServeFactory, assert_serving, parse_events, replies

import aserve

pytestmark = [
    pytest.mark.serial,  # a thousand clients timed to the second: run alone
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or not hasattr(socket, "TCP_INFO"),
        reason="reads TCP connection states with TCP_INFO (Linux)",
    ),
    # About 6 s per event loop; the rest is headroom for a busy machine.
    pytest.mark.timeout(45),
]

SLOW_HEADS = 334
SLOW_BODIES = 333
SLOW_READERS = 333
SLOW_CLIENTS = SLOW_HEADS + SLOW_BODIES + SLOW_READERS

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
SEND_TIMEOUT = 1.0
#: A slow connection must be closed at most this long after its timeout passed.
GRACE = 2.0
#: How long after GRACE we keep watching a connection, to say how late it was.
WATCH_EXTRA = 1.0
#: The slow clients connect over this many seconds, in small batches.
RAMP = 2.0
BATCH = 20
#: Seconds between two pieces of a slow head or body (under every timeout).
DRIBBLE = 0.3
#: How often the slow readers' connection states are read from the kernel.
WATCH_EVERY = 0.1
#: Pieces a slow body sends after its head before it stalls.
BODY_PIECES = 3

NORMAL_P99_MS = 100.0
#: Pause between two requests of the normal client.
NORMAL_PAUSE = 0.01

#: The slow readers' receive buffer and maximum segment size (see the module doc).
READER_RCVBUF = 4096
READER_MSS = 1200
LARGE_CHUNK = bytes(64 * 1024)
LARGE_CHUNKS = 64  # 4 MiB: far more than the kernel and the transport buffer hold

# Linux TCP states, from the first byte of struct tcp_info.
TCP_CLOSE = 7
TCP_CLOSE_WAIT = 8

HOST = b"Host: test\r\n"
PAGE = b"ok"


async def handler(request: aserve.Request) -> aserve.Response:
    if request.path == "/upload":
        body = await request.body()
        return aserve.PlainTextResponse(f"{len(body)}")
    if request.path == "/large":
        return aserve.StreamingResponse(large_body(), media_type="application/octet-stream")
    return aserve.PlainTextResponse(PAGE)


async def large_body() -> AsyncIterator[bytes]:
    for _ in range(LARGE_CHUNKS):
        yield LARGE_CHUNK


@pytest.fixture
def open_files() -> Iterator[None]:
    """Room for both ends of every connection in this one process."""
    need = 2 * SLOW_CLIENTS + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} open files, the hard limit (RLIMIT_NOFILE) is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --------------------------------------------------------------------------- slow clients


@dataclass
class Outcome:
    """What happened to one slow connection."""

    kind: str
    #: When the timeout that should end it started (loop time).
    started: float = 0.0
    #: When its end was seen (loop time); None if it was still open when we stopped looking.
    closed: float | None = None
    data: bytes = b""
    #: The server reset the connection (rather than closing it with a FIN).
    reset: bool = False
    error: str = ""

    def lived(self) -> float | None:
        return None if self.closed is None else self.closed - self.started


def connect(port: int, *, rcvbuf: int | None = None, mss: int | None = None) -> socket.socket:
    """A socket connected to the server, options set before the handshake.

    The connect itself blocks, which on loopback takes microseconds (the
    handshake completes in the kernel); the loop's `sock_connect` would do as
    well on the stdlib loop, but under uvloop a thousand of them in the loop
    that also runs the server hold back its accepting by up to seconds.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss is not None and hasattr(socket, "TCP_MAXSEG"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        sock.settimeout(READ_TIMEOUT)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class SlowProtocol(asyncio.Protocol):
    """Client side of one slow connection: keeps what arrives, notes when it ends."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[None] = self.loop.create_future()
        self.received = bytearray()
        self.transport: asyncio.Transport | None = None
        #: We are closing the connection ourselves: its end is not the server's doing.
        self.leaving = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> bool:
        self._end(reset=False)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(reset=isinstance(exc, ConnectionResetError))

    def _end(self, reset: bool) -> None:
        if not self.ended.done() and not self.leaving:
            self.outcome.closed = self.loop.time()
            self.outcome.reset = reset
            self.outcome.data = bytes(self.received)
            self.ended.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


@contextlib.asynccontextmanager
async def slow_connection(
    port: int, outcome: Outcome, **options: int
) -> AsyncIterator[SlowProtocol]:
    loop = asyncio.get_running_loop()
    sock = connect(port, **options)
    try:
        transport, protocol = await loop.create_connection(lambda: SlowProtocol(outcome), sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        yield protocol
    finally:
        protocol.leaving = True
        transport.abort()


async def dribble(client: SlowProtocol, pieces: list[bytes], timeout: float) -> None:
    """Send `pieces` DRIBBLE seconds apart until the server ends the connection,
    then wait for that end until `timeout` + GRACE + WATCH_EXTRA after the
    timeout began (`outcome.started`; for a body, moved on by every piece)."""
    loop = asyncio.get_running_loop()
    outcome = client.outcome
    for piece in pieces:
        # A little jitter, so a thousand clients do not all send in the same tick.
        await asyncio.wait({client.ended}, timeout=DRIBBLE * random.uniform(0.8, 1.2))
        if client.ended.done():
            return
        client.write(piece)
        if outcome.kind == "body":
            outcome.started = loop.time()
    left = outcome.started + timeout + GRACE + WATCH_EXTRA - loop.time()
    await asyncio.wait({client.ended}, timeout=max(0.0, left))


async def slow_head(port: int, outcome: Outcome) -> None:
    async with slow_connection(port, outcome) as client:
        outcome.started = client.loop.time()
        client.write(b"GET / HTTP/1.1\r\n" + HOST)
        # Header lines for far longer than header_timeout: only the server ends this.
        count = math.ceil((HEADER_TIMEOUT + GRACE + WATCH_EXTRA) / DRIBBLE) + 2
        pieces = [b"X-Slow-%d: dribbled\r\n" % i for i in range(count)]
        await dribble(client, pieces, HEADER_TIMEOUT)


async def slow_body(port: int, outcome: Outcome) -> None:
    async with slow_connection(port, outcome) as client:
        head = b"POST /upload HTTP/1.1\r\n" + HOST + b"Content-Length: 1000\r\n\r\n"
        client.write(head + b"x")
        outcome.started = client.loop.time()
        await dribble(client, [b"x"] * (BODY_PIECES - 1), BODY_TIMEOUT)


def tcp_state(sock: socket.socket) -> int:
    state: int = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    return state


class ReaderWatch:
    """Asks the kernel, every WATCH_EVERY seconds, which slow readers' connections
    ended: with reading paused, their transports may not hear of it."""

    def __init__(self) -> None:
        self.watched: dict[SlowProtocol, socket.socket] = {}

    def add(self, client: SlowProtocol, sock: socket.socket) -> None:
        self.watched[client] = sock

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_EVERY)
            for client, sock in list(self.watched.items()):
                if client.ended.done() or client.leaving:
                    del self.watched[client]
                    continue
                state = tcp_state(sock)
                if state in (TCP_CLOSE, TCP_CLOSE_WAIT):
                    del self.watched[client]
                    outcome = client.outcome
                    outcome.closed = loop.time()
                    outcome.reset = state == TCP_CLOSE
                    client.ended.set_result(None)


async def slow_reader(port: int, outcome: Outcome, watch: ReaderWatch) -> None:
    async with slow_connection(port, outcome, rcvbuf=READER_RCVBUF, mss=READER_MSS) as client:
        assert client.transport is not None
        client.transport.pause_reading()  # never read a byte of the answer
        watch.add(client, client.transport.get_extra_info("socket"))
        client.write(b"GET /large HTTP/1.1\r\n" + HOST + b"\r\n")
        outcome.started = client.loop.time()
        await asyncio.wait({client.ended}, timeout=SEND_TIMEOUT + GRACE + WATCH_EXTRA)


async def run_slow_clients(port: int) -> list[Outcome]:
    kinds = ["head"] * SLOW_HEADS + ["body"] * SLOW_BODIES + ["reader"] * SLOW_READERS
    random.Random(1).shuffle(kinds)
    outcomes = [Outcome(kind) for kind in kinds]
    watch = ReaderWatch()
    watcher = asyncio.ensure_future(watch.run())
    tasks = []
    batches = math.ceil(SLOW_CLIENTS / BATCH)
    try:
        for b in range(batches):
            for outcome in outcomes[b * BATCH : (b + 1) * BATCH]:
                if outcome.kind == "head":
                    task = slow_head(port, outcome)
                elif outcome.kind == "body":
                    task = slow_body(port, outcome)
                else:
                    task = slow_reader(port, outcome, watch)
                tasks.append(asyncio.ensure_future(task))
            await asyncio.sleep(RAMP / batches)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    for outcome, result in zip(outcomes, results, strict=True):
        if isinstance(result, BaseException):
            outcome.error = f"{type(result).__name__}: {result}"
    return outcomes


# --------------------------------------------------------------------------- the normal client


@dataclass
class Normal:
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def p99(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


async def normal_client(port: int, stop: asyncio.Event, normal: Normal) -> None:
    kept: RawClient | None = None
    fresh = True
    while not stop.is_set():
        started = time.perf_counter()
        try:
            if fresh:
                client = await RawClient.connect(port)
                try:
                    await client.send(b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
                    reply = await client.response()
                finally:
                    await client.close()
            else:
                if kept is None:
                    kept = await RawClient.connect(port)
                await kept.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
                reply = await kept.response()
            if reply.status != 200 or reply.body != PAGE:
                normal.failures.append(f"{'fresh' if fresh else 'kept'}: {reply}")
            else:
                normal.latencies_ms.append((time.perf_counter() - started) * 1000)
        except (AssertionError, OSError, h11.ProtocolError) as exc:
            normal.failures.append(f"{'fresh' if fresh else 'kept'}: {type(exc).__name__}: {exc}")
            if not fresh and kept is not None:
                await kept.close()
                kept = None
        fresh = not fresh
        await asyncio.sleep(NORMAL_PAUSE)
    if kept is not None:
        await kept.close()


# --------------------------------------------------------------------------- checks


def answer_problem(outcome: Outcome) -> str | None:
    """Why what the server sent is not the expected answer, or None."""
    if outcome.kind == "reader":
        return None if outcome.reset else "closed without a reset (expected an abort)"
    try:
        answers = replies(parse_events(outcome.data, ["POST" if outcome.kind == "body" else "GET"]))
    except (h11.ProtocolError, AssertionError) as exc:
        return f"unparsable answer {outcome.data[:200]!r}: {exc}"
    statuses = [reply.status for reply in answers]
    if outcome.kind == "body" and not answers:
        return None  # a close without an answer is allowed for a body
    if statuses != [408]:
        return f"answered {statuses}, expected [408]"
    if answers[0].header("connection") != "close":
        return "408 without Connection: close"
    return None


def check_slow(outcomes: list[Outcome], kind: str, timeout: float) -> list[str]:
    mine = [o for o in outcomes if o.kind == kind]
    errors = [o.error for o in mine if o.error]
    open_ = [o for o in mine if not o.error and o.closed is None]
    done = [o for o in mine if not o.error and o.closed is not None]
    late = [o for o in done if (o.lived() or 0.0) > timeout + GRACE]
    early = [o for o in done if (o.lived() or 0.0) < timeout - 0.05]
    wrong = [(o, p) for o in done if (p := answer_problem(o)) is not None]
    problems = []
    if errors:
        problems.append(f"{len(errors)} failed on our side, e.g. {errors[0]}")
    if open_:
        problems.append(
            f"{len(open_)} still open {timeout + GRACE + WATCH_EXTRA:g} s after the timeout began"
        )
    if late:
        worst = max(o.lived() or 0.0 for o in late)
        problems.append(
            f"{len(late)} closed later than {timeout:g} s + {GRACE:g} s (worst {worst:.2f} s)"
        )
    if early:
        first = min(o.lived() or 0.0 for o in early)
        problems.append(f"{len(early)} closed before their timeout (earliest {first:.2f} s)")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong answer, e.g. {wrong[0][1]}")
    name = {"head": "heads", "body": "bodies", "reader": "readers"}[kind]
    return [f"slow {name} ({len(mine)}): {p}" for p in problems]


def summary(outcomes: list[Outcome], normal: Normal) -> str:
    """One line per kind and one for the normal client (shown with pytest -s or -rP)."""
    lines = []
    for kind, plural in (("head", "heads"), ("body", "bodies"), ("reader", "readers")):
        lived = sorted(o.lived() or 0.0 for o in outcomes if o.kind == kind and o.closed)
        total = sum(1 for o in outcomes if o.kind == kind)
        if lived:
            lines.append(
                f"slow {plural}: {len(lived)} of {total} closed, after "
                f"{lived[len(lived) // 2]:.2f} s (median) / {lived[-1]:.2f} s (max)"
            )
        else:
            lines.append(f"slow {plural}: none of {total} closed")
    if normal.latencies_ms:
        lines.append(
            f"normal client: {len(normal.latencies_ms)} ok, {len(normal.failures)} failed, "
            f"p99 {normal.p99():.1f} ms, max {max(normal.latencies_ms):.1f} ms"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the test


async def test_thousand_slow_clients_are_closed_on_time_and_others_stay_served(
    serve: ServeFactory, open_files: None
) -> None:
    async with serve(
        handler,
        header_timeout=HEADER_TIMEOUT,
        body_timeout=BODY_TIMEOUT,
        send_timeout=SEND_TIMEOUT,
    ) as server:
        normal = Normal()
        stop = asyncio.Event()
        served = asyncio.ensure_future(normal_client(server.port, stop, normal))
        try:
            outcomes = await run_slow_clients(server.port)
        finally:
            stop.set()
            await served
        await assert_serving(server.port)

    print(summary(outcomes, normal))
    problems = (
        check_slow(outcomes, "head", HEADER_TIMEOUT)
        + check_slow(outcomes, "body", BODY_TIMEOUT)
        + check_slow(outcomes, "reader", SEND_TIMEOUT)
    )
    if normal.failures:
        problems.append(
            f"normal client: {len(normal.failures)} failed requests, e.g. {normal.failures[0]}"
        )
    if len(normal.latencies_ms) < 50:
        problems.append(f"normal client: only {len(normal.latencies_ms)} requests completed")
    elif normal.p99() >= NORMAL_P99_MS:
        problems.append(
            f"normal client: p99 {normal.p99():.1f} ms over {len(normal.latencies_ms)} requests "
            f"(limit {NORMAL_P99_MS:g} ms; max {max(normal.latencies_ms):.1f} ms)"
        )
    assert not problems, "\n".join(problems)
