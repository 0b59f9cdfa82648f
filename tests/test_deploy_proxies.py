"""aserve behind real proxies: nginx and HAProxy in front of aserve processes
started through the command line (``python -m aserve deploy_app:app ...``).

Each test runs its own nginx or HAProxy -- never the machine's, which may be
serving port 80 -- on free loopback ports, with every file it writes under the
test's temporary folder, and stops every process it started at teardown. The
proxy configurations are the files in tests/deploy/, the ones the README's
"Deployment" section shows, with their @NAME@ placeholders filled in.

The test clients connect from 127.0.0.2 and up (Linux routes all of 127/8 to
the loopback) while the proxies connect to aserve from 127.0.0.1, so an app
that reports 127.0.0.2 can only have learned it from the proxy's forwarding,
never from the socket aserve accepted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

DEPLOY = Path(__file__).resolve().parent / "deploy"
#: A process listens (or has failed) within this many seconds.
START_TIMEOUT = 10.0
#: A process exits within this many seconds of its stop signal; then SIGKILL.
STOP_TIMEOUT = 10.0
#: One request through a proxy.
REQUEST_TIMEOUT = 5.0
#: What a client writes in X-Forwarded-For to pass for someone else.
SPOOF = "6.6.6.6"

T = TypeVar("T")

# The app every backend serves: what aserve told it about the request.
APP = """\
import asyncio
import os
import pathlib

import aserve


async def app(request: aserve.Request) -> aserve.Response:
    if request.path == "/slow":  # so that a stop finds requests in flight
        if "started" in request.query:
            pathlib.Path(request.query["started"]).touch()
        await asyncio.sleep(float(request.query.get("s", "0.02")))
    return aserve.JSONResponse(
        {
            "pid": os.getpid(),
            "client": list(request.client) if request.client else None,
            "scheme": request.scheme,
            "host": request.headers.get("host"),
            "path": request.path,
        }
    )
"""

# An ASGI app that builds URLs from its routes, for the root path.
ASGI_APP = """\
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route


async def item(request):
    return JSONResponse(
        {
            "url": str(request.url_for("item", item_id=request.path_params["item_id"])),
            "root_path": request.scope["root_path"],
            "path": request.scope["path"],
        }
    )


async def go(request):
    return RedirectResponse(request.url_for("item", item_id=1))


app = Starlette(routes=[Route("/items/{item_id:int}", item, name="item"), Route("/go", go)])
"""

# Socket activation the way systemd does it: bind and listen, put the socket
# on fd 3, announce it in LISTEN_FDS / LISTEN_PID, then exec the service's
# command (the pid stays the same). The socket stays blocking, as systemd
# passes it unless told NonBlocking=true.
LAUNCHER = """\
import os
import socket
import sys

host, _, port = sys.argv[1].rpartition(":")
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((host, int(port)))
sock.listen(128)
print(sock.getsockname()[1], flush=True)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""

READY = re.compile(r" serving .* on (?P<where>\S+) \(press Ctrl\+C to quit\)")
PLACEHOLDER = re.compile(r"@[A-Z0-9_]+@")


# --------------------------------------------------------------------------- helpers


def which(name: str) -> str | None:
    """A proxy's program, also where Debian puts it outside a user's PATH."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    return shutil.which(name, path=path)


def not_installed(name: str) -> str:
    return f"{name} not installed: apt-get install {name} (CI's .ci/run does)"


def needs(name: str) -> pytest.MarkDecorator:
    """Skip a test when the proxy `name` is truly absent, saying how to get it."""
    return pytest.mark.skipif(which(name) is None, reason=not_installed(name))


def find_binary(name: str) -> str:
    found = which(name)
    if found is None:
        pytest.skip(not_installed(name))
    return found


def wait_for(
    check: Callable[[], T | None],
    what: str,
    *,
    timeout: float = START_TIMEOUT,
    watch: Process | None = None,
) -> T:
    """Poll `check` until it returns something true, within `timeout` seconds;
    fail at once if the `watch`ed process exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if watch is not None and watch.popen.poll() is not None:
            pytest.fail(
                f"{watch.name} exited ({watch.popen.returncode}) before {what}:\n{watch.output()}"
            )
        if time.monotonic() > deadline:
            detail = f":\n{watch.output()}" if watch is not None else ""
            pytest.fail(f"no {what} within {timeout}s{detail}")
        time.sleep(0.02)


