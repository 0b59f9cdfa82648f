"""CGI/1.1 scripts, a Python one and shell ones, run for real behind a real socket."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path

import h11
import pytest
from conftest import READ_TIMEOUT, ConnectFactory, ServeFactory, Start, run_aserve

import aserve
from aserve.cgi import CGIError, CGIHandler, CGIResponseParser, find_script

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX scripts")

ENV_SCRIPT = f"""#!{sys.executable}
import json, os, sys
length = int(os.environ.get("CONTENT_LENGTH") or 0)
body = sys.stdin.buffer.read(length) if length else b""
print("Content-Type: application/json")
print("X-Script: python")
print()
print(json.dumps({{"env": dict(os.environ), "body": body.decode("latin-1"),
                  "argv": sys.argv[1:], "cwd": os.getcwd()}}))
"""

ECHO_SCRIPT = f"""#!{sys.executable}
import os, sys
sys.stdout.buffer.write(b"Content-Type: application/octet-stream\\r\\n\\r\\n")
while chunk := sys.stdin.buffer.read(65536):
    sys.stdout.buffer.write(chunk)
"""

SCRIPTS = {
    "env.py": ENV_SCRIPT,
    "echo.py": ECHO_SCRIPT,
    "hello.sh": """#!/bin/sh
printf 'Status: 201 Created\\r\\nContent-Type: text/plain\\r\\nX-Shell: yes\\r\\n\\r\\n'
echo "hello $QUERY_STRING from $PATH_INFO"
echo "a line for the log" >&2
""",
    "local.sh": """#!/bin/sh
printf 'Location: /cgi-bin/hello.sh/again?from=local\\n\\n'
""",
    "away.sh": """#!/bin/sh
printf 'Location: https://example.com/elsewhere\\n\\n'
""",
    "page.sh": """#!/bin/sh
printf 'Location: /static.txt\\n\\n'
""",
    "loop.sh": """#!/bin/sh
printf 'Location: /cgi-bin/loop.sh\\n\\n'
""",
    "fail.sh": """#!/bin/sh
echo "something went wrong" >&2
exit 3
""",
    "garbage.sh": """#!/bin/sh
echo "not a header line"
echo
""",
    "hang.sh": """#!/bin/sh
echo $$ > "$PIDFILE"
sleep 30
""",
    "forever.sh": """#!/bin/sh
echo $$ > "$PIDFILE"
printf 'Content-Type: text/plain\\n\\n'
while :; do echo "tick tick tick tick tick tick tick tick tick tick tick tick"; done
""",
    "wait.sh": """#!/bin/sh
printf 'Content-Type: text/plain\\n\\n'
while [ ! -e "$FLAG" ]; do sleep 0.02; done
echo released
""",
    "nothing.sh": """#!/bin/sh
printf 'Status: 304 Not Modified\\nETag: "v1"\\n\\nthis body must not go out\\n'
""",
    "pwn.sh": """#!/bin/sh
