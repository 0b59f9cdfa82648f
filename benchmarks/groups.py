"""The benchmark groups: which servers are compared, on which request, with which targets.

A group is a set of servers compared with each other in the same run, on one
or more cases (a request path, the headers wrk adds, and what a correct reply
is). Each server is a module under ``servers/`` started as ``PYTHON
servers/MODULE.py PORT [ARG]``, over HTTPS when its spec says ``tls``; its name
is the one shown in its group's table, so the same name (``aserve``) stands for
a different module in different groups. A group's ``references`` are the
servers the others are given as ratios of, its ``targets`` are the ratios the
project aims for, and its ``comparisons`` are ratios printed without a target.
A case is driven by a load: wrk in a closed loop (``WrkLoad``: most groups,
with its own connection count, pipelining or timeout where the case says so)
or one of the scenario measurements of scenarios.py (an open-loop overload,
a large transfer, idle connections held, a start-up). A group may also hold
``goals``: a figure of one server that must stay at or below a bound.
See benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from servers import static_files

# --- what a correct reply is ----------------------------------------------------------


class BodyCheck(Protocol):
    def problem(self, body: bytes) -> str | None:
        """Why ``body`` is not the expected one, or None when it is."""


@dataclass(frozen=True)
class Exact:
    """The body is exactly these bytes."""

    body: bytes

    def problem(self, body: bytes) -> str | None:
        return None if body == self.body else f"body {body[:80]!r}, expected {self.body!r}"


@dataclass(frozen=True)
class JSONEqual:
    """The body is JSON equal to this value (key order and spacing are free)."""

    value: Any

    def problem(self, body: bytes) -> str | None:
        try:
            if json.loads(body) == self.value:
                return None
        except ValueError:
            pass
        return f"body {body[:80]!r}, expected JSON {json.dumps(self.value)}"


@dataclass(frozen=True)
class Length:
    """The body is this many bytes long (a static file)."""

    length: int

    def problem(self, body: bytes) -> str | None:
        if len(body) == self.length:
            return None
        return f"body of {len(body):,} bytes, expected {self.length:,}"


# --- how a case is driven ------------------------------------------------------------


@dataclass(frozen=True)
class WrkLoad:
    """wrk in a closed loop: each connection sends its next request when the last
    answer is in (``-t1``, one thread on one CPU)."""

    #: wrk's ``-c``; None: run.py's ``--connections`` (64).
    connections: int | None = None
    #: Requests written together on a connection (a Lua ``request()``, see wrkscript.py).
    pipeline: int = 1
    #: wrk's ``--timeout`` in seconds (None: wrk's 2 s). A request slower than it
    #: is counted as a timeout error and its latency is lost; raised where
    #: slowness must show as latency.
    timeout_s: float | None = None
    #: Add p50/p90/p99.9 and error counts by kind (wrkscript.py's done() hook).
    percentiles: bool = False
    #: Seconds the handler waits per request: the ideal rate is connections / wait.
    wait_s: float | None = None

    def describe(self, connections: int) -> tuple[str, ...]:
        """What makes two loads differ, for the unit key."""
        words = [f"c{connections}"]
        if self.pipeline > 1:
            words.append(f"pipeline {self.pipeline}")
        if self.timeout_s is not None:
            words.append(f"timeout {self.timeout_s:g}s")
        if self.percentiles:
            words.append("percentiles")
        return tuple(words)


@dataclass(frozen=True)
class OpenLoopLoad:
    """Open-loop load from openloop.py at ``factor`` times the server's capacity,
    the capacity measured just before by wrk at ``capacity_connections``."""

    factor: float = 2.0
    #: Keep-alive connections of the generator's pool.
    pool: int = 1000
    capacity_connections: int = 32
    #: Seconds the generator waits for late answers after its schedule.
    drain_s: float = 10.0


@dataclass(frozen=True)
class TransferLoad:
    """One large body through one connection: ``download`` (GET) or ``upload``
    (POST, with Content-Length or chunked)."""

    direction: str
    chunked: bool = False


@dataclass(frozen=True)
class IdleLoad:
    """Keep-alive connections opened, one request answered on each, then held
    idle while the server's RSS is read (memory.py's measurement)."""

    connections: int = 10_000


@dataclass(frozen=True)
class StartupLoad:
    """Start the server and ask until the first request is served; then its idle RSS."""


@dataclass(frozen=True)
class WebSocketEchoLoad:
    """wsload.py (wrk speaks no WebSocket): each connection echoes one 64-byte
    text message at a time, for run.py's --duration (wsbench.py)."""

    connections: int = 64


