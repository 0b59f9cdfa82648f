"""Open-loop HTTP/1.1 load: requests go out on a fixed schedule, whatever the server's pace.

wrk is a closed loop: each connection sends its next request only when the
previous answer is in, so a server that slows down is simply asked less, and
the requests that would have been waiting never show in its latencies. Here
the schedule is fixed instead: request ``i`` is due at ``start + i / rate``,
and its latency is counted from that moment, not from when it could be
written. So when the server falls behind, the wait of every request that
could not be sent yet is counted as latency, as a user would feel it.

Requests are sent one at a time on a pool of keep-alive connections opened
before the clock starts (no pipelining). A due request takes the connection
that has been idle longest; when none is idle it waits in a queue here (that
wait is part of its latency) and goes out on the next connection to come
free. A connection the server closes is replaced; a request that was on it
counts as an error (status 0).

At the end of the schedule the load waits up to ``drain`` seconds for the
answers still due, then stops; what is still unanswered is reported as such.
Reported, as JSON: answers by status, latency percentiles of the 2xx answers
and of the 503 refusals, the same per second of the schedule, how late the
generator itself sent the requests it had a connection for (``lag``: its
own precision, which should stay near zero), and its CPU time.

``python benchmarks/openloop.py --port P --path /work --rate 1500 --seconds 20``
prints the JSON; run.py starts it on the client CPU (the ``overload`` group).
It uses uvloop when it imports. Standard library only otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

# --- responses ------------------------------------------------------------------------------


class ResponseError(Exception):
    """The server sent something that is not an HTTP/1.1 response we can frame."""


@dataclass
class Response:
    status: int
    #: The server said ``Connection: close`` (or answered HTTP/1.0 without keep-alive).
    close: bool


class ResponseParser:
    """Frames responses out of a byte stream, incrementally: Content-Length and
    chunked bodies (the body itself is skipped), close-delimited ones at EOF.
    Enough for the replies of a benchmark, not a general client."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._status = 0
        self._close = False
        #: "head", "length" (``_remaining`` bytes left), "chunk-size", "chunk-data"
        #: (``_remaining`` bytes and its CRLF left), "trailers", or "until-close".
        self._state = "head"
        self._remaining = 0

    def feed(self, data: bytes) -> list[Response]:
        """Every response completed by ``data``."""
        self._buffer += data
        done: list[Response] = []
        while self._step(done):
            pass
        return done

    def eof(self) -> list[Response]:
        """The close-delimited response the connection's end completes, if any."""
        if self._state == "until-close":
            self._state = "head"
            return [Response(self._status, True)]
        return []

    def _finish(self, done: list[Response]) -> None:
        done.append(Response(self._status, self._close))
        self._state = "head"

    def _step(self, done: list[Response]) -> bool:
        buffer = self._buffer
        state = self._state
        if state == "head":
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            self._start(bytes(buffer[:end]))
            del buffer[: end + 4]
            if self._state == "length" and self._remaining == 0:
                self._finish(done)
            return True
        if state == "length":
            if not buffer:
                return False
            taken = min(len(buffer), self._remaining)
            del buffer[:taken]
            self._remaining -= taken
            if self._remaining == 0:
                self._finish(done)
            return True
        if state in ("chunk-size", "trailers"):
            end = buffer.find(b"\r\n")
            if end < 0:
                return False
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if state == "trailers":
                if not line:
                    self._finish(done)
                return True
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise ResponseError(f"bad chunk size line {line[:40]!r}") from exc
            if size == 0:
                self._state = "trailers"
            else:
                self._state, self._remaining = "chunk-data", size + 2
            return True
        if state == "chunk-data":
            if not buffer:
                return False
            taken = min(len(buffer), self._remaining)
            del buffer[:taken]
            self._remaining -= taken
            if self._remaining == 0:
                self._state = "chunk-size"
            return True
        # until-close: the body runs to the end of the connection.
        buffer.clear()
        return False

    def _start(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ResponseError(f"bad status line {lines[0][:60]!r}")
        self._status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        connection = headers.get(b"connection", b"")
        self._close = b"close" in connection or (
            parts[0] == b"HTTP/1.0" and b"keep-alive" not in connection
        )
        if self._status in (204, 304) or 100 <= self._status < 200:
            self._state, self._remaining = "length", 0
        elif b"chunked" in headers.get(b"transfer-encoding", b""):
            self._state = "chunk-size"
        elif b"content-length" in headers:
            self._state, self._remaining = "length", int(headers[b"content-length"])
        else:
            self._state = "until-close"


# --- the load -------------------------------------------------------------------------------


class Client(asyncio.Protocol):
    """One keep-alive connection of the pool, with at most one request on it."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        #: When the request on this connection was due (None: no request on it).
        self.scheduled: float | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, scheduled: float) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        try:
            responses = self.parser.feed(data)
        except ResponseError as exc:
            self.load.protocol_errors.append(str(exc))
            if self.transport is not None:
                self.transport.abort()
            return
        for response in responses:
            self.load.answered(self, response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for response in self.parser.eof():
            self.load.answered(self, response)
        self.load.lost(self)


def percentiles(values: Sequence[float], points: Sequence[float]) -> dict[str, float]:
    """Nearest-rank percentiles of ``values`` (sorted here), keyed ``p50``, ``p99``,
    ``p99.9``..., and ``max``; empty when there are no values."""
    if not values:
        return {}
    ordered = sorted(values)
    count = len(ordered)
    found = {}
    for point in points:
        rank = max(1, math.ceil(point / 100 * count))
        found[f"p{point:g}"] = ordered[rank - 1]
    found["max"] = ordered[-1]
    return found


POINTS = (50.0, 90.0, 99.0, 99.9)
TICK_S = 0.001


@dataclass
class Load:
    host: str
    port: int
    path: str
    rate: float
    seconds: float
    pool: int
    drain: float = 10.0
    connect_concurrency: int = 100
    request: bytes = b""
    idle: deque[Client] = field(default_factory=deque)
    #: Due times of requests that found no idle connection, oldest first.
    waiting: deque[float] = field(default_factory=deque)
    #: (due time, latency, status) of every answered request; status 0: its
    #: connection closed before the answer.
    results: list[tuple[float, float, int]] = field(default_factory=list)
    #: Seconds between when a request was due and when it was written, for those
    #: that found an idle connection: the generator's own lateness.
    lags: list[float] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)
    connections_opened: int = 0
    replacements: int = 0
    sent: int = 0
    stopping: bool = False
    #: Every open connection of the pool.
    clients: set[Client] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.request = f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode(
            "latin-1"
        )
        self._loop = asyncio.get_running_loop()
        self._quiet = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- connections --------------------------------------------------------------------

    async def _connect(self) -> Client:
        _, client = await self._loop.create_connection(lambda: Client(self), self.host, self.port)
        self.connections_opened += 1
        self.clients.add(client)
        return client

    async def open_pool(self) -> None:
        gate = asyncio.Semaphore(self.connect_concurrency)

        async def one() -> None:
            async with gate:
                self.idle.append(await self._connect())

        await asyncio.gather(*(one() for _ in range(self.pool)))

    async def _replace(self) -> None:
        try:
            client = await self._connect()
        except OSError as exc:
            self.protocol_errors.append(f"reconnect failed: {exc!r}")
            return
        self.replacements += 1
        self._release(client)

    # -- requests -----------------------------------------------------------------------

    def _dispatch(self, due: float) -> None:
        self.sent += 1
        if self.idle:
            client = self.idle.popleft()
            self.lags.append(time.monotonic() - due)
            client.send(due)
        else:
            self.waiting.append(due)

    def _release(self, client: Client) -> None:
        if self.waiting:
            client.send(self.waiting.popleft())
        elif self.stopping:
            if client.transport is not None:
                client.transport.close()
        else:
            self.idle.append(client)
        self._check_quiet()

    def answered(self, client: Client, response: Response) -> None:
        due = client.scheduled
        if due is None:
            return  # a reply nobody asked for (an error page on an idle connection)
        client.scheduled = None
        self.results.append((due, time.monotonic() - due, response.status))
        if response.close:
            if client.transport is not None:
                client.transport.close()  # connection_lost replaces it
        elif not client.lost:
            self._release(client)
        self._check_quiet()

    def lost(self, client: Client) -> None:
        if client.scheduled is not None:
            self.results.append((client.scheduled, time.monotonic() - client.scheduled, 0))
            client.scheduled = None
        self.clients.discard(client)
        try:
            self.idle.remove(client)
        except ValueError:
            pass
        if not self.stopping:
            task = asyncio.ensure_future(self._replace())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._check_quiet()

    def _check_quiet(self) -> None:
        if self.stopping and len(self.results) >= self.sent:
            self._quiet.set()

    def outstanding(self) -> int:
        return self.sent - len(self.results)

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        await self.open_pool()
        total = int(self.rate * self.seconds)
        interval = 1.0 / self.rate
        cpu_before = _cpu_seconds()
        start = time.monotonic() + 0.05
        issued = 0
        while issued < total:
            now = time.monotonic()
            due = min(total, int((now - start) / interval) + 1) if now >= start else 0
            while issued < due:
                self._dispatch(start + issued * interval)
                issued += 1
            # A tick of 1 ms: the loop's timers are no finer, and a shorter sleep
            # would spin; requests that fell due meanwhile go out together.
            await asyncio.sleep(TICK_S)
        sent_at = time.monotonic()
        cpu_used = _cpu_seconds() - cpu_before
        self.stopping = True
        self._check_quiet()
        try:
            await asyncio.wait_for(self._quiet.wait(), self.drain)
        except TimeoutError:
            pass
        ended = time.monotonic()
        unanswered = list(self.waiting) + [
            c.scheduled for c in self._clients_in_flight() if c.scheduled is not None
        ]
        for client in list(self.idle):
            if client.transport is not None:
                client.transport.close()
        for client in self._clients_in_flight():
            if client.transport is not None:
                client.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        return self.summary(start, sent_at, ended, cpu_used, unanswered)

    def _clients_in_flight(self) -> list[Client]:
        return [c for c in self.clients if c.scheduled is not None]

    def summary(
        self,
        start: float,
        sent_at: float,
        ended: float,
        cpu_used: float,
        unanswered: list[float],
    ) -> dict[str, Any]:
        seconds = math.ceil(self.seconds)
        by_status = Counter(status for _, _, status in self.results)
        ok = [lat for _, lat, status in self.results if 200 <= status < 300]
        refused = [lat for _, lat, status in self.results if status == 503]
        buckets: list[dict[str, Any]] = []
        per_second: list[list[tuple[float, int]]] = [[] for _ in range(seconds)]
        for due, latency, status in self.results:
            index = min(seconds - 1, max(0, int(due - start)))
            per_second[index].append((latency, status))
        left = Counter(min(seconds - 1, max(0, int(due - start))) for due in unanswered)
        for second, answers in enumerate(per_second):
            ok_here = [lat for lat, status in answers if 200 <= status < 300]
            refused_here = [lat for lat, status in answers if status == 503]
            ok_p = percentiles(ok_here, (50.0, 99.0))
            refused_p = percentiles(refused_here, (50.0, 99.0))
            buckets.append(
                {
                    "second": second,
                    "ok": len(ok_here),
                    "refused": len(refused_here),
                    "other": len(answers) - len(ok_here) - len(refused_here),
                    "unanswered": left.get(second, 0),
                    "ok_p50_ms": _ms(ok_p.get("p50")),
                    "ok_p99_ms": _ms(ok_p.get("p99")),
                    "refused_p99_ms": _ms(refused_p.get("p99")),
                }
            )
        schedule_s = sent_at - start
        return {
            # time.monotonic() is CLOCK_MONOTONIC, the same clock in every process:
            # the caller lines its own samples up with the schedule through these.
            "start_monotonic": start,
            "end_monotonic": sent_at,
            "rate": self.rate,
            "seconds": self.seconds,
            "pool": self.pool,
            "sent": self.sent,
            "answered": len(self.results),
            "unanswered": len(unanswered),
            "oldest_unanswered_s": round(ended - min(unanswered), 3) if unanswered else 0.0,
            "by_status": {str(k): v for k, v in sorted(by_status.items())},
            "ok": len(ok),
            "refused": len(refused),
            "other": len(self.results) - len(ok) - len(refused),
            # What the server got through while the load lasted: answers that
            # arrived before the schedule's end, over its length (those of the
            # drain are in "ok" and "refused" and in answered_per_second).
            "ok_per_s": round(_arrived(self.results, sent_at, ok=True) / schedule_s, 1),
            "refused_per_s": round(_arrived(self.results, sent_at, ok=False) / schedule_s, 1),
            "ok_latency_ms": {k: _ms(v) for k, v in percentiles(ok, POINTS).items()},
            "refused_latency_ms": {k: _ms(v) for k, v in percentiles(refused, POINTS).items()},
            "lag_ms": {k: _ms(v) for k, v in percentiles(self.lags, POINTS).items()},
            "schedule_s": round(schedule_s, 3),
            "drain_s": round(ended - sent_at, 3),
            "client_cpu": round(cpu_used / schedule_s, 3) if schedule_s > 0 else 0.0,
            "connections_opened": self.connections_opened,
            "replacements": self.replacements,
            "protocol_errors": self.protocol_errors[:5],
            "per_second": buckets,
            "answered_per_second": _by_answer_second(self.results, start, ended),
        }


def _arrived(results: list[tuple[float, float, int]], until: float, ok: bool) -> int:
    """2xx answers (``ok``) or 503s that arrived by ``until``."""
    return sum(
        1
        for due, latency, status in results
        if due + latency <= until and ((200 <= status < 300) if ok else status == 503)
    )


def _by_answer_second(
    results: list[tuple[float, float, int]], start: float, ended: float
) -> list[dict[str, int]]:
    """Answers by the second of the run in which they arrived (not when they were
    due): what the server got through, second by second, the drain included."""
    seconds = max(1, math.ceil(ended - start))
    counts: list[Counter[str]] = [Counter() for _ in range(seconds)]
    for due, latency, status in results:
        index = min(seconds - 1, max(0, int(due + latency - start)))
        kind = "ok" if 200 <= status < 300 else "refused" if status == 503 else "other"
        counts[index][kind] += 1
    return [
        {"second": i, "ok": c["ok"], "refused": c["refused"], "other": c["other"]}
        for i, c in enumerate(counts)
    ]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_load(
    host: str,
    port: int,
    path: str,
    rate: float,
    seconds: float,
    pool: int,
    drain: float = 10.0,
) -> dict[str, Any]:
    """Run one open-loop load and return its summary (see the module docstring)."""
    return await Load(host, port, path, rate, seconds, pool, drain).run()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the schedule")
    parser.add_argument("--pool", type=int, default=1000, help="keep-alive connections")
    parser.add_argument(
        "--drain", type=float, default=10.0, help="seconds to wait for late answers"
    )
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.pool < 1:
        parser.error("--rate and --seconds must be positive, --pool at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    coro = run_load(args.host, args.port, args.path, args.rate, args.seconds, args.pool, args.drain)
    started = time.monotonic()
    if args.loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if args.loop == "uvloop":
                raise
            result = asyncio.run(coro)
        else:
            result = uvloop.run(coro)
    else:
        result = asyncio.run(coro)
    result["loop"] = "uvloop" if "uvloop" in sys.modules else "asyncio"
    result["wall_s"] = round(time.monotonic() - started, 3)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
