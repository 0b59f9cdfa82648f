"""The measurements run.py makes without a closed wrk loop, one function per kind of load.

- ``overload`` (``OpenLoopLoad``): the server's capacity on the case's path by
  a short closed-loop wrk run, then openloop.py at ``factor`` times that rate
  for ``--overload-seconds``, on the client CPU, with the server's RSS sampled
  every 0.25 s.
- ``bodies`` (``TransferLoad``): a ``--body-mb`` body (256 MiB) through one
  connection, down (``GET /download``) or up (``POST /upload`` with
  Content-Length or chunked), from this process pinned to the client CPU with
  blocking sockets, three times on fresh connections; MiB/s from the median
  time of the three (each from the request's first byte to the response's
  last), and the server's RSS growth: its peak RSS over the three (VmHWM,
  reset just before through /proc/PID/clear_refs, and samples every 20 ms)
  less its RSS just before.
- ``idle-memory`` (``IdleLoad``): memory.py's measurement (warm up, settle,
  open N connections with one request answered on each, settle, read RSS).
- ``startup`` (``StartupLoad``): the time from starting the process to the
  first request answered correctly (asking every 2 ms until one is), then the
  RSS of the idle server a second later.

Each returns a run record with the figures the report prints (``HEADERS`` and
``cells()``), the one its medians and ratios use (``primary``), and what in it
deserves a warning. RSS is always the process tree's, added up (granian serves
from a child process). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import harness
import memory
import wsbench
from groups import Case, IdleLoad, OpenLoopLoad, ServerSpec, StartupLoad, TransferLoad

MIB = 2**20
#: Large transfers made one after the other in one run (their median time is kept):
#: at loopback speeds one 256 MiB transfer takes a fraction of a second.
TRANSFERS_PER_RUN = 3
#: What the generator may lag behind its schedule (p99) before its figures are doubted.
LAG_WARNING_MS = 5.0


def mib(n: float) -> str:
    return f"{n / MIB:,.1f} MiB"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:,.2f} s" if value >= 10_000 else f"{value:,.1f} ms"


class TransferError(Exception):
    """A large transfer failed or was answered wrongly."""


# --- what else ran ------------------------------------------------------------------------


class Meter:
    """The server's CPU time, and everyone else's, over a measurement: the CPU
    used by everything but the server and this process (with the children it
    reaped, such as openloop.py) as a fraction of one CPU, as run.py does for wrk."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.started = time.monotonic()
        self.machine = harness.machine_cpu_seconds()[0]
        self.server = harness.tree_cpu_seconds(server_pid)
        self.own = _own_cpu_seconds()

    def stop(self) -> tuple[float, float, float]:
        """(wall seconds, server CPU seconds, other load as a fraction of a CPU)."""
        wall = time.monotonic() - self.started
        server = harness.tree_cpu_seconds(self.server_pid) - self.server
        own = _own_cpu_seconds() - self.own
        busy = harness.machine_cpu_seconds()[0] - self.machine
        other = max(0.0, busy - server - own) / wall if wall > 0 else 0.0
        return wall, server, round(other, 3)


def _own_cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


# --- the run records ----------------------------------------------------------------------


