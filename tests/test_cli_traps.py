"""The first hour with the command: options that do not go together are
refused with one line (exit 2) instead of being ignored, habits from
http.server get a hint, a busy port is one line, and the directory server's
own options (hidden files, single-page apps, error pages, Cache-Control, Basic
auth, CORS) work through the real command."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Start, environment, run_aserve

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

MODULE = textwrap.dedent(
    """
    import aserve

    async def handler(request):
        return aserve.PlainTextResponse("native")

    def sync_handler(request):
        return aserve.PlainTextResponse("sync")

    async def asgi_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi"})

    def wsgi_app(environ, start_response):
        start_response("200 OK", [])
        return [b"wsgi"]
    """
)


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    folder = tmp_path / "apps"
    folder.mkdir()
    (folder / "mod.py").write_text(MODULE)
    return folder


def one_error_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("aserve: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("mod:handler", "-d", "public"), ("-d/--directory", "mod:handler")),
        (("mod:handler", "--spa"), ("--spa",)),
        (("mod:handler", "--show-hidden"), ("--show-hidden",)),
        (("--port", "8080", "--uds", "/tmp/aserve-x.sock"), ("--port", "--uds")),
        (("--host", "0.0.0.0", "--fd", "3"), ("--host", "--fd")),
        (("--factory",), ("--factory", "no TARGET")),
        (("--interface", "wsgi"), ("--interface", "no TARGET")),
        (("mod:handler", "--lifespan", "on"), ("--lifespan", "ASGI")),
        (("mod:asgi_app", "--interface", "wsgi"), ("--interface wsgi", "ASGI 3")),
        (("mod:wsgi_app", "--interface", "asgi"), ("--interface asgi", "WSGI")),
        (("mod:handler", "--interface", "wsgi"), ("--interface wsgi", "handler")),
        (("mod:handler", "--factory"), ("--factory", "(request)", "drop --factory")),
        (("mod:asgi_app", "--threads", "4"), ("--threads", "WSGI")),
        (("8080",), ("did you mean --port 8080?",)),
        (("apps",), ("did you mean -d apps?",)),
        (("--spa", "--fallback", "x.html"), ("--spa",)),
        (("--auth", "nocolon"), ("USER:PASSWORD",)),
        (("--cache-control", "max-age=1h"), ("max-age",)),
        (("--error-page", "404=missing.html"), ("missing.html",)),
        (("--keep-alive-timeout", "nan"), ("keep_alive_timeout",)),
        (("--max-connections", "0"), ("max_connections",)),
        (("--status-path", "status"), ("status_path", "/status")),
        (("--metrics-port", "-1"), ("metrics_port",)),
        (("--access-log-format", "{nope}"), ("access_log_format", "nope")),
    ],
)
def test_refused_with_one_line(apps: Path, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    result = run_aserve(*args, "--app-dir", str(apps), cwd=apps.parent)
    one_error_line(result, *words)


def test_empty_host_from_the_environment_is_refused(apps: Path) -> None:
    result = run_aserve("--port", "0", cwd=apps, env={"ASERVE_HOST": ""})
    one_error_line(result, "host")


def test_forced_interface_where_detection_may_be_wrong_is_allowed(apps: Path, start: Start) -> None:
    # A plain one-argument function is a handler or an ASGI 2 app: forcing decides.
    running = start("mod:sync_handler", "--interface", "native", "--port", "0", cwd=apps)
    assert running.body("/") == b"sync"
    assert running.match.group("what") == "mod:sync_handler (native)"
    assert running.stop()[0] == 0


def test_a_busy_port_is_one_line_from_the_command_and_from_run(apps: Path, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_aserve("--port", str(port), cwd=apps)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1
        assert lines == [
            f"aserve: error: cannot listen on 127.0.0.1:{port}: address already in use"
        ]
        script = tmp_path / "hello.py"
        script.write_text(
            "import aserve\n"
            "async def hello(request):\n"
            "    return aserve.PlainTextResponse('hi')\n"
            f"aserve.run(hello, port={port})\n"
        )
        program = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=20,
            env=environment(),
        )
        assert program.returncode == 1
        assert program.stderr.strip().splitlines() == lines, program.stderr


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "config").write_text("[core]")
    (folder / ".env").write_text("SECRET=1")
    (folder / "index.html").write_text("<div id=app></div>")
    (folder / "404.html").write_text("<h1>lost</h1>")
    (folder / "app.0a1b2c3d.js").write_text("app()")
    (folder / "notes.txt").write_text("notes")
    (folder / "docs").mkdir()
    (folder / "docs" / "readme.txt").write_text("read me")
    (folder / "docs" / ".secret").write_text("no")
    return folder


def test_hidden_files_are_not_served_by_default_and_are_with_show_hidden(
    site: Path, start: Start
) -> None:
    running = start("-d", str(site), "--port", "0")
    for path in ("/.git/config", "/.env", "/%2egit/config", "/%2Eenv"):
        assert running.get(path).status == 404, path
    assert running.get("/docs/.secret").status == 404
    listing = running.body("/docs/")
    assert b".secret" not in listing and b"readme.txt" in listing
    running.stop()
    running = start("-d", str(site), "--port", "0", "--show-hidden")
    assert running.body("/.git/config") == b"[core]"
    running.stop()


def test_spa_error_pages_and_cache_control_through_the_command(site: Path, start: Start) -> None:
    running = start(
        "-d",
        str(site),
        "--port",
        "0",
        "--spa",
        "--error-page",
        "404=404.html",
        "--cache-control",
        "public, max-age=60",
        "--cache-control",
        "*.html: no-cache",
    )
    route = running.get("/settings/profile", headers={"Accept": "text/html"})
    assert route.status == 200
    missing = running.get("/assets/missing.js")
    assert missing.status == 404
    assert running.body("/assets/missing.js") == b"<h1>lost</h1>"
    assert running.get("/notes.txt").getheader("cache-control") == "public, max-age=60"
    assert running.get("/index.html").getheader("cache-control") == "no-cache"
    assert "immutable" in (running.get("/app.0a1b2c3d.js").getheader("cache-control") or "")
    running.stop()


def test_basic_auth_and_cors_through_the_command(site: Path, start: Start, tmp_path: Path) -> None:
    running = start(
        "-d", str(site), "--port", "0", "--auth", "ann:pw", "--cors", "https://app.example"
    )
    assert "(password protected)" in running.match.group("what")
    assert running.get("/notes.txt").status == 401
    token = base64.b64encode(b"ann:pw").decode()
    good = running.get(
        "/notes.txt", headers={"Authorization": f"Basic {token}", "Origin": "https://app.example"}
    )
    assert good.status == 200
    assert good.getheader("access-control-allow-origin") == "https://app.example"
    running.stop()

    made = subprocess.run(
        [sys.executable, "-m", "aserve", "--hash-password", "bob"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        timeout=30,
        env=environment(),
    )
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith("bob:scrypt$")
    users = tmp_path / "users"
    users.write_text(line + "\n")
    running = start("-d", str(site), "--port", "0", "--auth-file", str(users))
    token = base64.b64encode(b"bob:s3cret").decode()
    assert running.get("/notes.txt", headers={"Authorization": f"Basic {token}"}).status == 200
    wrong = base64.b64encode(b"bob:nope").decode()
    assert running.get("/notes.txt", headers={"Authorization": f"Basic {wrong}"}).status == 401
    running.stop()


def test_metrics_and_a_json_access_log_through_the_command(site: Path, start: Start) -> None:
    running = start(
        "-d",
        str(site),
        "--port",
        "0",
        "--metrics-path",
        "/metrics",
        "--access-log",
        "--access-log-format",
        "json",
    )
    assert running.get("/notes.txt").status == 200
    metrics = running.body("/metrics").decode()
    assert 'aserve_requests_total{method="GET",status="2xx"} 1' in metrics
    status, stderr = running.stop()
    assert status == 0
    lines = [line for line in stderr.splitlines() if " aserve.access: " in line]
    assert len(lines) == 2 and '"path":"/notes.txt"' in lines[0]