def exited(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for child `pid` to exit, without reaping it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True  # reaped already
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def listening(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds a socket listening on 127.0.0.1:`port`:
    a port another process took between `free_ports` and the proxy's bind
    would accept connections too, so connecting proves nothing. (Linux.)"""
    local = f"0100007F:{port:04X}"  # /proc/net/tcp: address as stored, port in hex
    with open("/proc/net/tcp") as table:
        sockets = {
            f"socket:[{fields[9]}]"
            for fields in (line.split() for line in table)
            if fields[1] == local and fields[3] == "0A"  # 0A: LISTEN
        }
    if not sockets:
        return False
    with contextlib.suppress(OSError):  # the process is gone, or an fd closed meanwhile
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            if os.readlink(fd) in sockets:
                return True
    return False


def template(name: str, replace: dict[str, str] | None = None) -> str:
    """A file of tests/deploy, with literal `replace`ments (each must apply)."""
    text = (DEPLOY / name).read_text()
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} is not in {name}"
        text = text.replace(old, new)
    return text


def fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        assert f"@{name}@" in text, f"no @{name}@ to fill"
        text = text.replace(f"@{name}@", value)
    left = PLACEHOLDER.findall(text)
    assert not left, f"placeholders left unfilled: {left}"
    return text


def problems(log: str) -> list[str]:
    """The lines of a proxy's log that report something wrong."""
    return [
        line
        for line in log.splitlines()
        if re.search(r"\[(WARNING|ALERT|warn|error|crit|alert|emerg)\]", line)
    ]


def aserve_problems(log: str) -> list[str]:
    """What an aserve log says besides its access lines and its shutdown: a
    refused connection is one line on aserve.error, at level WARNING."""
    return [
        line
        for line in log.splitlines()
        if " aserve.access: " not in line
        and not line.endswith("shutting down (send the signal again to force)")
    ]


# --------------------------------------------------------------------------- processes


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout\n{self.out()}--- stderr\n{self.log()}"


class PortTaken(Exception):
    """A free port was taken by someone else before the proxy bound it."""


@dataclass
class Backend:
    process: Process
    where: str

    @property
    def port(self) -> int:
        return int(self.where.rsplit(":", 1)[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class Deployment:
    """The processes of one test (or module): aserve backends, nginx, HAProxy.

    Every process starts in a session of its own; `close` sends each its stop
    signal, waits, then SIGKILLs its process group (nginx's workers with it).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.app_dir = folder / "app"
        self.app_dir.mkdir()
        (self.app_dir / "deploy_app.py").write_text(APP)
        (self.app_dir / "deploy_asgi.py").write_text(ASGI_APP)
        self.processes: list[Process] = []

    def start(self, name: str, argv: list[str]) -> Process:
        base = self.folder / f"{name}-{len(self.processes)}"
        stdout, stderr = base.with_suffix(".out"), base.with_suffix(".err")
        with stdout.open("wb") as out, stderr.open("wb") as err:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
        process = Process(name, popen, stdout, stderr)
        self.processes.append(process)
        return process

    def stop(self, process: Process, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send `sig`, wait, then SIGKILL whatever is left of its process group;
        the exit status."""
        if process.popen.returncode is None:
            # Until it is reaped, the process keeps its group id ours alone.
            os.kill(process.pid, sig)
            exited(process.pid, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        return process.popen.wait(STOP_TIMEOUT)

    def close(self) -> None:
        for process in reversed(self.processes):
            self.stop(process)

    # -- aserve

    def start_aserve(self, *options: str, target: str = "deploy_app:app") -> Process:
        argv = [sys.executable, "-m", "aserve", target, "--app-dir", str(self.app_dir)]
        if "--uds" not in options and "--fd" not in options:
            argv += ["--port", "0"]
        return self.start(f"aserve-{len(self.processes)}", argv + list(options))

    def serving(self, process: Process) -> Backend:
        found = wait_for(lambda: READY.search(process.out()), "start line", watch=process)
        return Backend(process, found["where"])

    def aserve(self, *options: str, target: str = "deploy_app:app") -> Backend:
        return self.serving(self.start_aserve(*options, target=target))

    def aserves(self, count: int, *options: str) -> list[Backend]:
        """`count` backends, started side by side."""
        started = [self.start_aserve(*options) for _ in range(count)]
        return [self.serving(process) for process in started]

    # -- proxies

    def _proxy(
        self, text: str, values: dict[str, str], launch: Callable[[str, Path], Process]
    ) -> dict[str, int]:
        """Fill the `*LISTEN@` placeholders with free ports, start the proxy and
        wait until it listens on all of them; a port taken meanwhile: again."""
        listens = sorted(set(re.findall(r"@([A-Z_]*LISTEN)@", text)))
        for attempt in range(3):
            ports = dict(zip(listens, free_ports(len(listens)), strict=True))
            config = fill(text, values | {k: f"127.0.0.1:{p}" for k, p in ports.items()})
            folder = self.folder / f"proxy-{len(self.processes)}"
            folder.mkdir()
            process = launch(config, folder)
            try:
                for port in ports.values():
                    wait_for(
                        lambda pid=process.pid, p=port: listening(pid, p),
                        f"listening on {port}",
                        watch=process,
                    )
                return ports
            except pytest.fail.Exception:
                self.stop(process)
                logs = process.output() + "".join(f.read_text() for f in folder.glob("*.log"))
                if attempt < 2 and re.search(r"in use|cannot bind", logs):
                    continue
                raise
        raise PortTaken(text)

    def nginx(self, site: str, **values: str) -> dict[str, int]:
        """Run nginx with `site` (upstream and server blocks) in its http block."""
        binary = find_binary("nginx")

        def launch(config: str, prefix: Path) -> Process:
            temp = "".join(
                f"    {kind}_temp_path {prefix / kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            # As root, nginx's workers would run as nobody, who cannot enter the
            # test's private folder (the Unix socket, the temp paths).
            user = "user root;\n" if os.geteuid() == 0 else ""
            conf = prefix / "nginx.conf"
            conf.write_text(
                f"{user}worker_processes 1;\n"
                "events {\n    worker_connections 512;\n}\n"
                "http {\n"
                f"    access_log {prefix / 'access.log'};\n"
                f"{temp}{textwrap.indent(config, '    ')}"
                "}\n"
            )
            main = f"daemon off; pid {prefix / 'nginx.pid'}; error_log {prefix / 'error.log'} warn;"
            return self.start("nginx", [binary, "-p", str(prefix), "-c", str(conf), "-g", main])

        return self._proxy(site, values, launch)

    def haproxy(self, config: str, **values: str) -> dict[str, int]:
        binary = find_binary("haproxy")

        def launch(text: str, folder: Path) -> Process:
            conf = folder / "haproxy.cfg"
            conf.write_text(text)
            return self.start("haproxy", [binary, "-f", str(conf), "-db"])

        return self._proxy(config, values, launch)

    def proxy_log(self, name: str) -> str:
        """Everything the proxies called `name` wrote (nginx: its error logs too)."""
        logs = [process.log() for process in self.processes if process.name == name]
        logs += [path.read_text() for path in self.folder.glob("proxy-*/error.log")]
        return "".join(logs)


# --------------------------------------------------------------------------- clients


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        assert self.status == 200, (self.status, self.body[:500])
        seen: dict[str, Any] = json.loads(self.body)
        return seen


class Client:
    """One keep-alive HTTP(S) connection to a loopback port, from `source`."""

    def __init__(
        self, port: int, *, source: str = "127.0.0.2", context: ssl.SSLContext | None = None
    ) -> None:
        self.source = source
        self.connection: http.client.HTTPConnection
        if context is None:
            self.connection = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=REQUEST_TIMEOUT, source_address=(source, 0)
            )
        else:
            self.connection = http.client.HTTPSConnection(
                "127.0.0.1",
                port,
                timeout=REQUEST_TIMEOUT,
                source_address=(source, 0),
                context=context,
            )

    def get(self, path: str = "/", headers: dict[str, str] | None = None) -> Reply:
        try:
            self.connection.request("GET", path, headers=headers or {})
            response = self.connection.getresponse()
            body = response.read()
        except BaseException:
            self.connection.close()  # the next request opens a new connection
            raise
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)

    @property
    def port(self) -> int:
        """The client's own port, once connected."""
        sock = self.connection.sock
        assert sock is not None
        return int(sock.getsockname()[1])

    def close(self) -> None:
        self.connection.close()


def get(port: int, path: str = "/", *, source: str = "127.0.0.2", **kwargs: Any) -> Reply:
    client = Client(port, source=source)
    try:
        return client.get(path, **kwargs)
    finally:
        client.close()


def burst(
    port: int,
    *,
    clients: int,
    each: int,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> list[tuple[str, Reply]]:
    """`clients` keep-alive connections side by side, from 127.0.0.2,
    127.0.0.3, ..., sending `each` requests; (source, reply) for every one."""

    def run(index: int) -> list[tuple[str, Reply]]:
        client = Client(port, source=f"127.0.0.{2 + index}", context=context)
        try:
            return [(client.source, client.get("/", headers)) for _ in range(each)]
        finally:
            client.close()

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(run, range(clients), timeout=30))
    return [reply for replies in results for reply in replies]


class Load:
    """Clients sending GETs in a loop until stopped (at most `limit` replies
    or 100 failures in all); every failure a client sees is kept."""

    def __init__(self, port: int, *, clients: int, path: str, limit: int = 20_000) -> None:
        self.port, self.path, self.limit = port, path, limit
        self.replies: list[Reply] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(f"127.0.0.{2 + i}",), daemon=True)
            for i in range(clients)
        ]

    def _run(self, source: str) -> None:
        client = Client(self.port, source=source)
        try:
            while (
                not self._stop.is_set()
                and len(self.replies) < self.limit
                and len(self.failures) < 100
            ):
                try:
                    reply = client.get(self.path)
                except (OSError, http.client.HTTPException) as exc:
                    self.failures.append(f"{source}: {exc!r}")
                    continue
                if reply.status != 200:
                    self.failures.append(f"{source}: {reply.status} {reply.body[:200]!r}")
                self.replies.append(reply)
        finally:
            client.close()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT * 2)
        assert not any(thread.is_alive() for thread in self._threads), "a client hangs"

    def pids(self, replies: list[Reply] | None = None) -> Counter[int]:
        """Which backend served how many of `replies` (default: all)."""
        replies = list(self.replies) if replies is None else replies
        return Counter(reply.json()["pid"] for reply in replies if reply.status == 200)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path)
    try:
        yield deployment
    finally:
        deployment.close()