@dataclass(frozen=True)
class WebSocketIdleLoad(IdleLoad):
    """WebSocket sessions opened (one message echoed on each), then held idle
    while the server's RSS is read (wsbench.py)."""


Load = (
    WrkLoad
    | OpenLoopLoad
    | TransferLoad
    | IdleLoad
    | StartupLoad
    | WebSocketEchoLoad
    | WebSocketIdleLoad
)


@dataclass(frozen=True)
class Measured:
    """The body is checked by the measurement itself (scenarios.py): a transfer's
    length, or the byte count an upload is answered with."""

    def problem(self, body: bytes) -> str | None:
        return None


@dataclass(frozen=True)
class Case:
    """One request a group measures: ``GET path``, and what a correct reply to it is."""

    name: str
    path: str
    #: What is served, for headings.
    label: str
    #: The reply's content-type must start with this.
    content_type: str
    body: BodyCheck
    #: Headers wrk sends with every request (``-H``), and the check with its one.
    headers: tuple[tuple[str, str], ...] = ()
    load: Load = WrkLoad()
    #: Environment for the server (servers/settings.py reads it).
    env: tuple[tuple[str, str], ...] = ()
    #: Servers of the group the case does not apply to, by name (reported as n/a).
    not_for: tuple[str, ...] = ()

    def problem(self, status: int, content_type: str, body: bytes) -> str | None:
        """Why a reply is wrong (status 200, content-type, body), or None when it is right."""
        if status != 200:
            return f"status {status}, expected 200"
        if not content_type.startswith(self.content_type):
            return f"content-type {content_type!r}, expected {self.content_type}"
        return self.body.problem(body)


# --- servers, targets, groups -----------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """One server under test."""

    name: str
    module: str
    description: str
    #: Modules that must import for the server to run.
    requires: tuple[str, ...]
    #: Distributions whose versions are recorded with the results.
    packages: tuple[str, ...]
    args: tuple[str, ...] = ()
    #: Extra Python that must run without error (e.g. an attribute check).
    probe: str = ""
    #: Serve HTTPS: the module gets the run's certificate through $SSL_CERTFILE
    #: and $SSL_KEYFILE (see servers/settings.py) and wrk asks for https://.
    tls: bool = False

    @property
    def key(self) -> tuple[str, ...]:
        """Identifies the process run: the same key in two groups is measured once."""
        return (self.module, *self.args, *(("https",) if self.tls else ()))

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


@dataclass(frozen=True)
class Target:
    """``server`` should do at least ``factor`` times the work of ``reference``.

    Judged twice: by CPU time per request (``reference``'s over ``server``'s)
    and by requests/s (``server``'s over ``reference``'s).
    """

    server: str
    reference: str
    factor: float
    #: Judged on this case only (None: every case of the group).
    case: str | None = None
    #: The reference's figures from this case (None: the same case as the server's).
    reference_case: str | None = None

    def __str__(self) -> str:
        server, reference = _on_cases(self.server, self.reference, self.case, self.reference_case)
        return f"{server} >= {self.factor:.1f}x {reference}"


@dataclass(frozen=True)
class Comparison:
    """``server`` over ``reference``, computed as a target is but with no factor to meet."""

    server: str
    reference: str
    case: str | None = None
    reference_case: str | None = None

    def __str__(self) -> str:
        server, reference = _on_cases(self.server, self.reference, self.case, self.reference_case)
        return f"{server} over {reference}"


