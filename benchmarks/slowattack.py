"""Slow-client attacks with slowhttptest against aserve and uvicorn (h11).

Each attack mode of slowhttptest runs against each server in turn, both
started as real processes on 127.0.0.1 on a free port, pinned like the other
benchmarks (server on one CPU, slowhttptest and this script on the other):

    slowloris          -H  a request head sent a header line at a time (every 2 s)
    slow-body          -B  a POST body that stalls: a few bytes, the next 12 s later
                           (R.U.D.Y.)
    slow-read          -X  GET of a large streamed body, read a few bytes at a time
                           through a tiny receive window
    range              -R  HEAD with a Range header of ~2,000 overlapping ranges
    slow-body-trickle  -B  a POST body dribbled every 2 s, under body_timeout: a
                           gap timeout never fires, only service is judged

aserve runs with short timeouts (--header-timeout, --body-timeout,
--send-timeout and --keep-alive-timeout, 5 s by default); uvicorn with its one
equivalent, --timeout-keep-alive (it has no timeout for a slow head, a slow
body or a stalled write). Both serve a listening socket made here and handed
over with --fd, whose SO_SNDBUF every connection inherits (see `listener`).

slowhttptest writes a CSV (``-g -o``) with one row per second: closed,
pending and connected attack connections, and "service available" (its probe,
a GET on a fresh connection every ``-p`` seconds, answered within ``-p``
seconds: the attack's connection count, else 0). From it we report the lowest
"service available", the attack connections closed over time and, pairing the
k-th connection established with the k-th closed, how long they lived and how
far past the server's timeout they were closed, as the client saw it. Beside
slowhttptest's probe, our own probe sends ``GET /`` on a fresh connection
every 0.25 s (latency and failures), and every 0.5 s the server's open
sockets and CPU time and the machine's orphaned TCP sockets and TCP memory are
read from /proc.

The summary goes to stdout and to benchmarks/results/slowattack-STAMP.md
(with the per-second series and everything else in a JSON beside it). The
same module is the application both servers import (``aserve_app`` and
``starlette_app``). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import groups
import harness
from servers import static_files

#: The page served on GET /.
PAGE_SIZE = 4 * 1024
#: The streamed body of GET /large (slow-read mode), in CHUNK-sized pieces.
LARGE_SIZE = 16 * 1024 * 1024
CHUNK = 64 * 1024
#: The static file of the range mode (1 MiB, shared with the static benchmarks).
FILE_NAME = "1m.bin"

PAGE_CASE = groups.Case(
    "page", "/", f"{PAGE_SIZE:,}-byte HTML page", "text/html", groups.Length(PAGE_SIZE)
)


# --------------------------------------------------------------------------- the app


def page() -> bytes:
    """A fixed HTML page of exactly PAGE_SIZE bytes."""
    head = b"<!doctype html><html><head><title>slow attack</title></head><body><p>"
    tail = b"</p></body></html>\n"
    filler = (b"The quick brown fox jumps over the lazy dog. " * 200)[
        : PAGE_SIZE - len(head) - len(tail)
    ]
    return head + filler + tail


async def large_body() -> AsyncIterator[bytes]:
    chunk = bytes(range(256)) * (CHUNK // 256)
    for _ in range(LARGE_SIZE // CHUNK):
        yield chunk


def aserve_app() -> Any:
    """The aserve application (``python -m aserve slowattack:aserve_app --factory``)."""
    import aserve

    body = page()
    file_path = os.path.join(static_files.root(), FILE_NAME)
    app = aserve.App()

    @app.route("/", methods=["GET", "POST"])
    async def index(request: aserve.Request) -> aserve.Response:
        if request.method == "POST":
            received = await request.body()
            return aserve.PlainTextResponse(f"received {len(received)} bytes\n")
        return aserve.HTMLResponse(body)

    @app.get("/large")
    async def large(request: aserve.Request) -> aserve.Response:
        return aserve.StreamingResponse(large_body(), media_type="application/octet-stream")

    @app.get("/file")
    async def file(request: aserve.Request) -> aserve.Response:
        return aserve.FileResponse(file_path, request=request)

    return app


def starlette_app() -> Any:
    """The same application on Starlette (``uvicorn slowattack:starlette_app --factory``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import (
        FileResponse,
        HTMLResponse,
        PlainTextResponse,
        Response,
        StreamingResponse,
    )
    from starlette.routing import Route

    body = page()
    file_path = os.path.join(static_files.root(), FILE_NAME)

    async def index(request: Request) -> Response:
        if request.method == "POST":
            received = await request.body()
            return PlainTextResponse(f"received {len(received)} bytes\n")
        return HTMLResponse(body)

    async def large(request: Request) -> Response:
        return StreamingResponse(large_body(), media_type="application/octet-stream")

    async def file(request: Request) -> Response:
        return FileResponse(file_path)

    return Starlette(
        routes=[
            Route("/", index, methods=["GET", "POST"]),
            Route("/large", large),
            Route("/file", file),
        ]
    )


# --------------------------------------------------------------------------- modes and servers


@dataclass(frozen=True)
class Mode:
    name: str
    flag: str
    path: str
    #: The aserve setting that should end these connections (None: they end by themselves).
    aserve_timeout: str | None
    args: tuple[str, ...]
    description: str


MODES: tuple[Mode, ...] = (
    Mode(
        "slowloris",
        "-H",
        "/",
        "header_timeout",
        ("-i", "2", "-x", "24"),
        "GET head, one more `X-..: ..` line every 2 s",
    ),
    Mode(
        "slow-body",
        "-B",
        "/",
        "body_timeout",
        ("-i", "12", "-x", "24", "-s", "8192"),
        "POST, Content-Length 8192, `foo=bar` then `&..=..` (up to 50 bytes) every 12 s",
    ),
    Mode(
        "slow-read",
        "-X",
        "/large",
        "send_timeout",
        ("-k", "1", "-w", "512", "-y", "1024", "-n", "5", "-z", "32"),
        "GET /large (16 MiB streamed), receive window 512-1024 bytes, 32 bytes read every 5 s",
    ),
    Mode(
        "range",
        "-R",
        "/file",
        None,
        ("-a", "5", "-b", "2000"),
        "HEAD /file (1 MiB) with `Range: bytes=0-,5-5,...,5-2000`, Connection: close",
    ),
    # A body dribbled faster than body_timeout, which a timeout on the gap
    # between pieces does not end: no close is expected, only service.
    Mode(
        "slow-body-trickle",
        "-B",
        "/",
        None,
        ("-i", "2", "-x", "24", "-s", "8192"),
        "as slow-body, a piece every 2 s (under body_timeout: nothing times out)",
    ),
)
DEFAULT_MODES = ("slowloris", "slow-body", "slow-read", "range", "slow-body-trickle")


@dataclass(frozen=True)
class ServerKind:
    name: str
    description: str
    #: Seconds after which each mode's slow connections should be closed (None: never).
    timeouts: dict[str, float | None]

    def argv(self, python: str, fd: int, timeout: float) -> list[str]:
        """The command line serving the listening socket `fd` (see `listener`)."""
        raise NotImplementedError


class AserveKind(ServerKind):
    def argv(self, python: str, fd: int, timeout: float) -> list[str]:
        seconds = f"{timeout:g}"
        return [
            python,
            "-m",
            "aserve",
            "slowattack:aserve_app",
            "--factory",
            "--app-dir",
            str(harness.BENCH_DIR),
            "--fd",
            str(fd),
            "--header-timeout",
            seconds,
            "--body-timeout",
            seconds,
            "--send-timeout",
            seconds,
            "--keep-alive-timeout",
            seconds,
            "--log-level",
            "warning",
        ]


class UvicornKind(ServerKind):
    def argv(self, python: str, fd: int, timeout: float) -> list[str]:
        return [
            python,
            "-m",
            "uvicorn",
            "slowattack:starlette_app",
            "--factory",
            "--app-dir",
            str(harness.BENCH_DIR),
            "--fd",
            str(fd),
            "--http",
            "h11",
            "--loop",
            "uvloop",
            "--lifespan",
            "off",
            "--timeout-keep-alive",
            str(max(1, round(timeout))),
            "--no-access-log",
            "--log-level",
            "warning",
        ]


def server_kinds(timeout: float) -> tuple[ServerKind, ...]:
    return (
        AserveKind(
            "aserve",
            f"python -m aserve, aserve.App; header/body/send/keep-alive timeouts {timeout:g} s",
            {
                "header_timeout": timeout,
                "body_timeout": timeout,
                "send_timeout": timeout,
            },
        ),
        UvicornKind(
            "uvicorn-h11",
            f"python -m uvicorn --http h11, Starlette app; --timeout-keep-alive "
            f"{max(1, round(timeout))} (no head, body or send timeout)",
            {},
        ),
    )


class CommandServer(harness.RunningServer):
    """A server started from a full command line (the harness's other methods apply)."""

    def __init__(
        self, name: str, argv: list[str], port: int, cpu: int | None, pass_fds: Sequence[int] = ()
    ) -> None:
        self.spec = None  # type: ignore[assignment]
        self.name = name
        self.port = port
        self.log = tempfile.NamedTemporaryFile(
            prefix=f"slowattack-{name}-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            [*harness.taskset_prefix(cpu), *argv],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=harness.server_env(),
            cwd=harness.BENCH_DIR,
            start_new_session=True,
            preexec_fn=harness.raise_nofile_limit,
            pass_fds=tuple(pass_fds),
        )

    def log_text(self) -> str:
        self.log.flush()
        try:
            return Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""


# --------------------------------------------------------------------------- measuring


class Probe(threading.Thread):
    """``GET /`` on a fresh connection every `interval` seconds; latency and failures.

    Beside it, a second thread samples the server's open sockets (the listening
    one excluded) and CPU time, and the machine's TCP orphans and memory.
    """

    def __init__(self, port: int, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.pid = pid
        self.interval = interval
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.sockets: list[tuple[float, int]] = []
        #: (seconds, CPU seconds the server has used so far).
        self.cpu: list[tuple[float, float]] = []
        #: (seconds, orphaned TCP sockets, TCP memory in KiB), machine-wide (sockstat).
        self.kernel: list[tuple[float, int, int]] = []
        self.started_at = time.monotonic()
        self._done = threading.Event()

    def run(self) -> None:
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        next_probe = time.monotonic()
        while not self._done.is_set():
            if time.monotonic() >= next_probe:
                next_probe += self.interval
                self._probe()
            self._done.wait(max(0.0, next_probe - time.monotonic()))
        sampler.join(timeout=10)

    def _sample(self) -> None:
        """Every 0.5 s: the server's sockets and CPU time, the kernel's TCP state."""
        while not self._done.is_set():
            now = round(time.monotonic() - self.started_at, 2)
            try:
                held = harness.socket_count(self.pid) - 1
                cpu = round(harness.tree_cpu_seconds(self.pid), 2)
            except (OSError, KeyError):
                held, cpu = -1, -1.0
            self.sockets.append((now, held))
            self.cpu.append((now, cpu))
            orphans, memory = tcp_sockstat()
            self.kernel.append((now, orphans, memory))
            self._done.wait(0.5)

    def _probe(self) -> None:
        started = time.perf_counter()
        conn = http.client.HTTPConnection(harness.HOST, self.port, timeout=5)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or len(body) != PAGE_SIZE:
                self.failures.append(f"status {response.status}, {len(body)} bytes")
            else:
                self.latencies.append((time.perf_counter() - started) * 1000)
        except (OSError, http.client.HTTPException) as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


def tcp_sockstat() -> tuple[int, int]:
    """Orphaned TCP sockets (closed by their process, still sending) and the
    memory of all TCP sockets in KiB, machine-wide."""
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    fields = line.split()
                    values = dict(zip(fields[1::2], fields[2::2], strict=False))
                    return int(values["orphan"]), int(values["mem"]) * _PAGE_KIB
    except (OSError, KeyError, ValueError):
        pass
    return -1, -1


_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Row:
    second: int
    closed: int
    pending: int
    connected: int
    available: int


def read_csv(path: Path) -> list[Row]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        return [Row(*(int(cell) for cell in line[:5])) for line in reader if len(line) >= 5]


def first_second(rows: Sequence[Row], count: int, value: str) -> int | None:
    """The first second at which `value` of a row reaches `count`."""
    for row in rows:
        if getattr(row, value) >= count:
            return row.second
    return None


def lifetimes(rows: Sequence[Row]) -> list[int]:
    """Seconds each closed attack connection lived, pairing the k-th connection
    established with the k-th closed (first in, first out; 1 s resolution)."""
    established = [(row.second, row.closed + row.connected) for row in rows]
    result = []
    total_closed = rows[-1].closed if rows else 0
    for k in range(1, total_closed + 1):
        opened = next((s for s, n in established if n >= k), None)
        closed = first_second(rows, k, "closed")
        if opened is not None and closed is not None:
            result.append(max(0, closed - opened))
    return result


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Result:
    mode: str
    server: str
    timeout: float | None
    exit_status: str = ""
    error: str = ""
    rows: list[dict[str, int]] = field(default_factory=list)
    min_available: int | None = None
    #: Rows (seconds) in which "service available" was 0.
    unavailable_seconds: int = 0
    connections: int = 0
    peak_connected: int = 0
    closed_at: dict[int, int] = field(default_factory=dict)
    open_at_end: int = 0
    lifetime_median: float | None = None
    lifetime_max: float | None = None
    probe_ok: int = 0
    probe_failures: list[str] = field(default_factory=list)
    probe_p50_ms: float | None = None
    probe_p99_ms: float | None = None
    probe_max_ms: float | None = None
    peak_sockets: int = 0
    #: Sockets the server process still held when slowhttptest stopped.
    sockets_at_end: int = 0
    #: Seconds into the run when the server, past its peak, was back to the
    #: sockets it held at the start (None: never, within the run).
    released_at: float | None = None
    sockets: list[tuple[float, int]] = field(default_factory=list)
    #: Machine-wide orphaned TCP sockets and TCP memory: peak over the baseline.
    peak_orphans: int = 0
    peak_tcp_mem_kib: int = 0
    kernel: list[tuple[float, int, int]] = field(default_factory=list)
    #: CPU used by other processes during the run, as a fraction of one CPU.
    other_load: float = 0.0
    #: The server's CPU time over the attack's wall time (1.0: one CPU busy).
    server_cpu: float = 0.0
    #: The server's CPU use in its busiest second, as a fraction of one CPU.
    server_cpu_peak: float = 0.0
    cpu: list[tuple[float, float]] = field(default_factory=list)
    server_log_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def after_timeout(self) -> tuple[float, float] | None:
        if self.timeout is None or self.lifetime_median is None or self.lifetime_max is None:
            return None
        return self.lifetime_median - self.timeout, self.lifetime_max - self.timeout

    def target(self, grace: float) -> str:
        """aserve's target: service never lost; slow connections closed within
        `grace` seconds after their timeout, none left open."""
        if self.server != "aserve":
            return ""
        problems = []
        if self.min_available is None or self.min_available == 0:
            problems.append("service unavailable")
        if self.probe_failures:
            problems.append(f"{len(self.probe_failures)} probe failures")
        after = self.after_timeout
        if self.timeout is not None:
            if after is None or after[1] > grace:
                problems.append(f"closed later than timeout + {grace:g} s")
            if self.open_at_end:
                problems.append(f"{self.open_at_end} still open at the end")
        return "FAIL: " + ", ".join(problems) if problems else "pass"


def listener(sndbuf: int) -> socket.socket:
    """A listening socket on a free loopback port, handed to the server with --fd.

    Its send buffer size (`sndbuf` bytes, 0 to leave the kernel's) is inherited
    by every connection it accepts. On loopback the MSS is 64 KiB and the
    kernel sizes each connection's send buffer from it, up to 4 MiB (tcp_wmem):
    500 slow readers then pin 1.7 GiB of kernel memory, past the tcp_mem
    pressure mark, and the kernel itself stalls every server on the machine.
    Over a real network the MSS is ~1.4 KiB and the buffer starts near 87 KiB.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind((harness.HOST, 0))
    sock.listen(2048)
    return sock


def slowhttptest_version() -> str:
    proc = subprocess.run(["slowhttptest", "-h"], capture_output=True, text=True)
    found = re.search(r"version\s+(\S+)", proc.stdout + proc.stderr)
    return found.group(1) if found else "unknown"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_attack(
    mode: Mode,
    kind: ServerKind,
    args: argparse.Namespace,
    python: str,
    workdir: Path,
) -> Result:
    timeout = kind.timeouts.get(mode.aserve_timeout) if mode.aserve_timeout else None
    result = Result(mode.name, kind.name, timeout)
    started = time.monotonic()
    sock = listener(args.sndbuf)
    port = sock.getsockname()[1]
    argv = kind.argv(python, sock.fileno(), args.timeout)
    server = CommandServer(kind.name, argv, port, args.server_cpu, pass_fds=[sock.fileno()])
    try:
        server.wait_ready()
        server.check_reply(PAGE_CASE)
        prefix = workdir / f"{mode.name}-{kind.name}"
        argv = [
            *harness.taskset_prefix(args.client_cpu),
            "slowhttptest",
            mode.flag,
            "-c",
            str(args.connections),
            "-r",
            str(args.rate),
            "-l",
            str(args.duration),
            "-p",
            str(args.probe_timeout),
            "-u",
            f"http://{harness.HOST}:{port}{mode.path}",
            "-g",
            "-o",
            str(prefix),
            *mode.args,
        ]
        probe = Probe(port, server.pid)
        probe.start()
        other = harness.OtherLoad(server.pid)
        cpu_before = harness.tree_cpu_seconds(server.pid)
        attack_started = time.monotonic()
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=args.duration + 60,
                preexec_fn=harness.raise_nofile_limit,
            )
            if proc.returncode == 0 and "No open connections left" in proc.stdout:
                # slowhttptest stops once its last connection is closed; the
                # server may still be letting go of lingering ones.
                time.sleep(3)
        finally:
            probe.stop()
        result.other_load = round(other.fraction(), 2)
        wall = time.monotonic() - attack_started
        result.server_cpu = round((harness.tree_cpu_seconds(server.pid) - cpu_before) / wall, 2)
        output = _ANSI.sub("", proc.stdout + proc.stderr)
        status = re.search(r"Exit status:\s*(.+)", output)
        result.exit_status = status.group(1).strip() if status else f"exit {proc.returncode}"
        rows = read_csv(prefix.with_suffix(".csv"))
        if not rows:
            raise harness.ServerError(f"slowhttptest wrote no statistics: {output[-500:]}")
        last = rows[-1]
        if "No open connections left" in result.exit_status and last.connected + last.pending:
            # slowhttptest stops when its last connection closes, before it
            # writes that second's row: they all closed within the next second.
            total = last.closed + last.connected + last.pending
            rows.append(Row(last.second + 1, total, 0, 0, last.available))
        summarize(result, rows, probe, args.connections)
        if server.proc.poll() is not None:
            raise harness.ServerError(f"server exited during the attack: {server.log_tail()}")
        log = server.log_text()
        result.server_log_errors = [
            line for line in log.splitlines() if "Traceback" in line or "ERROR" in line
        ][:20]
    except (harness.ServerError, subprocess.TimeoutExpired, OSError) as exc:
        result.error = str(exc)
    finally:
        server.stop()
        sock.close()
        result.seconds = round(time.monotonic() - started, 1)
    return result


def summarize(result: Result, rows: list[Row], probe: Probe, connections: int) -> None:
    result.rows = [asdict(row) for row in rows]
    # Row 0 is written before the probe has had a chance to answer.
    result.min_available = min(row.available for row in rows[1:] or rows)
    result.unavailable_seconds = sum(1 for row in rows[1:] if row.available == 0)
    result.connections = max(row.closed + row.connected for row in rows)
    result.peak_connected = max(row.connected for row in rows)
    last = rows[-1]
    for second in (10, 20, 30, 60):
        if second <= last.second:
            result.closed_at[second] = max(r.closed for r in rows if r.second <= second)
    result.closed_at[last.second] = last.closed
    result.open_at_end = last.connected + last.pending
    lived = lifetimes(rows)
    if lived:
        result.lifetime_median = statistics.median(lived)
        result.lifetime_max = max(lived)
    result.probe_ok = len(probe.latencies)
    result.probe_failures = probe.failures[:20]
    if probe.latencies:
        result.probe_p50_ms = round(percentile(probe.latencies, 50), 2)
        result.probe_p99_ms = round(percentile(probe.latencies, 99), 2)
        result.probe_max_ms = round(max(probe.latencies), 2)
    result.sockets = probe.sockets
    result.cpu = probe.cpu
    # Busiest second: CPU seconds between samples two apart (0.5 s each).
    pairs = zip(probe.cpu, probe.cpu[2:], strict=False)
    result.server_cpu_peak = round(
        max(((c2 - c1) / (t2 - t1) for (t1, c1), (t2, c2) in pairs if t2 > t1), default=0.0), 2
    )
    result.peak_sockets = max((n for _, n in probe.sockets), default=0)
    result.sockets_at_end = probe.sockets[-1][1] if probe.sockets else 0
    if probe.sockets:
        baseline = probe.sockets[0][1]
        peak_at = max(probe.sockets, key=lambda sample: sample[1])[0]
        result.released_at = next(
            (t for t, n in probe.sockets if t > peak_at and n <= baseline), None
        )
    result.kernel = probe.kernel
    if probe.kernel:
        _, orphans0, memory0 = probe.kernel[0]
        result.peak_orphans = max(0, max(o for _, o, _ in probe.kernel) - orphans0)
        result.peak_tcp_mem_kib = max(0, max(m for _, _, m in probe.kernel) - memory0)


# --------------------------------------------------------------------------- reporting


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:g}{unit}"


def table_rows(results: Sequence[Result], grace: float) -> tuple[list[str], list[list[str]]]:
    headers = [
        "mode",
        "server",
        "service available: min (s at 0)",
        "attack conns",
        "server sockets peak/end, back to idle at",
        "closed @10/20/30 s/end",
        "open at end",
        "lifetime med/max",
        "timeout",
        "closed after timeout med/max",
        "probe ok/fail, p99/max ms",
        "kernel orphans, TCP MiB (peak)",
        "server CPU avg/peak",
        "other load",
        "aserve target",
    ]
    body = []
    for r in results:
        if r.error:
            body.append([r.mode, r.server, "error: " + r.error[:80]] + [""] * (len(headers) - 3))
            continue
        closed = "/".join(str(r.closed_at[s]) for s in sorted(r.closed_at))
        after = r.after_timeout
        body.append(
            [
                r.mode,
                r.server,
                f"{r.min_available} ({r.unavailable_seconds})",
                str(r.connections),
                f"{r.peak_sockets}/{r.sockets_at_end}, "
                + (f"{r.released_at:g} s" if r.released_at is not None else "never"),
                closed,
                str(r.open_at_end),
                f"{_num(r.lifetime_median)}/{_num(r.lifetime_max)} s",
                _num(r.timeout, " s") if r.timeout is not None else "none",
                f"{after[0]:+g}/{after[1]:+g} s" if after else "-",
                f"{r.probe_ok}/{len(r.probe_failures)}, "
                f"{_num(r.probe_p99_ms)}/{_num(r.probe_max_ms)}",
                f"{r.peak_orphans}, {r.peak_tcp_mem_kib / 1024:.0f}",
                f"{r.server_cpu:.0%}/{r.server_cpu_peak:.0%}",
                f"{r.other_load:.0%}",
                r.target(grace),
            ]
        )
    return headers, body


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def series(result: Result, every: int = 5) -> str:
    """closed/connected every `every` seconds, for the report."""
    picked = [r for r in result.rows if r["second"] % every == 0 or r is result.rows[-1]]
    return ", ".join(f"{r['second']}s {r['closed']}/{r['connected']}" for r in picked)


def write_markdown(
    results: Sequence[Result], settings: dict[str, Any], grace: float, stamp: str
) -> Path:
    headers, rows = table_rows(results, grace)
    lines = [
        f"# Slow-client attacks, {settings['date']}",
        "",
        f"slowhttptest {settings['slowhttptest']}, {settings['connections']} connections at "
        f"{settings['rate']}/s, at most {settings['duration']} s per run, probe timeout "
        f"{settings['probe_timeout']} s; server on CPU {settings['server_cpu']}, "
        f"slowhttptest on CPU {settings['client_cpu']}; listening socket SO_SNDBUF "
        f"{settings['sndbuf']} (inherited by each connection).",
        "",
    ]
    for kind in settings["servers"]:
        lines.append(f"- `{kind['name']}`: {kind['description']}")
    lines.append("")
    for mode in settings["modes"]:
        lines.append(
            f"- {mode['name']} (`{mode['flag']} {' '.join(mode['args'])}`): {mode['description']}"
        )
    lines += ["", markdown_table(headers, rows), "", "## closed/connected over time", ""]
    for r in results:
        if not r.error:
            lines.append(f"- {r.mode}, {r.server} ({r.exit_status}): {series(r)}")
    problems = [r for r in results if r.probe_failures or r.server_log_errors]
    if problems:
        lines += ["", "## Probe failures and server log errors", ""]
        for r in problems:
            for text in r.probe_failures[:5]:
                lines.append(f"- {r.mode}, {r.server}, probe: {text}")
            for text in r.server_log_errors[:5]:
                lines.append(f"- {r.mode}, {r.server}, log: {text}")
    harness.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = harness.RESULTS_DIR / f"slowattack-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        help="attack modes, comma-separated, or 'all' "
        f"({', '.join(m.name for m in MODES)}; default: %(default)s)",
    )
    parser.add_argument("--only", default="", help="servers: aserve, uvicorn-h11 (default: both)")
    parser.add_argument("--connections", type=int, default=500, help="slowhttptest -c")
    parser.add_argument("--rate", type=int, default=100, help="slowhttptest -r (connections/s)")
    parser.add_argument("--duration", type=int, default=60, help="slowhttptest -l (seconds)")
    parser.add_argument("--probe-timeout", type=int, default=2, help="slowhttptest -p (seconds)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="aserve's header/body/send/keep-alive timeouts; uvicorn's "
        "--timeout-keep-alive (default: %(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=3.0,
        help="aserve target: closed at most this long after the timeout, "
        "as slowhttptest's 1 s rows show it (default: %(default)s)",
    )
    parser.add_argument(
        "--sndbuf",
        type=int,
        default=64 * 1024,
        help="SO_SNDBUF of the listening socket, inherited by each connection "
        "(the kernel doubles it); 0: the kernel's loopback default (default: %(default)s)",
    )
    parser.add_argument("--python", help="interpreter for the servers (see README)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="run without taskset")
    parser.add_argument("--no-write", action="store_true", help="write no result files")
    args = parser.parse_args(argv)
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("slowhttptest") is None:
        raise SystemExit("slowhttptest not found: apt-get install -y slowhttptest")
    wanted = [m.name for m in MODES] if args.modes == "all" else args.modes.split(",")
    modes = [m for m in MODES if m.name in wanted]
    unknown = set(wanted) - {m.name for m in modes}
    if unknown:
        raise SystemExit(f"unknown modes: {', '.join(sorted(unknown))}")
    kinds = [k for k in server_kinds(args.timeout) if not args.only or k.name in args.only]
    python = harness.choose_python(args.python)
    harness.raise_nofile_limit()
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    version = slowhttptest_version()
    static_files.root()
    print(
        f"slowhttptest {version}: {len(modes)} modes x {len(kinds)} servers, "
        f"-c {args.connections} -r {args.rate} -l {args.duration} -p {args.probe_timeout}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="slowattack-") as tmp:
        for mode in modes:
            for kind in kinds:
                print(f"  {mode.name} against {kind.name} ...", end=" ", flush=True)
                result = run_attack(mode, kind, args, python, Path(tmp))
                results.append(result)
                print(result.error or f"{result.exit_status} ({result.seconds:g} s)", flush=True)
    print()
    headers, rows = table_rows(results, args.grace)
    harness.print_table(headers, rows)
    settings = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "slowhttptest": version,
        "connections": args.connections,
        "rate": args.rate,
        "duration": args.duration,
        "probe_timeout": args.probe_timeout,
        "timeout": args.timeout,
        "sndbuf": args.sndbuf,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "python": platform.python_version(),
        "servers": [{"name": k.name, "description": k.description} for k in kinds],
        "modes": [asdict(m) for m in modes],
    }
    if not args.no_write:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        md = write_markdown(results, settings, args.grace, stamp)
        js = harness.RESULTS_DIR / f"slowattack-{stamp}.json"
        payload = {"settings": settings, "results": [asdict(r) for r in results]}
        js.write_text(json.dumps(payload, indent=2) + "\n")
        print(
            f"\nwritten: {md.relative_to(harness.PROJECT_ROOT)}, "
            f"{js.relative_to(harness.PROJECT_ROOT)}"
        )
    failed = [r for r in results if r.error or r.target(args.grace).startswith("FAIL")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