@dataclass
class Certificate:
    """A certificate for 127.0.0.1 and what a client needs to trust it."""

    ca: trustme.CA
    certfile: Path
    keyfile: Path

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return Certificate(ca, certfile, keyfile)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Backend]]:
    """Two aserve backends with --proxy-headers, for the tests that only ask."""
    deployment = Deployment(tmp_path_factory.mktemp("shared"))
    try:
        yield deployment.aserves(2, "--proxy-headers")
    finally:
        deployment.close()


def nginx_front(
    deploy: Deployment,
    backends: list[Backend],
    certificate: Certificate,
    replace: dict[str, str] | None = None,
) -> dict[str, int]:
    """nginx as the README shows it, in front of `backends`."""
    return deploy.nginx(
        template("nginx-aserve.conf", replace),
        BACKEND_1=backends[0].address,
        BACKEND_2=backends[1].address,
        CERTFILE=str(certificate.certfile),
        KEYFILE=str(certificate.keyfile),
    )


# --------------------------------------------------------------------------- nginx


@needs("nginx")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_nginx_balances_two_backends_and_passes_on_the_client(
    deploy: Deployment, shared: list[Backend], certificate: Certificate, scheme: str
) -> None:
    ports = nginx_front(deploy, shared, certificate)
    port = ports["HTTP_LISTEN" if scheme == "http" else "HTTPS_LISTEN"]
    context = certificate.client_context() if scheme == "https" else None
    # Each client also claims another address, and the other scheme.
    spoof = {"X-Forwarded-For": SPOOF, "X-Forwarded-Proto": "https" if scheme == "http" else "http"}
    replies = burst(port, clients=6, each=50, headers=spoof, context=context)

    assert len(replies) == 300
    for source, reply in replies:
        seen = reply.json()
        assert seen["client"] == [source, 0], seen  # not nginx's 127.0.0.1, not the spoof
        assert seen["scheme"] == scheme, seen
        assert seen["host"] == f"127.0.0.1:{port}", seen
    served = Counter(reply.json()["pid"] for _, reply in replies)
    assert set(served) == {backend.process.pid for backend in shared}, served
    assert problems(deploy.proxy_log("nginx")) == []