def _on_cases(
    server: str, reference: str, case: str | None, reference_case: str | None
) -> tuple[str, str]:
    """The two sides of a ratio, each with its case when the reference's differs."""
    if reference_case is None or reference_case == case:
        return server, reference
    return f"{server} ({case})", f"{reference} ({reference_case})"


@dataclass(frozen=True)
class Goal:
    """``server``'s ``figure`` (a field of its median run) should stay at or below
    ``at_most``, e.g. aserve's bytes per idle connection."""

    server: str
    figure: str
    at_most: float
    #: How to print the bound ("2,500 B", "16 MB").
    label: str
    case: str | None = None

    def __str__(self) -> str:
        on = f" ({self.case})" if self.case else ""
        return f"{self.server}{on} {self.figure} <= {self.label}"


@dataclass(frozen=True)
class Group:
    name: str
    title: str
    servers: tuple[ServerSpec, ...]
    cases: tuple[Case, ...]
    #: Servers every other one is given as a ratio of.
    references: tuple[str, ...]
    targets: tuple[Target, ...] = ()
    comparisons: tuple[Comparison, ...] = ()
    goals: tuple[Goal, ...] = ()
    #: Show wrk's transfer rate (MiB/s) beside requests/s.
    show_transfer: bool = False
    #: Server on one CPU and wrk on the other (``--server-cpu``/``--client-cpu``).
    #: False for servers of several processes: then neither the server nor wrk
    #: is pinned, for every server of the group alike.
    pinned: bool = True

    def select(self, only: Sequence[str] = ()) -> Group:
        """This group with only the servers named in ``only`` (all when it is empty)."""
        if not only:
            return self
        servers = tuple(s for s in self.servers if s.name in only)
        return dataclasses.replace(self, servers=servers)


def _aserve(name: str, module: str, description: str, *extra: str) -> ServerSpec:
    return ServerSpec(
        name,
        module,
        description,
        requires=("aserve", "h11", *extra),
        packages=("h11", "uvloop", *extra),
    )


def _uvicorn(name: str, module: str, description: str, parser: str, *extra: str) -> ServerSpec:
    """``module`` served by uvicorn (servers/runners.py) on ``parser``: h11 or httptools."""
    return ServerSpec(
        name,
        module,
        f"uvicorn --http {parser}, {description}",
        requires=("uvicorn", parser, "uvloop", *extra),
        packages=("uvicorn", parser, "uvloop", *extra),
        args=(parser,),
    )


HELLO = Case("hello", "/", "13-byte Hello, World!", "text/plain", Exact(b"Hello, World!"))
JSON_HELLO = Case(
    "json",
    "/",
    'JSON {"message": "Hello, World!"}',
    "application/json",
    JSONEqual({"message": "Hello, World!"}),
)
STATIC_CASES = tuple(
    Case(
        name.split(".")[0],
        f"/{name}",
        f"static file {name} ({size:,} bytes)",
        "application/octet-stream",
        Length(size),
    )
    for name, size in static_files.FILES.items()
)

HELLO_CLOSE = dataclasses.replace(
    HELLO,
    name="close",
    label="13-byte Hello, World!, Connection: close (a new connection per request)",
    headers=(("Connection", "close"),),
)

ASERVE_HELLO = ServerSpec(
    "aserve",
    "aserve_hello.py",
    "aserve.run() with a PlainTextResponse handler",
    requires=("aserve", "h11"),
    packages=("h11", "uvloop"),
    probe="aserve.run; aserve.PlainTextResponse",
)
ASGI_H11 = _uvicorn("uvicorn-h11", "uvicorn_hello.py", "raw ASGI app", "h11")
ASGI_HTTPTOOLS = _uvicorn("uvicorn-httptools", "uvicorn_hello.py", "raw ASGI app", "httptools")
HYPERCORN_HELLO = ServerSpec(
    "hypercorn",
    "hypercorn_hello.py",
    "hypercorn, uvloop worker, raw ASGI app",
    requires=("hypercorn",),
    packages=("hypercorn", "h11", "uvloop"),
)

