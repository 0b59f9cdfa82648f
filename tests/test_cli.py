"""The `aserve` command, run for real in a subprocess: start, request, signal, exit status.

Every wait is bounded: a server that does not print its start line within
`START_TIMEOUT`, or does not exit within `EXIT_TIMEOUT` of a signal, fails the
test (and is killed).
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import (
    Start,
    run_aserve,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

APP_MODULE = textwrap.dedent(
    """
    import asyncio
    import aserve

    async def hello(request):
        return aserve.PlainTextResponse("hello from myapp")

    async def slow(request):
        await asyncio.sleep(60)
        return aserve.PlainTextResponse("late")

    def create():
        async def made(request):
            return aserve.PlainTextResponse("made by a factory")
        return made

    async def raw_asgi(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello from asgi"})

    def wsgi_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello from wsgi"]

    not_callable = 42

    inner = aserve.App()
    outer = aserve.App()

    @inner.get("/boom")
    async def inner_boom(request):
        raise RuntimeError("the mounted view failed")

    @outer.get("/boom")
    async def outer_boom(request):
        raise RuntimeError("the view failed")

    outer.mount("/inner", inner)
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "apps"
    folder.mkdir()
    (folder / "myapp.py").write_text(APP_MODULE)
    (folder / "broken.py").write_text("import os\nraise RuntimeError('the app is broken')\n")
    return folder


# --------------------------------------------------------------------------- serving


def test_serves_the_current_directory_by_default(tmp_path: Path, start: Start) -> None:
    (tmp_path / "hello.txt").write_text("hello, folder\n")
    server = start("--port", "0")
    assert server.match.group("what") == f"directory {tmp_path.resolve()}"
    assert server.match.group("version") == importlib.import_module("aserve").__version__
    assert server.body("/hello.txt") == b"hello, folder\n"
    listing = server.body("/")
    assert b'<a href="hello.txt">hello.txt</a>' in listing
    status, stderr = server.stop()
    assert status == 0, stderr
    assert "Traceback" not in stderr


def test_serves_another_directory(tmp_path: Path, start: Start) -> None:
    public = tmp_path / "public"
    public.mkdir()
    (public / "index.html").write_text("<p>home</p>")
    server = start("-d", str(public), "--port", "0")
    assert server.body("/") == b"<p>home</p>"
    assert server.stop()[0] == 0


def test_serves_a_module_app(app_dir: Path, start: Start) -> None:
    server = start("myapp:hello", "--app-dir", str(app_dir), "--port", "0")
    assert server.match.group("what") == "myapp:hello (native)"
    assert server.body("/") == b"hello from myapp"
    assert server.stop()[0] == 0


@pytest.mark.parametrize("args", [("myapp:create", "--factory"), ("myapp:create()",)])
def test_factory(app_dir: Path, start: Start, args: tuple[str, ...]) -> None:
    server = start(*args, "--port", "0", cwd=app_dir)
    assert server.body("/") == b"made by a factory"
    assert server.stop()[0] == 0


@pytest.mark.skipif(importlib.util.find_spec("aserve.asgi") is None, reason="no ASGI adapter")
def test_serves_an_asgi_app(app_dir: Path, start: Start) -> None:
    server = start("myapp:raw_asgi", "--app-dir", str(app_dir), "--port", "0")
    assert server.match.group("what") == "myapp:raw_asgi (asgi3)"
    assert server.body("/") == b"hello from asgi"
    assert server.stop()[0] == 0


@pytest.mark.skipif(importlib.util.find_spec("aserve.wsgi") is None, reason="no WSGI adapter")
def test_serves_a_wsgi_app(app_dir: Path, start: Start) -> None:
    server = start("myapp:wsgi_app", "--app-dir", str(app_dir), "--port", "0")
    assert server.match.group("what") == "myapp:wsgi_app (wsgi)"
    assert server.body("/") == b"hello from wsgi"
    assert server.stop()[0] == 0


def test_unix_socket(tmp_path: Path, start: Start) -> None:
    (tmp_path / "hello.txt").write_text("over a unix socket")
    path = tmp_path / "s.sock"
    server = start("--uds", str(path))
    assert server.match.group("path") == str(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"over a unix socket")
    assert server.stop()[0] == 0
    assert not path.exists()  # a clean exit removes the socket file


def test_deadline_options_reach_the_server(app_dir: Path, start: Start) -> None:
    server = start("myapp:slow", "--port", "0", "--handler-timeout", "0.3", cwd=app_dir)
    response = server.get("/")
    assert response.status == 504
    assert server.stop()[0] == 0


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "no-debug"])
def test_debug_option_reaches_an_app_and_its_mounts(
    app_dir: Path, start: Start, debug: bool
) -> None:
    server = start("myapp:outer", "--port", "0", *(["--debug"] if debug else []), cwd=app_dir)
    for path, message in [("/boom", b"the view failed"), ("/inner/boom", b"mounted view failed")]:
        body = server.body(path)
        assert body.startswith(b"Internal Server Error")
        assert (b"Traceback" in body and message in body) is debug, body
    status, stderr = server.stop()
    assert status == 0, stderr


def test_sigterm_also_stops_cleanly(tmp_path: Path, start: Start) -> None:
    server = start("--port", "0")
    assert server.stop(signal.SIGTERM)[0] == 0