@needs("nginx")
@pytest.mark.parametrize(
    ("forwarded_for", "source", "expected"),
    [
        ("$remote_addr", "127.0.0.2", "127.0.0.2"),
        ("$remote_addr", "127.0.0.1", "127.0.0.1"),
        ("$proxy_add_x_forwarded_for", "127.0.0.2", "127.0.0.2"),
        # The limit of appending: a client on a trusted address (here on the
        # proxy's own host) is taken for a proxy, and its word is believed.
        ("$proxy_add_x_forwarded_for", "127.0.0.1", SPOOF),
    ],
)
def test_nginx_x_forwarded_for_replaced_or_appended_against_a_spoofing_client(
    deploy: Deployment,
    shared: list[Backend],
    certificate: Certificate,
    forwarded_for: str,
    source: str,
    expected: str,
) -> None:
    replace = {"X-Forwarded-For $remote_addr;": f"X-Forwarded-For {forwarded_for};"}
    port = nginx_front(deploy, shared, certificate, replace)["HTTP_LISTEN"]
    seen = get(port, source=source, headers={"X-Forwarded-For": SPOOF}).json()
    assert seen["client"] == [expected, 0]


def test_forwarding_headers_from_an_untrusted_client_are_ignored(shared: list[Backend]) -> None:
    backend = shared[0]
    headers = {"X-Forwarded-For": SPOOF, "X-Forwarded-Proto": "https", "Forwarded": "for=6.6.6.6"}
    seen = get(backend.port, source="127.0.0.2", headers=headers).json()
    assert seen["client"][0] == "127.0.0.2" and seen["scheme"] == "http"