AIOHTTP_HELLO = ServerSpec(
    "aiohttp",
    "aiohttp_hello.py",
    "aiohttp.web, one route",
    requires=("aiohttp",),
    packages=("aiohttp", "uvloop"),
)
BARE_H11 = ServerSpec(
    "bare-h11",
    "bare_h11.py",
    "asyncio.Protocol + h11, canned reply (the floor)",
    requires=("h11",),
    packages=("h11", "uvloop"),
)
GRANIAN_HELLO = ServerSpec(
    "granian",
    "granian_hello.py",
    "granian (Rust), ASGI interface, 1 worker, uvloop, the raw ASGI app",
    requires=("granian", "uvloop"),
    packages=("granian", "uvloop"),
)
HTTP_SERVER_HELLO = ServerSpec(
    "http.server",
    "http_server_hello.py",
    "http.server's ThreadingHTTPServer, a handler answering Hello (HTTP/1.0: "
    "a connection per request)",
    requires=(),
    packages=(),
)

# The scenario endpoints (servers/scenario.py) under each server.
_SCENARIO_NEEDS = ("aserve", "h11")
ASERVE_SCENARIOS = ServerSpec(
    "aserve",
    "aserve_scenarios.py",
    "aserve.run() with one native handler, no body size limit",
    requires=_SCENARIO_NEEDS,
    packages=("h11", "uvloop"),
)
ASERVE_SCENARIOS_LIMITED = dataclasses.replace(
    ASERVE_SCENARIOS,
    name="aserve-limited",
    description="the same with max_concurrency=32",
    args=("--max-concurrency=32",),
)
UVICORN_SCENARIOS_H11 = _uvicorn("uvicorn-h11", "uvicorn_scenarios.py", "raw ASGI app", "h11")
UVICORN_SCENARIOS_HTTPTOOLS = _uvicorn(
    "uvicorn-httptools", "uvicorn_scenarios.py", "raw ASGI app", "httptools"
)
HYPERCORN_SCENARIOS = dataclasses.replace(HYPERCORN_HELLO, module="hypercorn_scenarios.py")
AIOHTTP_SCENARIOS = dataclasses.replace(
    AIOHTTP_HELLO, module="aiohttp_scenarios.py", description="aiohttp.web, five routes"
)
GRANIAN_SCENARIOS = dataclasses.replace(GRANIAN_HELLO, module="granian_scenarios.py")
HTTP_SERVER_BODIES = ServerSpec(
    "http.server",
    "http_server_bodies.py",
    "python -m http.server on a folder with the file (download only)",
    requires=(),
    packages=(),
)