def test_second_signal_forces_the_shutdown(app_dir: Path, start: Start) -> None:
    server = start("myapp:slow", "--app-dir", str(app_dir), "--port", "0")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # let the request reach the handler; nothing to await across processes
        server.proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            server.proc.wait(timeout=1.0)  # still busy: the graceful timeout is 30 s
        status, stderr = server.stop(signal.SIGINT)
    assert status == 0, stderr
    assert "Traceback" not in stderr


def test_access_log(tmp_path: Path, start: Start) -> None:
    (tmp_path / "a.txt").write_text("a")
    server = start("--port", "0", "--access-log")
    assert server.get("/a.txt").status == 200
    status, stderr = server.stop()
    assert status == 0
    assert '"GET /a.txt HTTP/1.1" 200' in stderr


# --------------------------------------------------------------------------- settings


def test_environment_gives_settings(tmp_path: Path, start: Start) -> None:
    env = {"ASERVE_PORT": "0", "ASERVE_SERVER_HEADER": "from-env"}
    server = start(env=env)
    assert server.get("/").getheader("server") == "from-env"
    assert server.stop()[0] == 0


def test_command_line_beats_environment(tmp_path: Path, start: Start) -> None:
    env = {"ASERVE_PORT": "1", "ASERVE_SERVER_HEADER": "from-env", "ASERVE_DATE_HEADER": "off"}
    server = start("--port", "0", "--server-header", "from-cli", env=env)
    response = server.get("/")
    assert response.getheader("server") == "from-cli"
    assert response.getheader("date") is None
    assert server.stop()[0] == 0


def test_version_and_help(tmp_path: Path) -> None:
    version = run_aserve("--version", cwd=tmp_path)
    assert (version.returncode, version.stdout.strip()) == (0, "aserve 0.1.0")
    helped = run_aserve("--help", cwd=tmp_path)
    assert helped.returncode == 0
    for option in ("--directory", "--keep-alive-timeout", "--access-log", "--interface", "--uds"):
        assert option in helped.stdout
    assert "ASERVE_" in helped.stdout


BAD: list[tuple[list[str], dict[str, str], str]] = [
    (["--port", "abc"], {}, "expected an integer, got 'abc'"),
    (["--port", "99999"], {}, "port must be between 0 and 65535"),
    (["--keep-alive-timeout", "-1"], {}, "keep_alive_timeout must be a finite number of seconds"),
    (["--handler-timeout", "nan"], {}, "handler_timeout must be a finite number of seconds"),
    (["--header-timeout", "inf"], {}, "header_timeout must be a finite number of seconds"),
    (["--keep-alive-timeout", "nan"], {}, "keep_alive_timeout must be a finite number of seconds"),
    (["--max-connections", "0"], {}, "max_connections must be at least 1"),
    ([], {"ASERVE_HOST": ""}, "host must not be empty"),
    (["--host", " "], {}, "host must not be empty"),
    (["--max-concurrency", "0"], {}, "max_concurrency must be at least 1"),
    (["--max-head-size", "10"], {}, "max_head_size must be at least 256"),
    (["--loop", "bogus"], {}, "invalid choice: 'bogus'"),
    (["--bogus"], {}, "unrecognized arguments: --bogus"),
    (["--uds", "x.sock", "--fd", "3"], {}, "uds and fd cannot both be given"),
    ([], {"ASERVE_PORT": "abc"}, "ASERVE_PORT: expected an integer, got 'abc'"),
    ([], {"ASERVE_DEBUG": "maybe"}, "ASERVE_DEBUG: expected 1/0, true/false"),
    ([], {"ASERVE_LOOP": "bogus"}, "ASERVE_LOOP: expected one of auto, uvloop, asyncio"),
    (["-d", "/nonexistent/folder"], {}, "not a directory: '/nonexistent/folder'"),
    (["nope:app"], {}, "cannot import 'nope': no module named 'nope'"),
    (["not-a-target"], {}, "TARGET must look like module:attribute"),
    (["myapp:missing"], {}, "module 'myapp' has no attribute 'missing'"),
    (["myapp:not_callable"], {}, "not callable"),
    (["myapp:not_callable", "--factory"], {}, "not callable, so it cannot be a factory"),
    (["myapp:hello", "--app-dir", "/nonexistent"], {}, "--app-dir '/nonexistent' is not a dir"),
    (["--threads", "0"], {}, "must be between 1 and 1024, not 0"),
    ([], {"ASERVE_THREADS": "many"}, "ASERVE_THREADS: expected a whole number, got 'many'"),
]


@pytest.mark.parametrize(("args", "env", "message"), BAD)
def test_bad_values_give_one_line_and_status_2(
    app_dir: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_aserve(*args, cwd=app_dir, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aserve: error: ")
    assert message in lines[0]
    assert result.stdout == ""


def test_port_in_use_is_one_line_and_status_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_aserve("--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"aserve: error: cannot listen on 127.0.0.1:{port}"
    )


def test_an_app_that_fails_to_import_shows_its_traceback(app_dir: Path) -> None:
    result = run_aserve("broken:app", cwd=app_dir)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "RuntimeError: the app is broken" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("aserve: error: loading broken:app")


def test_unknown_environment_settings_are_warned_about(tmp_path: Path, start: Start) -> None:
    server = start("--port", "0", env={"ASERVE_PROT": "1"})
    status, stderr = server.stop()
    assert status == 0
    assert "aserve: warning: ignoring unknown setting ASERVE_PROT" in stderr