@needs("nginx")
def test_nginx_reuses_its_keep_alive_connections_to_the_backends(
    deploy: Deployment, certificate: Certificate
) -> None:
    # Without --proxy-headers the app sees the socket's peer: nginx's own
    # address and port, one port per upstream connection.
    backends = deploy.aserves(2)
    port = nginx_front(deploy, backends, certificate)["HTTP_LISTEN"]
    # Every client request on a connection of its own: only nginx keeps any open.
    replies = burst(port, clients=4, each=50, headers={"Connection": "close"})

    peers = {(reply.json()["pid"], tuple(reply.json()["client"])) for _, reply in replies}
    assert {host for _, (host, _) in peers} == {"127.0.0.1"}
    assert {pid for pid, _ in peers} == {backend.process.pid for backend in backends}
    assert len(peers) <= 16, f"{len(peers)} upstream connections for {len(replies)} requests"


@needs("nginx")
@pytest.mark.timeout(45)
def test_a_backend_stopped_under_load_loses_no_request(
    deploy: Deployment, certificate: Certificate
) -> None:
    first, second = deploy.aserves(2, "--proxy-headers", "--graceful-timeout", "5")
    port = nginx_front(deploy, [first, second], certificate)["HTTP_LISTEN"]

    with Load(port, clients=4, path="/slow") as load, ThreadPoolExecutor(1) as pool:
        wait_for(lambda: len(load.pids()) == 2 and len(load.replies) >= 60, "load on both")
        # One long request straight to the backend that stops: in flight at the stop.
        started = deploy.folder / "started"
        target = f"/slow?s=0.5&started={urllib.parse.quote(str(started))}"
        long = pool.submit(get, second.port, target, source="127.0.0.1")
        wait_for(lambda: started.exists() or long.done(), "the long request")
        second.process.popen.send_signal(signal.SIGTERM)
        returncode = second.process.popen.wait(STOP_TIMEOUT)
        stopped_at = len(load.replies)
        wait_for(lambda: len(load.replies) >= stopped_at + 150, "load after the stop")

    assert load.failures == []
    assert returncode == 0, second.process.output()
    assert long.result().json()["pid"] == second.process.pid
    assert load.pids(load.replies[-100:]) == Counter({first.process.pid: 100})
    assert aserve_problems(second.process.log()) == []


@needs("nginx")
@pytest.mark.parametrize("proxy_pass", ["http://aserve_api/api/", "http://aserve_api/"])
def test_root_path_behind_nginx_builds_urls_under_the_prefix(
    deploy: Deployment, proxy_pass: str
) -> None:
    backend = deploy.aserve("--root-path", "/api", "--proxy-headers", target="deploy_asgi:app")
    text = template("nginx-root-path.conf", {"http://aserve_api/api/;": f"{proxy_pass};"})
    port = deploy.nginx(text, BACKEND_1=backend.address)["HTTP_LISTEN"]

    seen = get(port, "/api/items/3").json()
    assert seen == {
        "url": f"http://127.0.0.1:{port}/api/items/3",
        "root_path": "/api",
        "path": "/api/items/3",
    }
    redirect = get(port, "/api/go")
    assert redirect.status == 307
    assert redirect.headers["location"] == f"http://127.0.0.1:{port}/api/items/1"