#: aserve refuses connections past max_connections (10,000 by default): the
#: 10,000-connection runs could pass it with the warm-up's connections still
#: closing. granian closes keep-alive connections past its backpressure (1,024
#: by default). Both are raised for these cases (servers/settings.py); the
#: other servers have no such limit.
_ROOMY = (("MAX_CONNECTIONS", "20000"),)
SCALE_CASES = tuple(
    Case(
        f"c{count}",
        "/",
        f"13-byte Hello, World!, {count:,} keep-alive connections",
        "text/plain",
        Exact(b"Hello, World!"),
        load=WrkLoad(connections=count, timeout_s=30, percentiles=True),
        env=_ROOMY,
    )
    for count in (64, 1000, 10_000)
)
PIPELINE_DEPTH = 16
PIPELINED = dataclasses.replace(
    SCALE_CASES[0],
    name=f"pipelined-{PIPELINE_DEPTH}",
    label=f"13-byte Hello, World!, 64 connections, {PIPELINE_DEPTH} requests per write",
    load=WrkLoad(connections=64, pipeline=PIPELINE_DEPTH, timeout_s=30, percentiles=True),
)
CHURN = dataclasses.replace(
    SCALE_CASES[0],
    name="close",
    label="13-byte Hello, World!, Connection: close (a new connection per request), 64 connections",
    headers=(("Connection", "close"),),
    env=(),
)
IO_WAIT = Case(
    "io",
    "/io",
    "a handler awaiting 10 ms, 2,000 connections",
    "text/plain",
    Exact(b"Hello, World!"),
    load=WrkLoad(connections=2000, timeout_s=30, percentiles=True, wait_s=0.010),
)
OVERLOAD = Case(
    "work",
    "/work",
    "a handler awaiting 10 ms then working ~1 ms, open loop at 2x capacity",
    "text/plain",
    Exact(b"Hello, World!"),
    load=OpenLoopLoad(),
)
_OCTETS = "application/octet-stream"
BODY_CASES = (
    Case(
        "download",
        "/download",
        "a streamed download with Content-Length",
        _OCTETS,
        Measured(),
        load=TransferLoad("download"),
    ),
    Case(
        "upload",
        "/upload",
        "an upload with Content-Length",
        "text/plain",
        Measured(),
        load=TransferLoad("upload"),
        not_for=("http.server",),
    ),
    Case(
        "upload-chunked",
        "/upload",
        "a chunked upload",
        "text/plain",
        Measured(),
        load=TransferLoad("upload", chunked=True),
        not_for=("http.server",),
    ),
)
IDLE = dataclasses.replace(
    SCALE_CASES[0],
    name="idle",
    label="idle keep-alive connections, one request answered on each",
    load=IdleLoad(10_000),
    env=(("KEEP_ALIVE_TIMEOUT", "600"), *_ROOMY),
)
STARTUP = dataclasses.replace(
    SCALE_CASES[0],
    name="startup",
    label="from the process start to the first request served",
    load=StartupLoad(),
    env=(),
)
_HELLO_PEERS = (
    ASERVE_HELLO,
    ASGI_H11,
    ASGI_HTTPTOOLS,
    HYPERCORN_HELLO,
    AIOHTTP_HELLO,
    GRANIAN_HELLO,
)
_SCENARIO_PEERS = (
    ASERVE_SCENARIOS,
    UVICORN_SCENARIOS_H11,
    UVICORN_SCENARIOS_HTTPTOOLS,
    HYPERCORN_SCENARIOS,
    AIOHTTP_SCENARIOS,
    GRANIAN_SCENARIOS,
)


def _https(spec: ServerSpec, how: str) -> ServerSpec:
    """``spec`` serving HTTPS with the run's certificate; ``how`` says whose TLS it is."""
    return dataclasses.replace(spec, description=f"{spec.description}, HTTPS ({how})", tls=True)


def _aserve_workers(count: int, *options: str) -> ServerSpec:
    """The aserve command on the hello handler: a supervisor and ``count`` workers when
    ``count`` > 1, else one process (servers/aserve_workers.py), with ``options``."""
    return ServerSpec(
        "-".join([f"aserve-{count}w", *(o.lstrip("-") for o in options)]),
        "aserve_workers.py",
        " ".join(["aserve aserve_hello:hello", f"--workers {count}", *options]),
        requires=("aserve", "h11"),
        packages=("h11", "uvloop"),
        args=(str(count), *options),
    )


def _uvicorn_workers(count: int) -> ServerSpec:
    """uvicorn on the raw ASGI app with ``count`` worker processes (servers/uvicorn_workers.py)."""
    return ServerSpec(
        f"uvicorn-h11-{count}w",
        "uvicorn_workers.py",
        f"uvicorn asgi_app:app --http h11 --workers {count}",
        requires=("uvicorn", "h11", "uvloop"),
        packages=("uvicorn", "h11", "uvloop"),
        args=("h11", str(count)),
    )


