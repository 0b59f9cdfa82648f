"""A page in headless Chromium (Debian's ``chromium``) opens a WebSocket to
``aserve`` (the real command), exchanges text and binary messages, and writes
what came back into the page; the DOM Chromium built and its screenshot must
show it.

The page's load event waits for the exchange: its last script is answered by
the server only once the WebSocket handler has heard the page say "done", so
``--dump-dom`` and ``--screenshot`` see the finished page.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import Start
from test_status_page_browser import CHROMIUM, chromium, png_pixels

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="the WebSocket page is checked in headless Chromium: apt-get install chromium "
        "(.ci/run installs it)",
    ),
    pytest.mark.timeout(120),
]

WIDTH, HEIGHT = 800, 600
OK_COLOUR = (0x1E, 0x8E, 0x3E)

APP = textwrap.dedent(
    """
    import asyncio

    import aserve

    app = aserve.App()
    finished = asyncio.Event()

    PAGE = '''<!doctype html>
    <html><head><meta charset="utf-8"><title>aserve websocket</title>
    <style>body{margin:0;font:20px sans-serif}#box{width:100%;height:300px;background:#999}
    #box.ok{background:#1e8e3e}</style></head>
    <body><div id="box"></div><ul id="log"></ul><p id="result">waiting</p>
    <script>
    const log = document.getElementById("log");
    const ws = new WebSocket(`ws://${location.host}/ws?who=chromium`);
    ws.binaryType = "arraybuffer";
    const got = [];
    ws.onopen = () => { ws.send("hello from the page"); ws.send(new Uint8Array([1, 2, 3])); };
    ws.onmessage = (event) => {
      const text = typeof event.data === "string"
        ? event.data : "bytes:" + Array.from(new Uint8Array(event.data)).join(",");
      got.push(text);
      const item = document.createElement("li");
      item.textContent = text;
      log.appendChild(item);
      if (got.length === 3) {
        document.getElementById("result").textContent = "ok: " + got.join(" | ");
        document.getElementById("box").className = "ok";
        ws.send("done");
      }
    };
    ws.onerror = () => { document.getElementById("result").textContent = "error"; };
    </script>
    <script src="/after.js"></script>
    </body></html>'''


    @app.get("/")
    async def page(request):
        finished.clear()  # each load waits for its own exchange
        return aserve.HTMLResponse(PAGE)


    @app.get("/after.js")
    async def after(request):
        try:
            await asyncio.wait_for(finished.wait(), 20)
            status = "exchange finished"
        except TimeoutError:
            status = "exchange timed out"
        return aserve.Response(
            f"document.title = {status!r};", media_type="application/javascript"
        )


    @app.websocket("/ws")
    async def talk(ws):
        await ws.accept()
        await ws.send_text("welcome " + ws.query_params["who"])
        async for message in ws:
            if message == "done":
                finished.set()
                await ws.close()
                return
            if isinstance(message, str):
                await ws.send_text(message.upper())
            else:
                await ws.send_bytes(bytes(reversed(message)))
    """
)


def test_a_page_in_chromium_talks_to_aserve_over_a_websocket(start: Start, tmp_path: Path) -> None:
    (tmp_path / "wsapp.py").write_text(APP)
    running = start("wsapp:app", "--port", "0", "--access-log", cwd=tmp_path)
    url = f"http://127.0.0.1:{running.port}/"

    dom = chromium("--dump-dom", url, profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<title>exchange finished</title>" in html, html[:2000]
    assert '<p id="result">ok: welcome chromium | HELLO FROM THE PAGE | bytes:3,2,1</p>' in html, (
        html[:3000]
    )
    assert html.count("<li>") == 3

    shot = tmp_path / "page.png"
    taken = chromium(
        f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}", url, profile=tmp_path / "p2"
    )
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    colour = bytes(OK_COLOUR)
    ok_pixels = sum(
        1 for row in rows[:300] for x in range(0, len(row), 3) if row[x : x + 3] == colour
    )
    assert ok_pixels > WIDTH * 250, f"the page did not turn green ({ok_pixels} pixels)"

    status, stderr = running.stop()
    assert status == 0
    # The sessions are in the access log: one line each, with their figures.
    assert stderr.count('"GET /ws?who=chromium HTTP/1.1" 101 ') == 2, stderr[-3000:]
    assert "websocket in=3/" in stderr and "close=1000" in stderr