@dataclass
class OverloadRun:
    HEADERS: ClassVar[tuple[str, ...]] = (
        "capacity",
        "offered",
        "2xx/s",
        "503/s",
        "other",
        "unanswered",
        "2xx p50",
        "2xx p99",
        "2xx p99.9",
        "503 p99",
        "RSS peak growth",
        "server CPU",
        "gen. lag p99",
    )
    METRIC: ClassVar[str] = "2xx p99"
    HIGHER_IS_BETTER: ClassVar[bool] = False

    #: Requests/s the server answered with 2xx in the closed-loop wrk run.
    capacity_rps: float
    offered_rps: float
    seconds: float
    #: 2xx answers and 503s per second that arrived while the schedule lasted.
    ok_per_s: float
    refused_per_s: float
    other: int
    unanswered: int
    oldest_unanswered_s: float
    by_status: dict[str, int]
    ok_ms: dict[str, float]
    refused_ms: dict[str, float]
    lag_ms: dict[str, float]
    client_cpu: float
    #: The server's CPU time over the schedule's wall time (from the samples).
    server_cpu: float
    other_load: float
    #: RSS before the generator opened its pool, and when its schedule started.
    rss_before: int
    rss_start: int
    rss_peak: int
    #: (seconds from the schedule's start, RSS bytes, server CPU seconds so far),
    #: every 0.25 s from before the pool opened to the end of the drain.
    rss_samples: list[tuple[float, int, float]] = field(default_factory=list)
    #: By second of the schedule in which requests were due: their answers and
    #: latency percentiles (openloop.py's per_second).
    per_second: list[dict[str, Any]] = field(default_factory=list)
    #: Answers by second of the run in which they arrived, the drain included.
    answered_per_second: list[dict[str, Any]] = field(default_factory=list)
    replacements: int = 0
    protocol_errors: list[str] = field(default_factory=list)

    @property
    def primary(self) -> float:
        return self.ok_ms.get("p99", float("inf"))

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_start

    def cells(self) -> list[str]:
        return [
            f"{self.capacity_rps:,.0f}",
            f"{self.offered_rps:,.0f}",
            f"{self.ok_per_s:,.0f}",
            f"{self.refused_per_s:,.0f}",
            f"{self.other:,}",
            f"{self.unanswered:,}",
            _ms(self.ok_ms.get("p50")),
            _ms(self.ok_ms.get("p99")),
            _ms(self.ok_ms.get("p99.9")),
            _ms(self.refused_ms.get("p99")),
            mib(self.rss_growth),
            f"{self.server_cpu:.0%}",
            _ms(self.lag_ms.get("p99")),
        ]

    def warnings(self) -> list[str]:
        found = []
        lag = self.lag_ms.get("p99", 0.0)
        if lag > LAG_WARNING_MS:
            found.append(f"the generator sent 1% of its requests {lag:.1f} ms late or later")
        if self.client_cpu > 0.9:
            found.append(f"the generator used {self.client_cpu:.0%} of its CPU")
        if self.unanswered:
            found.append(
                f"{self.unanswered:,} requests unanswered at the end (the oldest waited "
                f"{self.oldest_unanswered_s:.1f} s); they are in no percentile"
            )
        if self.protocol_errors:
            found.append("client errors: " + "; ".join(self.protocol_errors))
        return found


@dataclass
class TransferRun:
    HEADERS: ClassVar[tuple[str, ...]] = (
        "MiB/s",
        "seconds",
        "RSS before",
        "RSS peak growth",
        "server CPU",
    )
    METRIC: ClassVar[str] = "MiB/s"
    HIGHER_IS_BETTER: ClassVar[bool] = True

    size: int
    #: The median of the transfers' times.
    seconds: float
    rss_before: int
    #: Peak RSS over the transfers: the larger of VmHWM and the samples.
    rss_peak: int
    #: The server's CPU time over all the transfers.
    server_cpu_s: float
    other_load: float
    #: (seconds from the first transfer's start, RSS bytes, server CPU seconds so far).
    rss_samples: list[tuple[float, int, float]] = field(default_factory=list)
    #: Seconds each transfer took, one after the other on fresh connections.
    timings: list[float] = field(default_factory=list)

    @property
    def mib_per_s(self) -> float:
        return self.size / MIB / self.seconds if self.seconds else 0.0

    @property
    def primary(self) -> float:
        return self.mib_per_s

    @property
    def rss_growth(self) -> int:
        return max(0, self.rss_peak - self.rss_before)

    def cells(self) -> list[str]:
        return [
            f"{self.mib_per_s:,.1f}",
            f"{self.seconds:.2f}",
            mib(self.rss_before),
            mib(self.rss_growth),
            f"{self.server_cpu_s / sum(self.timings):.0%}" if sum(self.timings) else "-",
        ]

    def warnings(self) -> list[str]:
        return []


@dataclass
class IdleRun:
    HEADERS: ClassVar[tuple[str, ...]] = ("RSS idle", "RSS with the connections", "B/conn", "held")
    METRIC: ClassVar[str] = "B/conn"
    HIGHER_IS_BETTER: ClassVar[bool] = False

    connections: int
    rss_before: int
    rss_after: int
    bytes_per_connection: float
    sockets_held: int
    open_seconds: float
    other_load: float = 0.0

    @property
    def primary(self) -> float:
        return self.bytes_per_connection

    def cells(self) -> list[str]:
        return [
            mib(self.rss_before),
            mib(self.rss_after),
            f"{self.bytes_per_connection:,.0f}",
            f"{self.sockets_held:,}",
        ]

    def warnings(self) -> list[str]:
        if self.sockets_held < self.connections:
            return [f"held only {self.sockets_held:,} of {self.connections:,} connections"]
        return []


