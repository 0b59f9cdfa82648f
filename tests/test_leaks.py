"""Nothing outlives its connection: 20,000 mixed requests through one server.

About 50 client connections at a time run sessions of every kind: keep-alive
runs of requests, pipelined bursts, uploads abandoned mid-body (closed or
reset), streamed answers abandoned mid-response, handlers that raise, and
handlers cut off by a small handler_timeout. After a warm-up batch, and again
at the end, once every client has gone:

- `gc` finds no HTTPProtocol, Request, Exchange, BodyStream, WriteGate or
  h11 connection alive, and no transport, and no task but the test's own;
- `tracemalloc` (started after the warm-up) finds the memory still allocated
  grew by less than `GROWTH_LIMIT` over the next 18,000 requests.

The engine's error log is counted here instead of going to pytest's log
capture, which would keep every record (and its traceback) alive and look like
a leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import struct
import sys
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import h11
import pytest
from conftest import ServeFactory

import aserve
from aserve.connection import HTTPConnection
from aserve.exchange import Exchange
from aserve.flow import BodyStream, WriteGate
from aserve.protocol import HTTPProtocol

# Counts every live object of the process: run alone (make test's serial pass).
pytestmark = [pytest.mark.timeout(90), pytest.mark.serial]

TOTAL = 20_000
WARM_UP = 2_000
CLIENTS = 50
#: What the run may leave allocated: about 30 KiB is normal (sets and selector
#: maps sized for 50 connections); 18,000 requests leaking 16 bytes each pass it.
GROWTH_LIMIT = 256 * 1024
#: Long enough that a fast handler never meets it on a loaded machine.
HANDLER_TIMEOUT = 0.5
#: A session still waiting on the server after this long counts as stuck.
SESSION_TIMEOUT = 10.0

#: Each session is one of these, in turn, with the requests it makes. Pipelined
#: bursts are the cheapest requests for the client, so they carry most of the
#: count; every other kind comes once or twice per round.
PLAN = [
    ("pipelined", 20),
    ("keep-alive", 10),
    ("abandon-body", 1),
    ("pipelined", 20),
    ("error", 1),
    ("abandon-stream", 1),
    ("pipelined", 20),
    ("keep-alive", 10),
    ("timeout", 1),
]


def build_app() -> aserve.App:
    app = aserve.App()

    @app.get("/")
    async def hello(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("Hello, World!")

    @app.get("/json")
    async def json_(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse({"n": len(request.query)})

    @app.post("/echo")
    async def echo(request: aserve.Request) -> aserve.Response:
        return aserve.Response(await request.body(), media_type="application/octet-stream")

    @app.get("/stream")
    async def stream(request: aserve.Request) -> aserve.Response:
        count = int(request.query.get("n", "5"))

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(count):
                yield b"chunk %d\n" % i
                await asyncio.sleep(0)

        return aserve.StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/boom")
    async def boom(request: aserve.Request) -> aserve.Response:
        raise RuntimeError("handler bug on purpose")

    @app.get("/slow")
    async def slow(request: aserve.Request) -> aserve.Response:
        await asyncio.sleep(30)
        return aserve.PlainTextResponse("too late")

    return app


# --------------------------------------------------------------------------- client


class Client:
    """A lean HTTP/1.1 client for answers this server frames (length or chunked)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        #: What the client is doing now, for a session that gets stuck.
        self.step = ["connected"]

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.step[0] = "sending"
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, bytes]:
        self.step[0] = "reading a response"
        reader = self.reader
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 2)
            return status, await reader.readexactly(int(lower[at + 17 : end]))
        if b"\r\ntransfer-encoding: chunked" in lower:
            body = bytearray()
            while size := int((await reader.readline()).split(b";")[0], 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readline()
            return status, bytes(body)
        return status, await reader.read()

    async def close(self, rst: bool = False) -> None:
        self.step[0] = "closing"
        if rst:
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


GET = b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n"


#: An answer other than 200 from a route that answers at once. Only a 504 is
#: tolerated, and only rarely: when the machine stalls the process for longer
#: than HANDLER_TIMEOUT, a fast handler can miss it too (then the connection
#: closes, and the rest of a burst goes unanswered).
LATE = "504 on a fast route"


def fast(outcomes: Counter[str], status: int, remaining: int) -> bool:
    """Count one answer from a fast route; False when the session cannot go on."""
    if status == 200:
        outcomes["200"] += 1
        return True
    assert status == 504, status
    outcomes[LATE] += 1
    outcomes["unanswered after a 504"] += remaining
    return False


async def session(port: int, kind: str, n: int, outcomes: Counter[str], step: list[str]) -> None:
    client = await Client.connect(port)
    client.step = step
    rst = False
    try:
        if kind == "keep-alive":
            for i in range(10):
                if i % 4 == 3:
                    payload = b"p" * (100 + i * 100)
                    await client.send(
                        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(payload), payload)
                    )
                    status, body = await client.response()
                    assert status != 200 or body == payload
                else:
                    target = [b"/", b"/json?a=1", b"/stream"][i % 3]
                    await client.send(GET % target)
                    status, body = await client.response()
                if not fast(outcomes, status, 9 - i):
                    break
        elif kind == "pipelined":
            await client.send(b"".join(GET % t for t in [b"/", b"/json"] * 10))
            for i in range(20):
                status, _ = await client.response()
                if not fast(outcomes, status, 19 - i):
                    break
        elif kind == "abandon-body":
            await client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000
            )
            rst = n % 2 == 0
            outcomes["abandoned mid-body"] += 1
        elif kind == "abandon-stream":
            await client.send(GET % b"/stream?n=100000")
            step[0] = "reading the head"
            await client.reader.readuntil(b"\r\n\r\n")
            step[0] = "reading the body"
            await client.reader.readexactly(1000)
            rst = n % 2 == 1
            outcomes["abandoned mid-stream"] += 1
        elif kind == "error":
            await client.send(GET % b"/boom")
            status, _ = await client.response()
            assert status == 500, status
            outcomes["500"] += 1
        elif kind == "timeout":
            await client.send(GET % b"/slow")
            status, _ = await client.response()
            assert status == 504, status
            outcomes["504"] += 1
    finally:
        await client.close(rst)


