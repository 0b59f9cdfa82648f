"""The benchmark groups: which servers are compared, on which request, with which targets.

A group is a set of servers compared with each other in the same run, on one
or more cases (a request path, the headers wrk adds, and what a correct reply
is). Each server is a module under ``servers/`` started as ``PYTHON
servers/MODULE.py PORT [ARG]``, over HTTPS when its spec says ``tls``; its name
is the one shown in its group's table, so the same name (``aserve``) stands for
a different module in different groups. A group's ``references`` are the
servers the others are given as ratios of, its ``targets`` are the ratios the
project aims for, and its ``comparisons`` are ratios printed without a target.
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

    def __str__(self) -> str:
        return f"{self.server} >= {self.factor:.1f}x {self.reference}"


@dataclass(frozen=True)
class Comparison:
    """``server`` over ``reference``, computed as a target is but with no factor to meet."""

    server: str
    reference: str

    def __str__(self) -> str:
        return f"{self.server} over {self.reference}"


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


GROUPS: tuple[Group, ...] = (
    Group(
        "hello",
        "Hello, World! from each server's plainest handler",
        (
            ASERVE_HELLO,
            ASGI_H11,
            ASGI_HTTPTOOLS,
            HYPERCORN_HELLO,
            ServerSpec(
                "aiohttp",
                "aiohttp_hello.py",
                "aiohttp.web, one route",
                requires=("aiohttp",),
                packages=("aiohttp", "uvloop"),
            ),
            ServerSpec(
                "bare-h11",
                "bare_h11.py",
                "asyncio.Protocol + h11, canned reply (the floor)",
                requires=("h11",),
                packages=("h11", "uvloop"),
            ),
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
)

GROUP_NAMES = tuple(g.name for g in GROUPS)


def get(name: str) -> Group:
    """The group called ``name``."""
    for group in GROUPS:
        if group.name == name:
            return group
    raise KeyError(name)


def select(groups: str | None = None, only: str | None = None) -> list[Group]:
    """The groups named in ``--group`` (all when None), each cut to the ``--only`` servers.

    Groups left with no server are dropped; unknown names are an error.
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
    selected = [g.select(server_names) for g in chosen]
    return [g for g in selected if g.servers]


def _names(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]