# WebSockets: aserve's own API and the raw ASGI echo (servers/asgi_ws_echo.py)
# under aserve and under uvicorn with each of its implementations (--ws).
_WS_NEEDS = ("aserve", "h11", "wsproto")
WEBSOCKET_SERVERS = (
    ServerSpec(
        "aserve",
        "aserve_ws_echo.py",
        "aserve.App, @app.websocket echo (wsproto)",
        requires=_WS_NEEDS,
        packages=("h11", "uvloop", "wsproto"),
    ),
    ServerSpec(
        "aserve-asgi",
        "aserve_asgi_ws_echo.py",
        "aserve.asgi.ASGIHandler, raw ASGI echo (wsproto)",
        requires=_WS_NEEDS,
        packages=("h11", "uvloop", "wsproto"),
    ),
    *(
        ServerSpec(
            f"uvicorn-{ws}",
            "uvicorn_ws_echo.py",
            f"uvicorn --ws {ws}, raw ASGI echo",
            requires=("uvicorn", ws, "uvloop"),
            packages=("uvicorn", ws, "h11", "uvloop"),
            args=(ws,),
        )
        for ws in ("wsproto", "websockets")
    ),
)
WEBSOCKET_CASES = (
    Case(
        "echo",
        "/ws",
        "64-byte text messages echoed one at a time, 64 connections",
        "",
        Measured(),
        load=WebSocketEchoLoad(),
    ),
    Case(
        "idle",
        "/ws",
        "10,000 WebSocket sessions held open, idle",
        "",
        Measured(),
        load=WebSocketIdleLoad(),
        env=_ROOMY,
    ),
)

