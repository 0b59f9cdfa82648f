"""The WebSocket settings: their checks, the command's options, and a server
without wsproto (the core install), which answers upgrades as plain HTTP."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Start, run_aserve

import aserve
from aserve.cli import build_parser

APP = textwrap.dedent(
    """
    import aserve

    app = aserve.App()

    @app.get("/")
    async def home(request):
        return aserve.PlainTextResponse("plain " + request.headers.get("upgrade", "-"))

    @app.websocket("/ws")
    async def echo(ws):
        await ws.accept()
        async for message in ws:
            await ws.send(message)
    """
)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ws_max_size": 0}, "ws_max_size must be at least 1"),
        ({"ws_max_queue": 0}, "ws_max_queue must be at least 1"),
        ({"ws_ping_interval": 0}, "ws_ping_interval must be a finite number"),
        ({"ws_ping_timeout": float("inf")}, "ws_ping_timeout must be a finite number"),
        ({"ws": "websockets"}, "ws must be one of 'auto', 'wsproto', 'none'"),
        ({"ws_per_message_deflate": "yes"}, "ws_per_message_deflate must be true or false"),
    ],
)
def test_bad_websocket_settings_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(aserve.ConfigError, match=message):
        aserve.Config.build(**options)


def test_the_defaults_are_uvicorns() -> None:
    config = aserve.Config()
    assert config.ws == "auto"
    assert config.ws_max_size == 16 * 1024 * 1024
    assert config.ws_max_queue == 32
    assert config.ws_ping_interval == config.ws_ping_timeout == 20.0
    assert config.ws_per_message_deflate is True


def test_the_command_takes_uvicorns_option_names() -> None:
    parser, _ = build_parser()
    args = parser.parse_args(
        [
            "--ws",
            "none",
            "--ws-max-size",
            "1024",
            "--ws-max-queue",
            "4",
            "--ws-ping-interval",
            "none",
            "--ws-ping-timeout",
            "2.5",
            "--no-ws-per-message-deflate",
        ]
    )
    assert (args.ws, args.ws_max_size, args.ws_max_queue) == ("none", 1024, 4)
    assert (args.ws_ping_interval, args.ws_ping_timeout) == (None, 2.5)
    assert args.ws_per_message_deflate is False


@pytest.fixture
def without_wsproto(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import wsproto`` fails, as in the core install."""
    shadow = tmp_path / "shadow" / "wsproto"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no wsproto here')\n")
    root = Path(__file__).resolve().parent.parent
    return {"PYTHONPATH": os.pathsep.join([str(shadow.parent), str(root)])}


def test_ws_wsproto_without_wsproto_is_one_line_naming_the_extra(
    tmp_path: Path, without_wsproto: dict[str, str]
) -> None:
    (tmp_path / "wsapp.py").write_text(APP)
    done = run_aserve("wsapp:app", "--ws", "wsproto", cwd=tmp_path, env=without_wsproto)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "aserve: error: ws='wsproto' but wsproto is not installed: pip install 'aserve[ws]'"
    ]


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_without_wsproto_an_upgrade_is_plain_http(
    start: Start, tmp_path: Path, without_wsproto: dict[str, str]
) -> None:
    (tmp_path / "wsapp.py").write_text(APP)
    running = start("wsapp:app", "--port", "0", cwd=tmp_path, env=without_wsproto)
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "MDEyMzQ1Njc4OWFiY2RlZg==",
        "Sec-WebSocket-Version": "13",
    }
    assert _get(running.port, "/", upgrade) == (200, b"plain websocket")
    status, body = _get(running.port, "/ws", upgrade)
    assert status == 501 and b"not enabled" in body
    assert _get(running.port, "/ws", {})[0] == 426
    code, stderr = running.stop()
    assert code == 0, stderr


LAZY = textwrap.dedent(
    """
    import asyncio, sys
    import aserve

    app = aserve.App()

    @app.get("/")
    async def home(request):
        return aserve.PlainTextResponse("ok")

    @app.websocket("/ws")
    async def echo(ws):
        await ws.accept()
        await ws.close()

    async def ask(port, head):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        line = await reader.readline()
        writer.close()
        return line.split()[1].decode()

    async def main():
        server = aserve.Server(app, port=0)
        await server.start()
        port = server.port
        print(await ask(port, b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n"), "wsproto" in sys.modules)
        print(
            await ask(
                port,
                b"GET /ws HTTP/1.1\\r\\nHost: a\\r\\nUpgrade: websocket\\r\\n"
                b"Connection: Upgrade\\r\\nSec-WebSocket-Version: 13\\r\\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n\\r\\n",
            ),
            "wsproto" in sys.modules,
        )
        await server.shutdown()

    asyncio.run(main())
    """
)


def test_wsproto_is_imported_with_the_first_websocket_not_at_start_up(tmp_path: Path) -> None:
    # About 40 ms of a server's start-up, for servers that may never see one.
    script = tmp_path / "lazy.py"
    script.write_text(LAZY)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["200 False", "101 True"]