touch "$MARKER"
printf 'Content-Type: text/plain\\n\\nran\\n'
""",
}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    scripts = folder / "cgi-bin"
    (scripts / "deeper").mkdir(parents=True)
    for name, text in SCRIPTS.items():
        path = scripts / name
        path.write_text(text)
        path.chmod(0o755)
    (scripts / "deeper" / "inner.sh").write_text(SCRIPTS["hello.sh"])
    (scripts / "deeper" / "inner.sh").chmod(0o755)
    (scripts / "notexec.sh").write_text(SCRIPTS["pwn.sh"])
    (scripts / ".hidden.sh").write_text(SCRIPTS["pwn.sh"])
    (scripts / ".hidden.sh").chmod(0o755)
    (folder / "outside.sh").write_text(SCRIPTS["pwn.sh"])
    (folder / "outside.sh").chmod(0o755)
    (scripts / "link.sh").symlink_to(folder / "outside.sh")
    (folder / "static.txt").write_text("a static page\n")
    return folder


def make_app(site: Path, **options: object) -> aserve.App:
    app = aserve.App()
    env = {
        "PIDFILE": str(site / "pid"),
        "FLAG": str(site / "flag"),
        "MARKER": str(site / "ran"),
    }
    app.mount("/cgi-bin", CGIHandler(site / "cgi-bin", env=env, **options))  # type: ignore[arg-type]

    @app.get("/static.txt")
    async def static(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse((site / "static.txt").read_text())

    return app


def get(target: str, headers: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: test.example:8080\r\n{headers}\r\n".encode()


# --------------------------------------------------------------------------- requests


async def test_get_with_a_query_and_path_info(
    serve: ServeFactory, connect: ConnectFactory, site: Path
) -> None:
    async with serve(make_app(site)) as server:
        port = server.port
        client = await connect(port)
        await client.send(
            get(
                "/cgi-bin/env.py/extra/p%20ath?name=ann&x=%41",
                "X-Custom: one\r\nX-Custom: two\r\nX_Under: spoof\r\nProxy: http://evil\r\n"
                "Authorization: Basic c2VjcmV0\r\nCookie: a=1\r\nCookie: b=2\r\n",
            )
        )
        reply = await client.response()
    assert reply.status == 200
    assert reply.header("x-script") == "python"
    assert reply.header("content-type") == "application/json"
    seen = json.loads(reply.body)
    env = seen["env"]
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["QUERY_STRING"] == "name=ann&x=%41"
    assert env["PATH_INFO"] == "/extra/p ath"
    assert env["SCRIPT_NAME"] == "/cgi-bin/env.py"
    assert env["SCRIPT_FILENAME"] == str((site / "cgi-bin" / "env.py").resolve())
    assert env["REQUEST_URI"] == "/cgi-bin/env.py/extra/p%20ath?name=ann&x=%41"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("test.example", "8080")
    assert env["SERVER_SOFTWARE"].startswith("aserve/")
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client.client_port)
    assert env["HTTP_HOST"] == "test.example:8080"
    assert env["HTTP_X_CUSTOM"] == "one, two"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["PIDFILE"] == str(site / "pid")  # env= reaches the script
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    # Never: an underscore twin, the httpoxy variable, credentials, the server's own env.
    assert env.get("HTTP_X_UNDER") is None
    assert "HTTP_PROXY" not in env
    assert "HTTP_AUTHORIZATION" not in env
    assert not {name for name in env if name.startswith("PYTEST")}
    assert seen["argv"] == []  # a query is never a command line
    assert seen["cwd"] == str((site / "cgi-bin").resolve())


async def test_post_body_is_streamed_to_stdin(
    serve: ServeFactory, connect: ConnectFactory, site: Path
) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    async with serve(make_app(site), max_body_size=None) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /cgi-bin/env.py HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 11\r\n\r\nhello world"
        )
        small = await client.response()
        await client.send(
            b"POST /cgi-bin/env.py HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nchunk\r\n3\r\ned!\r\n0\r\n\r\n"
        )
        chunked = await client.response()
        # The script answers while the upload is still coming: both stream at once.
        # (The engine closes after such an answer: the rest of a large body is
        # not worth draining for keep-alive.)
        await client.send(
            b"POST /cgi-bin/echo.py HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
            % len(payload)
        )
        sender = asyncio.create_task(client.send(payload))
        large = await client.response(timeout=20)
        await sender
    env = json.loads(small.body)

    assert env["body"] == "hello world"
    assert env["env"]["CONTENT_LENGTH"] == "11"
    assert env["env"]["CONTENT_TYPE"] == "text/plain"
    assert env["env"]["REQUEST_METHOD"] == "POST"
    assert large.body == payload
    seen = json.loads(chunked.body)
    assert (seen["body"], seen["env"]["CONTENT_LENGTH"]) == ("chunked!", "8")


async def test_a_shell_script_sets_status_and_fields(
    serve: ServeFactory, connect: ConnectFactory, site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(make_app(site)) as server:
        client = await connect(server.port)
        await client.send(get("/cgi-bin/hello.sh/pi?q=1"))
        reply = await client.response()
        await client.send(get("/cgi-bin/deeper/inner.sh"))
        inner = await client.response()
        await client.send(get("/cgi-bin/nothing.sh"))
        unchanged = await client.response()
    assert reply.status == 201
    assert reply.header("x-shell") == "yes"
    assert reply.header("content-type") == "text/plain"
    assert reply.body == b"hello q=1 from /pi\n"
    assert inner.body == b"hello  from \n"
    assert (unchanged.status, unchanged.body) == (304, b"")
    assert unchanged.header("etag") == '"v1"'
    assert any("a line for the log" in r.getMessage() for r in caplog.records)


async def test_redirects(serve: ServeFactory, connect: ConnectFactory, site: Path) -> None:
    async with serve(make_app(site)) as server:
        client = await connect(server.port)
        await client.send(get("/cgi-bin/local.sh"))
        local = await client.response()
        await client.send(get("/cgi-bin/page.sh"))
        page = await client.response()
        await client.send(get("/cgi-bin/away.sh"))
        away = await client.response()
        await client.send(get("/cgi-bin/loop.sh"))
        loop = await client.response()
    # A local redirect is served here, as a GET of the new URL.
    assert (local.status, local.body) == (201, b"hello from=local from /again\n")
    assert local.header("location") is None
    assert page.body == b"a static page\n"  # outside the scripts: by the App
    assert away.status == 302
    assert away.header("location") == "https://example.com/elsewhere"
    assert loop.status == 500


# --------------------------------------------------------------------------- failures


async def test_a_failing_script_is_a_500_with_its_stderr_logged(
    serve: ServeFactory, connect: ConnectFactory, site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(make_app(site)) as server:
        client = await connect(server.port)
        await client.send(get("/cgi-bin/fail.sh"))
        failed = await client.response()
        await client.send(get("/cgi-bin/garbage.sh"))
        garbage = await client.response()
        await client.send(get("/cgi-bin/hello.sh"))
        after = await client.response()
    assert failed.status == 500
    assert b"something went wrong" not in failed.body
    assert garbage.status == 500
    assert after.status == 201
    messages = [r.getMessage() for r in caplog.records]
    assert any("something went wrong" in m for m in messages)
    assert any("exit status 3" in m for m in messages)
    assert any("malformed header line" in m for m in messages)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _gone(pid: int) -> bool:
    async with asyncio.timeout(READ_TIMEOUT):
        while _alive(pid):
            await asyncio.sleep(0.02)
    return True


async def test_a_hanging_script_is_killed_and_gets_504(
    serve: ServeFactory, connect: ConnectFactory, site: Path
) -> None:
    async with serve(make_app(site, timeout=0.5)) as server:
        client = await connect(server.port)
        await client.send(get("/cgi-bin/hang.sh"))
        reply = await client.response()
        pid = int((site / "pid").read_text())
        assert await _gone(pid)  # the shell, and its sleep with it (the process group)
        await client.send(get("/cgi-bin/hello.sh"))
        after = await client.response()
    assert reply.status == 504
    assert after.status == 201


async def test_a_client_that_leaves_gets_its_script_killed(
    serve: ServeFactory, connect: ConnectFactory, site: Path
) -> None:
    handler = CGIHandler(site / "cgi-bin", env={"PIDFILE": str(site / "pid")})
    app = aserve.App()
    app.mount("/cgi-bin", handler)
    async with serve(app) as server:
        client = await connect(server.port, rcvbuf=16384)
        await client.send(get("/cgi-bin/forever.sh"))
        event = await client.next_event()
        assert event.status_code == 200
        pid = int((site / "pid").read_text())
        assert _alive(pid)
        await client.close()
        assert await _gone(pid)
        async with asyncio.timeout(READ_TIMEOUT):
            while handler.running:
                await asyncio.sleep(0.02)


async def test_past_max_processes_is_503(
    serve: ServeFactory, connect: ConnectFactory, site: Path
) -> None:
    async with serve(make_app(site, max_processes=1)) as server:
        first = await connect(server.port)
        await first.send(get("/cgi-bin/wait.sh"))
        head = await first.next_event()  # running, and holding the only place
        assert head.status_code == 200
        second = await connect(server.port)
        await second.send(get("/cgi-bin/hello.sh"))
        refused = await second.response()
        (site / "flag").touch()
        rest = b""
        while not isinstance(event := await first.next_event(), h11.EndOfMessage):
            rest += bytes(event.data)
        await second.send(get("/cgi-bin/hello.sh"))
        later = await second.response()
    assert refused.status == 503
    assert refused.header("retry-after") == "1"
    assert rest == b"released\n"
    assert later.status == 201


# --------------------------------------------------------------------------- what never runs


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/cgi-bin/../outside.sh", 404),
        ("/cgi-bin/%2e%2e/outside.sh", 404),
        ("/cgi-bin/deeper/%2e%2e/%2e%2e/outside.sh", 404),
        ("/cgi-bin/..%2foutside.sh", 404),
        ("/cgi-bin/..%5coutside.sh", 404),
        ("/cgi-bin/deeper%2f..%2f..%2foutside.sh", 404),
        ("/cgi-bin/.hidden.sh", 404),
        ("/cgi-bin/link.sh", 404),
        ("/cgi-bin//pwn.sh", 404),
        ("/cgi-bin/pwn.sh%00.txt", 404),
        ("/cgi-bin/notexec.sh", 403),
        ("/cgi-bin/deeper", 403),
        ("/cgi-bin/deeper/", 403),
        ("/cgi-bin", 403),
        ("/cgi-bin/missing.sh", 404),
    ],
)
async def test_nothing_outside_the_folder_or_not_executable_runs(
    serve: ServeFactory, connect: ConnectFactory, site: Path, target: str, status: int
) -> None:
    async with serve(make_app(site)) as server:
        client = await connect(server.port)
        await client.send(get(target))
        reply = await client.response()
    assert reply.status == status
    assert not (site / "ran").exists()


async def test_no_shell_sees_the_query(
    serve: ServeFactory, connect: ConnectFactory, site: Path
) -> None:
    async with serve(make_app(site)) as server:
        client = await connect(server.port)
        await client.send(get("/cgi-bin/env.py?;touch%20$MARKER;`touch%20$MARKER`"))
        reply = await client.response()
    assert reply.status == 200
    assert json.loads(reply.body)["argv"] == []
    assert not (site / "ran").exists()


# --------------------------------------------------------------------------- the parts


@pytest.mark.parametrize(
    ("output", "status", "fields", "body"),
    [
        (b"Content-Type: text/plain\n\nhi", 200, [(b"content-type", b"text/plain")], b"hi"),
        (b"Status: 404 Nope\r\nContent-Type: text/html\r\n\r\n", 404, [], b""),
        (b"Location: http://x.example/\n\n", 302, [(b"location", b"http://x.example/")], b""),
        (
            b"Status: 301\nLocation: /moved\n\n",
            301,
            [(b"location", b"/moved")],
            b"",
        ),
        (b"Content-Type: a/b\nConnection: close\nServer: me\n\nx", 200, [], b"x"),
    ],
)
def test_parsing_a_header_section(
    output: bytes, status: int, fields: list[tuple[bytes, bytes]], body: bytes
) -> None:
    parser = CGIResponseParser()
    assert parser.feed(output)
    got_status, got_fields = parser.response_head()
    assert got_status == status
    for field in fields:
        assert field in got_fields
    assert not any(name in (b"connection", b"server", b"status") for name, _ in got_fields)
    assert parser.body == body
    # A byte at a time, as a pipe may give it: the same head.
    bytewise = CGIResponseParser()
    assert any(bytewise.feed(output[i : i + 1]) for i in range(len(output)))
    assert bytewise.response_head() == parser.response_head()


@pytest.mark.parametrize(
    "output",
    [
        b"no colon here\n\n",
        b"Status: abc\n\n",
        b"Status: 100 Continue\n\n",
        b"Bad Name: x\n\n",
        b"X: a\n folded\n\n",
        b"X-Long: " + b"a" * 70_000,
    ],
)
def test_malformed_header_sections(output: bytes) -> None:
    with pytest.raises(CGIError):
        CGIResponseParser().feed(output)


def test_only_a_lone_location_path_is_a_local_redirect() -> None:
    lone = CGIResponseParser()
    lone.feed(b"Location: /next?x=1\n\n")
    assert lone.local_redirect == b"/next?x=1"
    with_type = CGIResponseParser()
    with_type.feed(b"Location: /next\nContent-Type: text/plain\n\n")
    assert with_type.local_redirect is None
    network_path = CGIResponseParser()
    network_path.feed(b"Location: //evil.example/\n\n")
    assert network_path.local_redirect is None


def test_find_script_splits_script_and_path_info(site: Path) -> None:
    root = str((site / "cgi-bin").resolve())
    script = find_script(root, b"/deeper/inner.sh/a/b%2Fc/", "/cgi")
    assert script.filename == os.path.join(root, "deeper", "inner.sh")
    assert script.script_name == "/cgi/deeper/inner.sh"
    assert script.path_info == "/a/b/c/"
    assert find_script(root, b"/hello.sh", "").path_info == ""
    with pytest.raises(aserve.HTTPException) as caught:
        find_script(root, b"/../outside.sh", "")
    assert caught.value.status == 404


def test_bad_options_are_refused(site: Path) -> None:
    with pytest.raises(aserve.ConfigError):
        CGIHandler(site / "missing")
    with pytest.raises(aserve.ConfigError):
        CGIHandler(site / "cgi-bin", max_processes=0)
    with pytest.raises(aserve.ConfigError):
        CGIHandler(site / "cgi-bin", timeout=0)


# --------------------------------------------------------------------------- the command


def test_cgi_dir_through_the_command(site: Path, start: Start) -> None:
    (site / "index.html").write_text("<p>home</p>")
    server = start("--port", "0", "--cgi-dir", "cgi-bin", cwd=site)
    assert server.match.group("what") == (
        f"directory {site.resolve()} and CGI scripts of {(site / 'cgi-bin').resolve()} at /cgi-bin"
    )
    assert server.body("/cgi-bin/hello.sh/x?y=1") == b"hello y=1 from /x\n"
    assert server.get("/cgi-bin/hello.sh").status == 201
    assert server.body("/") == b"<p>home</p>"
    # The scripts' source is never served as a file.
    assert server.get("/cgi-bin/notexec.sh").status == 403
    env = json.loads(server.body("/cgi-bin/env.py"))["env"]
    assert env["SCRIPT_NAME"] == "/cgi-bin/env.py"
    status, stderr = server.stop()
    assert status == 0
    assert "a line for the log" in stderr


def test_cgi_limits_through_the_command(site: Path, start: Start) -> None:
    (site / "cgi-bin" / "slow.sh").write_text("#!/bin/sh\nsleep 30\n")
    (site / "cgi-bin" / "slow.sh").chmod(0o755)
    server = start(
        "--port",
        "0",
        "--cgi-dir",
        "/scripts=cgi-bin",
        "--cgi-timeout",
        "0.5",
        "--cgi-max-processes",
        "2",
        cwd=site,
    )
    assert server.get("/scripts/slow.sh").status == 504
    assert server.get("/scripts/hello.sh").status == 201
    assert server.stop()[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cgi-dir", "missing"], "is not a directory"),
        (["--cgi-dir", "cgi-bin", "--cgi-timeout", "0"], "must be a positive number"),
        (["--cgi-dir", "cgi-bin", "--cgi-max-processes", "0"], "must be between 1 and 1024"),
        (["--cgi-timeout", "5"], "--cgi-timeout is about --cgi-dir"),
        (["--cgi-dir", "/=cgi-bin"], "PREFIX must be a path such as /cgi-bin"),
    ],
)
def test_bad_cgi_options_are_one_line(site: Path, args: list[str], message: str) -> None:
    result = run_aserve(*args, cwd=site)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aserve: error: ")
    assert message in lines[0]


def test_scripts_beside_an_app_target(site: Path, start: Start) -> None:
    (site / "myapp.py").write_text(
        textwrap.dedent(
            """
            import aserve
            app = aserve.App()

            @app.get("/")
            async def home(request):
                return aserve.PlainTextResponse("the app")
            """
        )
    )
    server = start("myapp:app", "--port", "0", "--cgi-dir", "cgi-bin", cwd=site)
    assert server.body("/") == b"the app"
    assert server.body("/cgi-bin/hello.sh") == b"hello  from \n"
    assert server.stop()[0] == 0
