"""A long mixed run against one aserve process: does it stay up, correct and flat?

``python benchmarks/soak.py`` runs for 10 minutes (``--seconds`` to shorten).
One aserve server process, pinned to CPU 0, serves an App with a few routes
and a StaticFiles mount; this process, pinned to CPU 1, keeps a mixed load on
it the whole time:

- keep-alive GETs (text, JSON, a small static file) in runs of 50 requests;
- POST bodies from 1 KiB to 256 KiB, some with Content-Length, some chunked;
- streamed (chunked) responses read to the end;
- static files: 256 KiB and 2 MiB (sendfile), ranges (206) and validators (304);
- pipelined bursts of 10 requests;
- clients that reset (SO_LINGER 0, then close) mid-request or mid-response;
- slow clients: one that reads a 2 MiB file at about 256 KiB/s, one that
  sends its body in 1 KiB pieces 10 ms apart.

Every answer is checked (status, length, content where it is known). The
server's RSS is read every few seconds. At the end: requests by outcome, RSS at
start/min/max/end and its slope (least squares, over the whole run and over
its second half), the server's CPU time, and the lines the server logged, by
level. Exit status 1 when any unexpected error was seen (a wrong answer, a
connection the server dropped, a server log line at ERROR or above).

Not part of CI; see benchmarks/README.md ("Soak") for a 10-minute result.
``python benchmarks/soak.py --serve PORT ROOT`` is the server side (started by
the run itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.metadata
import os
import platform
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import harness

HOST = harness.HOST
FILES = {"4k.bin": 4 * 1024, "256k.bin": 256 * 1024, "2m.bin": 2 * 1024 * 1024}


def file_bytes(size: int) -> bytes:
    """Deterministic content, so a client can check any range of it."""
    block = hashlib.sha256(str(size).encode()).digest() * 32  # 1 KiB
    return (block * (size // len(block) + 1))[:size]


# --------------------------------------------------------------------------- server side


def serve(port: int, root: str) -> None:
    import logging

    import aserve

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    app = aserve.App()

    @app.get("/")
    async def hello(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("Hello, World!")

    @app.get("/json")
    async def json_(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse({"message": "Hello, World!", "q": request.query.get("q")})

    @app.post("/echo")
    async def echo(request: aserve.Request) -> aserve.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        return aserve.JSONResponse({"size": size, "sha256": digest.hexdigest()})

    @app.get("/stream")
    async def stream(request: aserve.Request) -> aserve.Response:
        count = int(request.query.get("n", "100"))
        size = int(request.query.get("size", "1024"))

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(count):
                yield bytes([65 + i % 26]) * size
                if i % 10 == 9:
                    await asyncio.sleep(0)

        return aserve.StreamingResponse(chunks(), media_type="application/octet-stream")

    app.mount("/static", aserve.StaticFiles(root))
    aserve.run(app, host=HOST, port=port, access_log=False, max_body_size=1024 * 1024)


# --------------------------------------------------------------------------- client side


class Unexpected(Exception):
    """The server answered wrongly or dropped a connection it should have kept."""


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1024 * 1024)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> tuple[int, dict[bytes, bytes]]:
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Unexpected(f"connection ended before a response head: {exc!r}") from None
        lines = raw[:-4].split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0][9:12]), headers

    async def body(self, headers: dict[bytes, bytes]) -> bytes:
        try:
            if b"content-length" in headers:
                return await self.reader.readexactly(int(headers[b"content-length"]))
            if headers.get(b"transfer-encoding") == b"chunked":
                parts = []
                while size := int((await self.reader.readline()).split(b";")[0], 16):
                    parts.append((await self.reader.readexactly(size + 2))[:-2])
                await self.reader.readline()
                return b"".join(parts)
            return await self.reader.read()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            raise Unexpected(f"body cut short: {exc!r}") from None

    async def request(self, data: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
        await self.send(data)
        status, headers = await self.head()
        return status, (b"" if method == b"HEAD" or status == 304 else await self.body(headers))

    async def close(self, reset: bool = False) -> None:
        if reset:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: soak\r\n{extra}\r\n".encode("latin-1")


def post(path: str, body: bytes, chunked: bool = False) -> bytes:
    if not chunked:
        head = f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode("latin-1") + body
    pieces = [body[i : i + 16384] for i in range(0, len(body), 16384)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return (
        b"POST %s HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n" % (path.encode(),)
        + framed
    )


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Unexpected(what)


class Load:
    """The client side: workers of each kind, outcome counters, examples of failures."""

    def __init__(self, port: int, seed: int) -> None:
        self.port = port
        self.outcomes: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.examples: list[str] = []
        self.random = random.Random(seed)
        self.files = {name: file_bytes(size) for name, size in FILES.items()}
        self.etags: dict[str, bytes] = {}

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] += n

    async def keep_alive(self) -> None:
        client = await Client.connect(self.port)
        try:
            for i in range(50):
                target = ("/", f"/json?q={i}", "/static/4k.bin")[i % 3]
                status, body = await client.request(get(target))
                expect(status == 200, f"GET {target} -> {status}")
                if target == "/":
                    expect(body == b"Hello, World!", f"GET / body {body[:50]!r}")
                elif target.startswith("/static"):
                    expect(body == self.files["4k.bin"], "4k.bin content differs")
                self.count("GET keep-alive 200")
        finally:
            await client.close()

    async def posts(self) -> None:
        client = await Client.connect(self.port)
        try:
            for _ in range(10):
                size = self.random.choice((1024, 16 * 1024, 64 * 1024, 256 * 1024))
                body = self.random.randbytes(size)
                chunked = self.random.random() < 0.5
                status, answer = await client.request(post("/echo", body, chunked))
                expect(status == 200, f"POST /echo -> {status}")
                expect(
                    answer
                    == b'{"size":%d,"sha256":"%s"}'
                    % (size, hashlib.sha256(body).hexdigest().encode()),
                    f"POST /echo answered {answer[:80]!r}",
                )
                self.count("POST chunked 200" if chunked else "POST sized 200")
        finally:
            await client.close()

    async def streams(self) -> None:
        client = await Client.connect(self.port)
        try:
            for _ in range(5):
                n, size = self.random.choice(((100, 1024), (20, 32 * 1024), (1000, 100)))
                status, body = await client.request(get(f"/stream?n={n}&size={size}"))
                expect(status == 200 and len(body) == n * size, f"stream {n}x{size}: {status}")
                expect(body[:size] == b"A" * size, "stream content differs")
                self.count("GET streamed 200")
        finally:
            await client.close()

    async def static(self) -> None:
        client = await Client.connect(self.port)
        try:
            for name in ("256k.bin", "2m.bin"):
                status, body = await client.request(get(f"/static/{name}"))
                expect(status == 200 and body == self.files[name], f"{name}: {status}")
                self.count("GET static 200")
            data = self.files["2m.bin"]
            first = self.random.randrange(0, len(data) - 1)
            last = min(len(data) - 1, first + self.random.randrange(1, 300_000))
            status, body = await client.request(
                get("/static/2m.bin", f"Range: bytes={first}-{last}\r\n")
            )
            expect(status == 206 and body == data[first : last + 1], f"range -> {status}")
            self.count("GET range 206")
            await client.send(get("/static/256k.bin"))
            status, headers = await client.head()
            await client.body(headers)
            etag = headers.get(b"etag", b"")
            status, _ = await client.request(
                get("/static/256k.bin", f"If-None-Match: {etag.decode()}\r\n")
            )
            expect(status == 304, f"conditional -> {status}")
            self.count("GET static 200")
            self.count("GET conditional 304")
        finally:
            await client.close()

    async def pipelined(self) -> None:
        client = await Client.connect(self.port)
        try:
            await client.send(b"".join(get(t) for t in ("/", "/json") * 5))
            for _ in range(10):
                status, headers = await client.head()
                await client.body(headers)
                expect(status == 200, f"pipelined -> {status}")
                self.count("GET pipelined 200")
        finally:
            await client.close()

    async def resets(self) -> None:
        client = await Client.connect(self.port)
        shape = self.random.randrange(4)
        try:
            if shape == 0:
                await client.send(b"GET /json HTTP/1.1\r\nHost: so")
            elif shape == 1:
                await client.send(post("/echo", b"x" * 100_000)[:30_000])
            elif shape == 2:
                await client.send(get("/stream?n=100000&size=1024"))
                await client.head()
                await client.reader.readexactly(self.random.randrange(1, 200_000))
            else:
                await client.send(get("/static/2m.bin"))
                await client.head()
                await client.reader.readexactly(self.random.randrange(1, 500_000))
        finally:
            await client.close(reset=True)
        self.count("reset by the client (on purpose)")

    async def slow_reader(self) -> None:
        client = await Client.connect(self.port)
        try:
            await client.send(get("/static/2m.bin"))
            status, headers = await client.head()
            expect(status == 200, f"slow read -> {status}")
            received = bytearray()
            total = int(headers[b"content-length"])
            while len(received) < total:
                chunk = await client.reader.read(min(32 * 1024, total - len(received)))
                expect(bool(chunk), "slow read cut short")
                received += chunk
                await asyncio.sleep(0.125)  # about 256 KiB/s
            expect(bytes(received) == self.files["2m.bin"], "slow read content differs")
            self.count("GET slow reader 200")
        finally:
            await client.close()

    async def slow_sender(self) -> None:
        client = await Client.connect(self.port)
        try:
            body = self.random.randbytes(64 * 1024)
            await client.send(b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 65536\r\n\r\n")
            for i in range(0, len(body), 1024):
                await client.send(body[i : i + 1024])
                await asyncio.sleep(0.01)
            status, headers = await client.head()
            answer = await client.body(headers)
            expect(
                status == 200 and hashlib.sha256(body).hexdigest().encode() in answer, "slow send"
            )
            self.count("POST slow sender 200")
        finally:
            await client.close()

    async def worker(self, job: Callable[[], Awaitable[None]], until: float) -> None:
        name = job.__name__
        while time.monotonic() < until:
            try:
                async with asyncio.timeout(60):
                    await job()
            except (Unexpected, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self.unexpected[f"{name}: {type(exc).__name__}"] += 1
                if len(self.examples) < 10:
                    self.examples.append(f"{name}: {exc!r}")
                await asyncio.sleep(0.1)

    async def run(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        mix: list[tuple[Callable[[], Awaitable[None]], int]] = [
            (self.keep_alive, 16),
            (self.posts, 6),
            (self.streams, 4),
            (self.static, 4),
            (self.pipelined, 2),
            (self.resets, 4),
            (self.slow_reader, 2),
            (self.slow_sender, 2),
        ]
        async with asyncio.TaskGroup() as group:
            for job, count in mix:
                for _ in range(count):
                    group.create_task(self.worker(job, until))


# --------------------------------------------------------------------------- the run


def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, in bytes per second."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (r - mean_r) for t, r in samples) / var


def mib(value: float) -> str:
    return f"{value / 1024 / 1024:.1f} MiB"


def versions() -> str:
    found = []
    for dist in ("h11", "uvloop"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{dist} {importlib.metadata.version(dist)}")
    sys.path.insert(0, str(harness.PROJECT_ROOT))
    import aserve

    return f"aserve {aserve.__version__}, CPython {platform.python_version()}, " + ", ".join(found)


async def sample_rss(
    pid: int, every: float, samples: list[tuple[float, int]], stop: asyncio.Event
) -> None:
    started = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - started, harness.rss_bytes(pid)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await stop.wait()


async def soak(
    port: int, pid: int, args: argparse.Namespace
) -> tuple[Load, list[tuple[float, int]]]:
    load = Load(port, args.seed)
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, args.sample, samples, stop))
    try:
        await load.run(args.seconds)
    finally:
        stop.set()
        await sampler
    return load, samples


def server_log_levels(text: str) -> tuple[Counter[str], Counter[str]]:
    """Lines of the server's log by level, and by level and message (digits blanked)."""
    levels: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            levels[parts[2]] += 1
            shape = "".join("N" if c.isdigit() else c for c in parts[3])
            messages[f"{parts[2]} {shape[:100]}"] += 1
        elif line.startswith("Traceback"):
            levels["traceback"] += 1
    return levels, messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the run (600)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS readings")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="run without taskset")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--python", help="interpreter for the server (default: this one)")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return 0

    harness.raise_nofile_limit()
    root = tempfile.mkdtemp(prefix="aserve-soak-")
    for name, size in FILES.items():
        Path(root, name).write_bytes(file_bytes(size))
    port = harness.free_port()
    log = tempfile.NamedTemporaryFile(prefix="aserve-soak-", suffix=".log", delete=False)
    pin = not args.no_pin and os.cpu_count() and os.cpu_count() > 1
    argv = [
        *harness.taskset_prefix(args.server_cpu if pin else None),
        args.python or sys.executable,
        __file__,
        "--serve",
        str(port),
        root,
    ]
    if pin:
        os.sched_setaffinity(0, {args.client_cpu})
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=harness.server_env(), start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited: {Path(log.name).read_text()[-2000:]}")
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start within 20 s") from None
                time.sleep(0.05)
        cpu_before = harness.tree_cpu_seconds(proc.pid)
        others = harness.OtherLoad(proc.pid)
        wall = time.monotonic()
        try:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:
            runner = asyncio.Runner()
        with runner:
            load, samples = runner.run(soak(port, proc.pid, args))
        wall = time.monotonic() - wall
        cpu = harness.tree_cpu_seconds(proc.pid) - cpu_before
        other = others.fraction()
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    server_log = Path(log.name).read_text(errors="replace")
    os.unlink(log.name)
    for name in FILES:
        os.unlink(Path(root, name))
    os.rmdir(root)

    levels, messages = server_log_levels(server_log)
    requests = sum(load.outcomes.values())
    rss = [r for _, r in samples]
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    print(f"soak: {started_at}, {wall:.0f} s, {versions()}")
    print(
        f"server pid {proc.pid} on CPU {args.server_cpu if pin else '-'}, load on CPU "
        f"{args.client_cpu if pin else '-'}; server still running at the end: {alive}"
    )
    print(
        f"requests: {requests:,} ({requests / wall:,.0f}/s), server CPU {cpu:.1f} s "
        f"({cpu / max(requests, 1) * 1e6:.0f} µs/request)"
    )
    rows = [(name, f"{count:,}") for name, count in sorted(load.outcomes.items())]
    rows += [
        (f"UNEXPECTED {name}", f"{count:,}") for name, count in sorted(load.unexpected.items())
    ]
    harness.print_table(["outcome", "count"], rows)
    if rss:
        print(
            f"RSS: start {mib(rss[0])}, min {mib(min(rss))}, max {mib(max(rss))}, "
            f"end {mib(rss[-1])} ({len(rss)} samples every {args.sample:g} s)"
        )
        print(
            f"RSS slope: {slope(samples) * 3600 / 1024 / 1024:+.2f} MiB/hour over the run, "
            f"{slope(half) * 3600 / 1024 / 1024:+.2f} MiB/hour over its second half"
        )
    print(
        "server log lines by level: "
        + (", ".join(f"{k} {v}" for k, v in sorted(levels.items())) or "none")
    )
    for message, count in messages.most_common(8):
        print(f"  {count:,} x {message}")
    print(f"other processes on the machine used {other:.0%} of a CPU on average")
    for example in load.examples:
        print(f"  example: {example}")
    problems = (
        sum(load.unexpected.values()) + levels["ERROR"] + levels["CRITICAL"] + levels["traceback"]
    )
    if not alive:
        problems += 1
    if levels["ERROR"] or levels["CRITICAL"] or levels["traceback"]:
        print("server log, errors:")
        for line in server_log.splitlines():
            if " ERROR " in line or " CRITICAL " in line:
                print("  " + line[:300])
    print(f"unexpected errors: {problems}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