@dataclass
class StartupRun:
    HEADERS: ClassVar[tuple[str, ...]] = ("start to first reply", "idle RSS")
    METRIC: ClassVar[str] = "start"
    HIGHER_IS_BETTER: ClassVar[bool] = False

    startup_ms: float
    rss_idle: int
    other_load: float = 0.0

    @property
    def primary(self) -> float:
        return self.startup_ms

    def cells(self) -> list[str]:
        return [f"{self.startup_ms:,.0f} ms", mib(self.rss_idle)]

    def warnings(self) -> list[str]:
        return []


ScenarioRun = OverloadRun | TransferRun | IdleRun | StartupRun


def run_type(load: object) -> type[ScenarioRun]:
    """The run record a scenario load produces."""
    if isinstance(load, wsbench.WS_LOADS):
        return wsbench.run_type(load)
    kinds: dict[type, type[ScenarioRun]] = {
        OpenLoopLoad: OverloadRun,
        TransferLoad: TransferRun,
        IdleLoad: IdleRun,
        StartupLoad: StartupRun,
    }
    return kinds[type(load)]


#: run.py's wrk(): (url, connections, seconds, cpu) -> its WrkRun.
WrkFunction = Callable[[str, int, float, int | None], Any]


# --- measuring ----------------------------------------------------------------------------


def measure(
    spec: ServerSpec,
    case: Case,
    args: argparse.Namespace,
    python: str,
    server_cpu: int | None,
    client_cpu: int | None,
    wrk: WrkFunction,
) -> ScenarioRun:
    """Start the server, measure ``case`` once as its load says, stop it."""
    load = case.load
    if isinstance(load, wsbench.WS_LOADS):
        return wsbench.measure(spec, case, args, python, server_cpu, client_cpu)
    env = dict(case.env)
    if isinstance(load, TransferLoad):
        env["BODY_SIZE"] = str(args.body_mb * MIB)
    with harness.RunningServer(spec, python, cpu=server_cpu, env=env) as server:
        run: ScenarioRun
        if isinstance(load, StartupLoad):
            run = measure_startup(server, case)
        else:
            server.wait_ready()
            if isinstance(load, OpenLoopLoad):
                server.check_reply(case)
                run = measure_overload(server, case, load, args, python, client_cpu, wrk)
            elif isinstance(load, TransferLoad):
                run = measure_transfer(server, case, load, args.body_mb * MIB, client_cpu)
            elif isinstance(load, IdleLoad):
                server.check_reply(case)
                run = measure_idle(server, load, args)
            else:
                raise TypeError(f"not a scenario load: {load!r}")
        if server.proc.poll() is not None:
            raise harness.ServerError(f"died during the run: {server.log_tail()}")
    return run


def measure_overload(
    server: harness.RunningServer,
    case: Case,
    load: OpenLoopLoad,
    args: argparse.Namespace,
    python: str,
    client_cpu: int | None,
    wrk: WrkFunction,
) -> OverloadRun:
    url = f"http://{harness.HOST}:{server.port}{case.path}"
    closed = wrk(url, load.capacity_connections, args.capacity_seconds, client_cpu)
    ok_share = 1 - closed.non_2xx / closed.requests if closed.requests else 0.0
    capacity = closed.requests_per_sec * ok_share
    if capacity <= 0:
        raise harness.ServerError("no 2xx answer in the capacity run")
    rate = load.factor * capacity
    time.sleep(1)  # let wrk's connections go
    argv = [
        *harness.taskset_prefix(client_cpu),
        python,
        str(harness.BENCH_DIR / "openloop.py"),
        "--port",
        str(server.port),
        "--path",
        case.path,
        "--rate",
        f"{rate:.1f}",
        "--seconds",
        str(args.overload_seconds),
        "--pool",
        str(load.pool),
        "--drain",
        str(load.drain_s),
    ]
    meter = Meter(server.pid)
    rss_before = harness.tree_rss_bytes(server.pid)
    with harness.RssSampler(server.pid, 0.25) as sampler:
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=args.overload_seconds + load.drain_s + 120,
                env=harness.server_env(),
            )
        except subprocess.TimeoutExpired as exc:
            raise harness.ServerError("the open-loop generator did not finish") from exc
    wall, server_cpu_s, other = meter.stop()
    if proc.returncode != 0:
        raise harness.ServerError(f"openloop.py failed: {proc.stderr.strip()[-500:]}")
    result = json.loads(proc.stdout)
    offset = sampler.started - result["start_monotonic"]
    schedule_s = result["end_monotonic"] - result["start_monotonic"]
    samples = [(round(t + offset, 3), rss, cpu) for t, rss, cpu in sampler.samples]
    during = [(t, rss, cpu) for t, rss, cpu in samples if 0 <= t <= schedule_s]
    before = [rss for t, rss, _ in samples if t <= 0]
    rss_start = before[-1] if before else rss_before
    if len(during) >= 2 and during[-1][0] > during[0][0]:
        server_cpu = (during[-1][2] - during[0][2]) / (during[-1][0] - during[0][0])
    else:
        server_cpu = server_cpu_s / wall
    return OverloadRun(
        capacity_rps=round(capacity, 1),
        offered_rps=result["rate"],
        seconds=result["seconds"],
        ok_per_s=result["ok_per_s"],
        refused_per_s=result["refused_per_s"],
        other=result["other"],
        unanswered=result["unanswered"],
        oldest_unanswered_s=result["oldest_unanswered_s"],
        by_status=result["by_status"],
        ok_ms=result["ok_latency_ms"],
        refused_ms=result["refused_latency_ms"],
        lag_ms=result["lag_ms"],
        client_cpu=result["client_cpu"],
        server_cpu=round(server_cpu, 3),
        other_load=other,
        rss_before=rss_before,
        rss_start=rss_start,
        rss_peak=max(sampler.peak(), rss_start),
        rss_samples=samples,
        per_second=result["per_second"],
        answered_per_second=result["answered_per_second"],
        replacements=result["replacements"],
        protocol_errors=result["protocol_errors"],
    )


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and the body bytes read with the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise TransferError(f"connection closed before the response head ({data[:80]!r})")
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise TransferError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, rest


