"""The Server object: binding, `async with`, the Config it accepts and refuses,
and `aserve.run` choosing the event loop."""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import READ_TIMEOUT, ConnectFactory, ServeFactory, refused

import aserve

ROOT = Path(__file__).resolve().parent.parent
GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


async def which_loop(request: aserve.Request) -> aserve.Response:
    return aserve.PlainTextResponse(type(asyncio.get_running_loop()).__module__)


async def test_port_zero_binds_a_real_free_port(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(which_loop) as server, serve(which_loop) as other:
        assert 0 < server.port < 65536
        assert server.port != other.port
        assert {sock.getsockname()[1] for sock in server.sockets} == {server.port}
        client = await connect(server.port)
        await client.send(GET)
        assert (await client.response()).status == 200


async def test_async_with_starts_and_shuts_down(connect: ConnectFactory) -> None:
    async with aserve.Server(which_loop, host="127.0.0.1", port=0, graceful_timeout=1.0) as server:
        port = server.port
        client = await connect(port)
        await client.send(GET)
        assert (await client.response()).status == 200
    assert await client.read_until_close() == b""
    assert await refused(port)


async def test_config_object_is_used(connect: ConnectFactory) -> None:
    config = aserve.Config(host="127.0.0.1", port=0, server_header="from-config")
    async with aserve.Server(which_loop, config=config) as server:
        client = await connect(server.port)
        await client.send(GET)
        reply = await client.response()
    assert reply.header("server") == "from-config"


@pytest.mark.parametrize("loop_name", ["auto", "asyncio", "uvloop"])
async def test_embedded_server_serves_on_the_running_loop_whatever_the_loop_option(
    serve: ServeFactory, connect: ConnectFactory, loop_name: str
) -> None:
    # An embedded Server never touches the loop policy: `loop` is for run().
    async with serve(which_loop, loop=loop_name) as server:
        client = await connect(server.port)
        await client.send(GET)
        reply = await client.response()
    assert reply.body == type(asyncio.get_running_loop()).__module__.encode()


def test_unknown_option_raises_config_error() -> None:
    with pytest.raises(aserve.ConfigError, match="keep_alive_timout"):
        aserve.Server(which_loop, port=0, keep_alive_timout=5)


@pytest.mark.parametrize(
    "options",
    [
        {"port": -1},
        {"port": 70000},
        {"keep_alive_timeout": 0},
        {"header_timeout": -1.0},
        {"loop": "trio"},
        {"max_body_size": -1},
        {"max_head_size": 10},
        {"server_header": "evil\r\nX-Injected: 1"},
        {"port": "8000"},
    ],
    ids=lambda options: "-".join(f"{k}={v!r}" for k, v in options.items()),
)
def test_bad_option_value_raises_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(aserve.ConfigError):
        aserve.Server(which_loop, **options)


@pytest.mark.parametrize("enabled", [True, False], ids=["access-log-on", "access-log-off"])
async def test_access_log_writes_one_line_per_request_when_enabled(
    serve: ServeFactory,
    connect: ConnectFactory,
    caplog: pytest.LogCaptureFixture,
    enabled: bool,
) -> None:
    with caplog.at_level(logging.INFO, logger="aserve.access"):
        async with serve(which_loop, access_log=enabled) as server:
            client = await connect(server.port)
            await client.send(b"GET /logged?x=1 HTTP/1.1\r\nHost: test\r\n\r\n")
            assert (await client.response()).status == 200
            await client.send(b"GET /again HTTP/1.1\r\nHost: test\r\n\r\n")
            assert (await client.response()).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("aserve.access")]
    if enabled:
        assert len(lines) == 2, lines
        assert "/logged" in lines[0] and "200" in lines[0]
        assert "/again" in lines[1]
    else:
        assert lines == []


# --------------------------------------------------------------------------- run()

RUN_SCRIPT = """
import asyncio, sys
import aserve

async def which_loop(request):
    return aserve.PlainTextResponse(type(asyncio.get_running_loop()).__module__)

aserve.run(which_loop, host="127.0.0.1", port=int(sys.argv[1]), loop=sys.argv[2],
           graceful_timeout=1.0)
"""


def _free_port() -> int:
    # run() takes a port number, so borrow one the OS just handed out.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get_when_up(process: subprocess.Popen[bytes], port: int, deadline: float) -> bytes:
    """GET / once the child listens; polls because a child process has no event to await."""
    while True:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"server exited with {process.returncode}: {stderr.decode()}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=READ_TIMEOUT)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            assert response.status == 200
            return response.read()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            connection.close()


def _python(script: str, *args: str) -> subprocess.Popen[bytes]:
    """`python -c script ARGS` with this tree importable, its output piped."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_run_serves_on_the_chosen_loop_and_stops_on_sigint(loop_name: str) -> None:
    port = _free_port()
    process = _python(RUN_SCRIPT, str(port), loop_name)
    try:
        body = _get_when_up(process, port, time.monotonic() + 10)
        assert body.decode().startswith(loop_name)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr.decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


HELLO_SCRIPT = """
import sys
import aserve

async def hello(request):
    return aserve.PlainTextResponse("Hello, World!")

aserve.run(hello, port=int(sys.argv[1]), log_config=sys.argv[2] == "on")
"""


@pytest.mark.parametrize("log_config", ["on", "off"])
def test_run_prints_the_start_line_and_sets_up_logging(log_config: str) -> None:
    port = _free_port()
    process = _python(HELLO_SCRIPT, str(port), log_config)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        assert line.startswith("aserve ") and line.endswith(
            f"serving hello on http://127.0.0.1:{port} (press Ctrl+C to quit)"
        ), line
        assert _get_when_up(process, port, time.monotonic() + 10) == b"Hello, World!"
        process.send_signal(signal.SIGINT)
        _, raw = process.communicate(timeout=10)
        stderr = raw.decode()
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    said = " INFO aserve: shutting down (send the signal again to force)" in stderr
    assert said == (log_config == "on"), stderr