@needs("nginx")
def test_nginx_to_aserve_over_a_unix_socket(deploy: Deployment) -> None:
    path = deploy.folder / "aserve.sock"
    backend = deploy.aserve("--uds", str(path), "--proxy-headers")
    assert backend.where == f"http+unix://{path}"
    port = deploy.nginx(template("nginx-unix-socket.conf"), SOCKET=str(path))["HTTP_LISTEN"]

    replies = burst(port, clients=2, each=20, headers={"X-Forwarded-For": SPOOF})
    for source, reply in replies:
        seen = reply.json()
        assert seen["client"] == [source, 0] and seen["scheme"] == "http", seen
    assert deploy.stop(backend.process) == 0
    assert not path.exists()


def test_socket_activation_through_fd_3(deploy: Deployment) -> None:
    socket_unit = template("aserve.socket")
    [listen] = re.findall(r"^ListenStream=(.*)$", socket_unit, re.MULTILINE)
    service = fill(template("aserve.service"), {"APP_DIR": str(deploy.app_dir), "ASERVE": "@"})
    [command] = re.findall(r"^ExecStart=(.*)$", service, re.MULTILINE)
    argv = shlex.split(command)
    assert argv[0] == "@" and argv[argv.index("--fd") + 1] == "3"
    argv = [sys.executable, "-m", "aserve"] + argv[1:]
    (deploy.app_dir / "app.py").write_text(APP)
    launcher = deploy.folder / "launcher.py"
    launcher.write_text(LAUNCHER)

    process = deploy.start(
        "activated", [sys.executable, str(launcher), fill(listen, {"LISTEN": "127.0.0.1:0"})] + argv
    )
    first_line = wait_for(lambda: re.match(r"(\d+)\n", process.out()), "the port", watch=process)
    port = int(first_line[1])
    # Asked at once, maybe before aserve has imported anything: the request
    # waits in the socket's backlog, as it does under systemd.
    seen = get(port, source="127.0.0.2").json()
    assert seen["pid"] == process.pid  # the launcher became aserve
    assert seen["client"][0] == "127.0.0.2"
    ready = READY.search(process.out())
    assert ready is not None and ready["where"] == f"http://127.0.0.1:{port}"
    assert deploy.stop(process) == 0
    assert aserve_problems(process.log()) == []


# --------------------------------------------------------------------------- HAProxy


def health_checks(backend: Backend) -> int:
    return backend.process.log().count('"GET /health HTTP/1.1" 200')


@needs("haproxy")
@pytest.mark.parametrize("send_proxy", ["send-proxy-v2", "send-proxy"])
def test_haproxy_passes_the_client_in_the_proxy_protocol(
    deploy: Deployment, send_proxy: str
) -> None:
    backend = deploy.aserve("--proxy-protocol", "--access-log")
    replace = {"send-proxy-v2": send_proxy, "inter 2s": "inter 100ms"}
    text = template("haproxy-proxy-protocol.cfg", replace)
    port = deploy.haproxy(text, BACKEND_1=backend.address)["LISTEN"]

    for source in ("127.0.0.2", "127.0.0.3"):
        client = Client(port, source=source)
        try:
            for _ in range(3):
                seen = client.get("/").json()
                assert seen["client"] == [source, client.port]  # the PROXY header has both
                assert seen["pid"] == backend.process.pid
        finally:
            client.close()
    # Health checks (LOCAL / UNKNOWN headers, from HAProxy itself) are served
    # quietly: an access line each, nothing else.
    wait_for(lambda: health_checks(backend) >= 3, "three health checks", watch=backend.process)
    assert aserve_problems(backend.process.log()) == []
    assert problems(deploy.proxy_log("haproxy")) == []


@needs("haproxy")
def test_haproxy_http_mode_passes_the_client_in_x_forwarded_for(deploy: Deployment) -> None:
    backend = deploy.aserve("--proxy-headers", "--access-log")
    text = template("haproxy-http.cfg", {"inter 2s": "inter 100ms"})
    port = deploy.haproxy(text, BACKEND_1=backend.address)["LISTEN"]

    headers = {"X-Forwarded-For": SPOOF, "X-Forwarded-Proto": "https"}
    for source in ("127.0.0.2", "127.0.0.1"):
        seen = get(port, source=source, headers=headers).json()
        assert seen["client"] == [source, 0] and seen["scheme"] == "http", seen
        assert seen["host"] == f"127.0.0.1:{port}"
    wait_for(lambda: health_checks(backend) >= 3, "three health checks", watch=backend.process)
    assert aserve_problems(backend.process.log()) == []
    assert problems(deploy.proxy_log("haproxy")) == []