def _read_small_body(sock: socket.socket, headers: dict[str, str], rest: bytes) -> bytes:
    """A short body: by Content-Length, else to the connection's end."""
    body = rest
    length = headers.get("content-length")
    while length is None or len(body) < int(length):
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return body if length is None else body[: int(length)]


def download(port: int, path: str, size: int, content_type: str) -> int:
    """GET ``path`` and read its body to the end without keeping it; its length."""
    request = f"GET {path} HTTP/1.1\r\nHost: {harness.HOST}:{port}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((harness.HOST, port), timeout=60) as sock:
        sock.sendall(request.encode("latin-1"))
        status, headers, rest = _read_head(sock)
        if status != 200:
            raise TransferError(f"GET {path} answered {status}")
        if not headers.get("content-type", "").startswith(content_type):
            raise TransferError(f"content-type {headers.get('content-type')!r}")
        if "content-length" not in headers:
            raise TransferError("a download without Content-Length (this client reads no chunks)")
        length = int(headers["content-length"])
        if length != size:
            raise TransferError(f"Content-Length {length:,}, expected {size:,}")
        received = len(rest)
        buffer = memoryview(bytearray(MIB))
        while received < length:
            count = sock.recv_into(buffer, min(MIB, length - received))
            if count == 0:
                raise TransferError(f"closed after {received:,} of {length:,} bytes")
            received += count
    return received