async def drive(port: int, total: int, outcomes: Counter[str]) -> None:
    """Run sessions from PLAN in turn, CLIENTS at a time, until `total` requests were made."""

    def sessions() -> Iterator[tuple[int, str, int]]:
        made = 0
        index = 0
        while made < total:
            kind, requests = PLAN[index % len(PLAN)]
            yield index, kind, requests
            made += requests
            index += 1

    plan = sessions()

    async def worker() -> None:
        for index, kind, _ in plan:
            step = ["connecting"]
            try:
                async with asyncio.timeout(SESSION_TIMEOUT):
                    await session(port, kind, index, outcomes, step)
            except TimeoutError:
                outcomes[f"stuck: {kind}, {step[0]}"] += 1

    async with asyncio.timeout(80), asyncio.TaskGroup() as group:
        for _ in range(CLIENTS):
            group.create_task(worker())


async def run_clients(port: int, total: int) -> Counter[str]:
    """`drive()` in a child process: its work is neither traced nor counted here,
    and it runs on the other CPU."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        str(port),
        str(total),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(90):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-3000:]
    return Counter(json.loads(out))


def client_main(port: int, total: int) -> None:
    outcomes: Counter[str] = Counter()
    asyncio.run(drive(port, total, outcomes))
    print(json.dumps(outcomes))


# --------------------------------------------------------------------------- census

ENGINE_TYPES: tuple[type, ...] = (
    HTTPProtocol,
    aserve.Request,
    Exchange,
    BodyStream,
    WriteGate,
    HTTPConnection,
    h11.Connection,
)


def census() -> dict[str, int]:
    """Live engine objects, transports and unfinished tasks, after a full collection."""
    gc.collect()
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        if isinstance(obj, ENGINE_TYPES) or "Transport" in kind.__name__:
            counts[kind.__name__] += 1
    current = asyncio.current_task()
    counts["pending tasks"] = sum(1 for t in asyncio.all_tasks() if t is not current)
    return dict(counts)


async def quiesce(server: aserve.Server) -> None:
    """Wait until the server holds no connection and no exchange is active."""
    state = server._state
    assert state is not None
    async with asyncio.timeout(5):
        while state.connections or getattr(state, "active", 0):
            await asyncio.sleep(0.02)


class CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] += 1


@contextlib.contextmanager
def counting_errors() -> Iterator[CountingHandler]:
    """Count aserve.error records without keeping them (see the module docstring).

    Entered inside the test: pytest attaches its capture handler to loggers
    that already do not propagate when the test starts, not to later ones.
    """
    logger = logging.getLogger("aserve.error")
    handler = CountingHandler()
    propagate, level = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(level)


@dataclass
class Measures:
    before: dict[str, int]
    after: dict[str, int]
    growth: int
    top: str


async def run_and_measure(server: aserve.Server, outcomes: Counter[str]) -> Measures:
    port = server.port
    outcomes.update(await run_clients(port, WARM_UP))
    await quiesce(server)
    before = census()
    tracemalloc.start(1)  # one frame: deeper tracebacks cost several times more
    try:
        baseline = tracemalloc.take_snapshot()
        outcomes.update(await run_clients(port, TOTAL - WARM_UP))
        await quiesce(server)
        after = census()
        final = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = final.filter_traces(ignore).compare_to(baseline.filter_traces(ignore), "traceback")
    top = "\n".join(
        f"{stat.size_diff:+,} B in {stat.count_diff:+} blocks at "
        + " <- ".join(str(frame) for frame in stat.traceback[:4])
        for stat in sorted(diff, key=lambda stat: -stat.size_diff)[:8]
    )
    return Measures(before, after, sum(stat.size_diff for stat in diff), top)


async def test_nothing_outlives_its_connection_over_20000_requests(serve: ServeFactory) -> None:
    outcomes: Counter[str] = Counter()
    with counting_errors() as counted:
        async with serve(build_app(), handler_timeout=HANDLER_TIMEOUT) as server:
            measures = await run_and_measure(server, outcomes)

    stuck = {kind: count for kind, count in outcomes.items() if kind.startswith("stuck")}
    assert not stuck, f"sessions that got no answer for {SESSION_TIMEOUT}s: {outcomes}"
    assert sum(outcomes.values()) >= TOTAL, outcomes
    assert outcomes[LATE] <= TOTAL // 1000, f"fast handlers timed out: {outcomes}"
    assert outcomes["500"] and outcomes["504"] and outcomes["abandoned mid-body"], outcomes

    engine_names = {t.__name__ for t in ENGINE_TYPES}
    after = measures.after
    left = {k: v for k, v in after.items() if k in engine_names or "Transport" in k}
    assert not any(left.values()), f"alive after every client left: {left} (outcomes {outcomes})"
    assert after["pending tasks"] == 0, after
    assert after == measures.before, (measures.before, after)

    assert measures.growth < GROWTH_LIMIT, (
        f"memory grew by {measures.growth:,} B over {TOTAL - WARM_UP} requests:\n{measures.top}"
    )

    # Each 500 and each 504 logged exactly once; nothing else above INFO.
    errors = counted.counts
    assert errors["ERROR"] == outcomes["500"], (errors, outcomes)
    assert errors["WARNING"] == outcomes["504"] + outcomes[LATE], (errors, outcomes)
    assert errors["CRITICAL"] == 0, errors


if __name__ == "__main__":  # the client side, run by run_clients()
    client_main(int(sys.argv[1]), int(sys.argv[2]))