GROUPS: tuple[Group, ...] = (
    Group(
        "hello",
        "Hello, World! from each server's plainest handler",
        (
            ASERVE_HELLO,
            ASGI_H11,
            ASGI_HTTPTOOLS,
            HYPERCORN_HELLO,
            AIOHTTP_HELLO,
            BARE_H11,
        ),
        (HELLO,),
        references=("uvicorn-h11", "bare-h11"),
        targets=(Target("aserve", "uvicorn-h11", 1.5), Target("aserve", "bare-h11", 1.0)),
    ),
    Group(
        "app",
        "App with 50 routes, JSON response",
        (
            _aserve("aserve-json", "aserve_json.py", "aserve.run() with a JSONResponse handler"),
            _aserve("aserve-app", "aserve_app.py", "aserve.App, 50 routes, JSONResponse"),
            _uvicorn("starlette", "starlette_app.py", "Starlette, 50 routes", "h11", "starlette"),
        ),
        (JSON_HELLO,),
        references=("aserve-json",),
        targets=(Target("aserve-app", "aserve-json", 0.9),),
    ),
    Group(
        "asgi",
        "the same raw ASGI app under each server",
        (
            _aserve("aserve", "aserve_asgi_hello.py", "aserve.asgi.ASGIHandler, raw ASGI app"),
            ASGI_H11,
            ASGI_HTTPTOOLS,
        ),
        (HELLO,),
        references=("uvicorn-h11",),
        targets=(Target("aserve", "uvicorn-h11", 1.3),),
    ),
    Group(
        "fastapi",
        "the same FastAPI app under each server",
        (
            _aserve("aserve", "aserve_fastapi.py", "aserve.asgi.ASGIHandler, FastAPI", "fastapi"),
            _uvicorn("uvicorn-h11", "uvicorn_fastapi.py", "FastAPI", "h11", "fastapi"),
            _uvicorn("uvicorn-httptools", "uvicorn_fastapi.py", "FastAPI", "httptools", "fastapi"),
        ),
        (JSON_HELLO,),
        references=("uvicorn-h11",),
    ),
    Group(
        "wsgi",
        "the same Flask app under each WSGI server",
        (
            _aserve(
                "aserve",
                "aserve_wsgi_flask.py",
                "aserve.wsgi.WSGIHandler, 4 threads, Flask",
                "flask",
            ),
            ServerSpec(
                "gunicorn-sync",
                "gunicorn_flask.py",
                "gunicorn, one sync worker (no keep-alive), Flask",
                requires=("gunicorn", "flask"),
                packages=("gunicorn", "flask"),
            ),
            ServerSpec(
                "waitress",
                "waitress_flask.py",
                "waitress, 4 threads, Flask",
                requires=("waitress", "flask"),
                packages=("waitress", "flask"),
            ),
        ),
        (Case("hello", "/", "Flask Hello, World!", "text/plain", Exact(b"Hello, World!")),),
        references=("gunicorn-sync", "waitress"),
    ),
    Group(
        "static",
        "static files",
        (
            _aserve("aserve", "aserve_static.py", "aserve.StaticFiles"),
            ServerSpec(
                "http.server",
                "http_server_static.py",
                "python -m http.server (HTTP/1.0, a thread per connection)",
                requires=(),
                packages=(),
            ),
            _uvicorn(
                "starlette", "starlette_static.py", "Starlette StaticFiles", "h11", "starlette"
            ),
        ),
        STATIC_CASES,
        references=("http.server", "starlette"),
        show_transfer=True,
    ),
    Group(
        "tls",
        "Hello, World! over HTTPS, and the same servers over plain HTTP",
        (
            _https(ASERVE_HELLO, "aserve's layer over ssl.SSLObject"),
            _https(ASGI_H11, "uvloop's"),
            _https(ASGI_HTTPTOOLS, "uvloop's"),
            _https(HYPERCORN_HELLO, "uvloop's"),
            dataclasses.replace(ASERVE_HELLO, name="aserve-http"),
            dataclasses.replace(ASGI_H11, name="uvicorn-h11-http"),
        ),
        (HELLO, HELLO_CLOSE),
        references=("uvicorn-h11",),
        comparisons=(
            Comparison("aserve", "uvicorn-h11"),
            Comparison("aserve", "aserve-http"),
            Comparison("uvicorn-h11", "uvicorn-h11-http"),
        ),
    ),
    Group(
        "accesslog",
        "Hello, World! with each server's access log on (a line per request to its output) and off",
        (
            ASERVE_HELLO,
            dataclasses.replace(ASERVE_HELLO, name="aserve-log", args=("--access-log",)),
            ASGI_H11,
            dataclasses.replace(ASGI_H11, name="uvicorn-h11-log", args=("h11", "--access-log")),
        ),
        (HELLO,),
        references=("uvicorn-h11",),
        comparisons=(
            Comparison("aserve-log", "aserve"),
            Comparison("uvicorn-h11-log", "uvicorn-h11"),
            Comparison("aserve-log", "uvicorn-h11-log"),
        ),
    ),
    Group(
        "metrics",
        "Hello, World! with aserve's Prometheus metrics on (every request counted) and off",
        (
            ASERVE_HELLO,
            dataclasses.replace(ASERVE_HELLO, name="aserve-metrics", args=("--metrics",)),
        ),
        (HELLO,),
        references=("aserve",),
        comparisons=(Comparison("aserve-metrics", "aserve"),),
    ),
    Group(
        "workers",
        "Hello, World! from 2 worker processes and from 1, on 2 CPUs shared with wrk",
        (
            _aserve_workers(1),
            _aserve_workers(2),
            _aserve_workers(2, "--reuse-port"),
            _uvicorn_workers(1),
            _uvicorn_workers(2),
        ),
        (HELLO,),
        references=("aserve-1w", "uvicorn-h11-1w"),
        comparisons=(
            Comparison("aserve-2w", "aserve-1w"),
            Comparison("aserve-2w-reuse-port", "aserve-1w"),
            Comparison("uvicorn-h11-2w", "uvicorn-h11-1w"),
            Comparison("aserve-2w", "uvicorn-h11-2w"),
            Comparison("aserve-1w", "uvicorn-h11-1w"),
        ),
        pinned=False,
    ),
    Group(
        "scale",
        "Hello, World! on keep-alive connections, 64 to 10,000 of them",
        _HELLO_PEERS,
        SCALE_CASES,
        references=("uvicorn-h11",),
    ),
    Group(
        "pipeline",
        f"Hello, World! with {PIPELINE_DEPTH} requests pipelined per write, and without",
        (*_HELLO_PEERS, BARE_H11),
        (SCALE_CASES[0], PIPELINED),
        references=("bare-h11", "uvicorn-h11"),
        targets=(
            Target("aserve", "aserve", 1.2, case=PIPELINED.name, reference_case="c64"),
            Target("aserve", "bare-h11", 1.0, case=PIPELINED.name),
        ),
        comparisons=tuple(
            Comparison(s.name, s.name, case=PIPELINED.name, reference_case="c64")
            for s in (*_HELLO_PEERS[1:], BARE_H11)
        ),
    ),
    Group(
        "churn",
        "Hello, World! on a new connection per request",
        (*_HELLO_PEERS, HTTP_SERVER_HELLO),
        (CHURN,),
        references=("uvicorn-h11",),
    ),
    Group(
        "io-wait",
        "a handler that awaits 10 ms of simulated I/O, 2,000 connections",
        _SCENARIO_PEERS,
        (IO_WAIT,),
        references=("uvicorn-h11",),
    ),
    Group(
        "overload",
        "open-loop load at 2x each server's capacity",
        (ASERVE_SCENARIOS, ASERVE_SCENARIOS_LIMITED, *_SCENARIO_PEERS[1:]),
        (OVERLOAD,),
        references=(),
    ),
    Group(
        "bodies",
        "large bodies, streamed down and up",
        (*_SCENARIO_PEERS, HTTP_SERVER_BODIES),
        BODY_CASES,
        references=("uvicorn-h11",),
        goals=(Goal("aserve", "rss_growth", 16_000_000, "16 MB"),),
    ),
    Group(
        "idle-memory",
        "memory per idle keep-alive connection",
        (*_HELLO_PEERS, BARE_H11),
        (IDLE,),
        references=("bare-h11",),
        goals=(Goal("aserve", "bytes_per_connection", 2500, "2,500 B"),),
    ),
    Group(
        "startup",
        "time from the process start to the first request served, and idle RSS",
        (*_HELLO_PEERS, BARE_H11, HTTP_SERVER_HELLO),
        (STARTUP,),
        references=("uvicorn-h11",),
    ),
    Group(
        "websocket",
        "WebSocket echo round trips and idle sessions, aserve beside uvicorn's two",
        WEBSOCKET_SERVERS,
        WEBSOCKET_CASES,
        references=("uvicorn-wsproto", "uvicorn-websockets"),
    ),
)