def _upload_block(chunked: bool) -> bytes:
    """1 MiB of body, framed as 16 chunks of 64 KiB when ``chunked``."""
    block = bytes(range(256)) * (MIB // 256)
    if not chunked:
        return block
    piece = 64 * 1024
    return b"".join(
        b"%x\r\n" % piece + block[i : i + piece] + b"\r\n" for i in range(0, MIB, piece)
    )


def upload(port: int, path: str, size: int, chunked: bool) -> int:
    """POST ``size`` bytes to ``path`` (1 MiB at a time); the count it answers."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {harness.HOST}:{port}\r\n"
        f"Content-Type: application/octet-stream\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
    block = _upload_block(chunked)
    full, rest = divmod(size, MIB)
    with socket.create_connection((harness.HOST, port), timeout=60) as sock:
        try:
            sock.sendall(head.encode("latin-1"))
            for _ in range(full):
                sock.sendall(block)
            if rest:
                tail = bytes(range(256)) * (rest // 256 + 1)
                tail = tail[:rest]
                sock.sendall(b"%x\r\n%b\r\n" % (rest, tail) if chunked else tail)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError as exc:
            try:
                status, _, _ = _read_head(sock)
            except (OSError, TransferError):
                raise TransferError(f"sending the body failed: {exc!r}") from exc
            raise TransferError(f"answered {status} while the body was being sent") from exc
        status, headers, rest_bytes = _read_head(sock)
        body = _read_small_body(sock, headers, rest_bytes)
    if status != 200:
        raise TransferError(f"POST {path} answered {status}: {body[:200]!r}")
    try:
        return int(body.strip())
    except ValueError as exc:
        raise TransferError(f"POST {path} answered {body[:80]!r}, not a byte count") from exc


def ping(port: int) -> None:
    """One ``GET /`` answered with a 200 (whatever its body)."""
    conn = http.client.HTTPConnection(harness.HOST, port, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise harness.ServerError(f"GET / failed: {exc!r}") from exc
    finally:
        conn.close()
    if response.status != 200:
        raise harness.ServerError(f"GET / answered {response.status}")


def measure_transfer(
    server: harness.RunningServer,
    case: Case,
    load: TransferLoad,
    size: int,
    client_cpu: int | None,
) -> TransferRun:
    ping(server.port)
    time.sleep(0.3)
    rss_before = harness.tree_rss_bytes(server.pid)
    # Without the reset (not root, an old kernel) VmHWM would hold the start-up
    # peak: then only the samples count.
    peak_was_reset = harness.reset_peak_rss(server.pid)
    affinity = os.sched_getaffinity(0)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})  # this thread, and the sampler it starts
    timings = []
    try:
        meter = Meter(server.pid)
        with harness.RssSampler(server.pid, 0.02) as sampler:
            for _ in range(TRANSFERS_PER_RUN):
                started = time.monotonic()
                try:
                    if load.direction == "download":
                        download(server.port, case.path, size, case.content_type)
                    else:
                        count = upload(server.port, case.path, size, load.chunked)
                        if count != size:
                            raise TransferError(f"the server counted {count:,} of {size:,} bytes")
                except (OSError, TransferError) as exc:
                    tail = server.log_tail(4)
                    raise harness.ServerError(
                        f"{load.direction} failed: {exc}"
                        + (f"; server log: {tail}" if tail else "")
                    ) from exc
                timings.append(round(time.monotonic() - started, 4))
        _, server_cpu_s, other = meter.stop()
    finally:
        os.sched_setaffinity(0, affinity)
    peak = sampler.peak()
    if peak_was_reset:
        peak = max(peak, harness.tree_peak_rss_bytes(server.pid))
    return TransferRun(
        size=size,
        seconds=statistics.median_low(timings),
        rss_before=rss_before,
        rss_peak=peak,
        server_cpu_s=round(server_cpu_s, 3),
        other_load=other,
        rss_samples=sampler.samples,
        timings=timings,
    )


def measure_idle(
    server: harness.RunningServer, load: IdleLoad, args: argparse.Namespace
) -> IdleRun:
    connections = args.idle_connections or load.connections
    options = argparse.Namespace(
        connections=connections,
        concurrency=100,
        settle=15.0,
        warmup_connections=8,
        warmup_requests=250,
    )
    meter = Meter(server.pid)
    try:
        result = asyncio.run(memory.measure(server, options))
    except memory.ClientError as exc:
        raise harness.ServerError(str(exc)) from exc
    _, _, other = meter.stop()
    return IdleRun(
        connections=connections,
        rss_before=result["rss_before"],
        rss_after=result["rss_after"],
        bytes_per_connection=round(result["bytes_per_connection"], 1),
        sockets_held=result["sockets_held"],
        open_seconds=result["open_seconds"],
        other_load=other,
    )


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(harness.HOST, port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        conn.close()


def measure_startup(server: harness.RunningServer, case: Case, timeout: float = 30.0) -> StartupRun:
    """Ask for ``case.path`` every 2 ms from the process start until a correct answer."""
    meter = Meter(server.pid)
    deadline = server.started_at + timeout
    while True:
        if server.proc.poll() is not None:
            raise harness.ServerError(f"exited with status {server.proc.returncode}")
        try:
            status, content_type, body = _get(server.port, case.path)
            break
        except (OSError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise harness.ServerError(f"no answer within {timeout:.0f} s") from None
            time.sleep(0.002)
    startup_ms = (time.monotonic() - server.started_at) * 1000
    problem = case.problem(status, content_type, body)
    if problem:
        raise harness.ServerError(f"GET {case.path} answered {problem}")
    readings = []
    for _ in range(4):
        time.sleep(0.25)
        readings.append(harness.tree_rss_bytes(server.pid))
    _, _, other = meter.stop()
    return StartupRun(startup_ms=round(startup_ms, 1), rss_idle=readings[-1], other_load=other)


if __name__ == "__main__":
    sys.exit("scenarios.py is used by run.py; see benchmarks/README.md")