GROUP_NAMES = tuple(g.name for g in GROUPS)


def get(name: str) -> Group:
    """The group called ``name``."""
    for group in GROUPS:
        if group.name == name:
            return group
    raise KeyError(name)


def select(
    groups: str | None = None, only: str | None = None, cases: str | None = None
) -> list[Group]:
    """The groups named in ``--group`` (all when None), each cut to the ``--only``
    servers and the ``--case`` cases.

    Groups left with no server or no case are dropped; unknown names are an error.
    """
    group_names = _names(groups) or list(GROUP_NAMES)
    unknown = [n for n in group_names if n not in GROUP_NAMES]
    if unknown:
        raise SystemExit(
            f"unknown group(s): {', '.join(unknown)} (known: {', '.join(GROUP_NAMES)})"
        )
    chosen = [g for g in GROUPS if g.name in group_names]
    server_names = _names(only)
    if server_names:
        known = {s.name for g in chosen for s in g.servers}
        unknown = [n for n in server_names if n not in known]
        if unknown:
            raise SystemExit(
                f"unknown server(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
    case_names = _names(cases)
    if case_names:
        known = {c.name for g in chosen for c in g.cases}
        unknown = [n for n in case_names if n not in known]
        if unknown:
            raise SystemExit(
                f"unknown case(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        chosen = [
            dataclasses.replace(g, cases=tuple(c for c in g.cases if c.name in case_names))
            for g in chosen
        ]
    selected = [g.select(server_names) for g in chosen]
    return [g for g in selected if g.servers and g.cases]


def _names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]
