"""The status page in a real browser: ``aserve --workers 2 --status-path
/status`` after some traffic, opened in headless Chromium (Debian's
``chromium``; .ci/run installs it). The DOM Chromium built must show the
numbers of the traffic sent, and the screenshot must show the chart's bars.

With ASERVE_SCREENSHOT_DIR set, the screenshot is also written there as
status-page.png (how docs/status-page.png, shown in the README, is made).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import environment, read_line

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="the status page is checked in headless Chromium: apt-get install chromium "
    "(.ci/run installs it)",
)

APP = textwrap.dedent(
    """
    import aserve

    async def app(request):
        if request.path == "/missing":
            return aserve.PlainTextResponse("no", status=404)
        return aserve.PlainTextResponse("hello")
    """
)
STARTED = re.compile(r"on http://127\.0\.0\.1:(\d+) with 2 workers")
WIDTH, HEIGHT = 1000, 1080
BAR_COLOUR = (0x3B, 0x7D, 0xD8)  # .bars rect in aserve/status.py


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "statusapp.py").write_text(APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aserve", "statusapp:app", "--port", "0", "--workers", "2",
         "--reuse-port", "--status-path", "/status"],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        line = read_line(proc, 30)
        found = STARTED.search(line)
        assert found, f"no start line: {line!r}"
        yield int(found.group(1))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )  # fmt: skip


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the rows (RGB or RGBA bytes) of an 8-bit,
    non-interlaced PNG, as Chromium writes them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks, header = 8, [], b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        at += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    size = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * size
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - size] if x >= size else 0
            up = previous[x]
            corner = previous[x - size] if x >= size else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + best) & 0xFF
        rows.append(bytes(line) if size == 3 else bytes(
            b for i, b in enumerate(line) if i % 4 != 3
        ))  # fmt: skip
        previous = line
    return width, height, rows


def test_the_status_page_renders_the_traffic_in_chromium(server: int, tmp_path: Path) -> None:
    port = server
    sent = 0
    # Three seconds of rising traffic, each a bar of the chart.
    for burst in (15, 30, 45):
        second = int(time.time())
        for i in range(burst):
            status, _ = get(port, "/missing" if i % 15 == 0 else "/")
            assert status in (200, 404)
            sent += 1
        while int(time.time()) == second:
            time.sleep(0.02)
    time.sleep(1.2)  # every worker has published the last second

    def total() -> int:
        status, body = get(port, "/status?format=json")
        assert status == 200
        return int(json.loads(body)["requests"]["total"])

    deadline = time.monotonic() + 10
    scrapes = 0
    while total() != sent + scrapes:  # earlier scrapes are answered requests too
        scrapes += 1
        assert time.monotonic() < deadline, "the status never counted the traffic"
    answered = sent + scrapes + 1  # and the check that just matched

    url = f"http://127.0.0.1:{port}/status?refresh=0"
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "<title>aserve status</title>" in html
    assert "2 of 2 worker(s) serving" in html
    assert re.search(rf"answered since start</th><td>{answered:,}</td>", html), html[:3000]
    assert re.search(r"status 4xx</th><td>6</td>", html)
    assert len(re.findall(r"<rect ", html)) >= 3  # a bar per second of traffic

    shot = tmp_path / "status-page.png"
    taken = chromium(
        f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}", url, profile=tmp_path / "p2"
    )
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    colour = bytes(BAR_COLOUR)
    bar_pixels = sum(1 for row in rows for x in range(0, len(row), 3) if row[x : x + 3] == colour)
    assert bar_pixels > 500, f"the chart's bars are not on the screenshot ({bar_pixels} pixels)"
    target = os.environ.get("ASERVE_SCREENSHOT_DIR")
    if target:
        shutil.copyfile(shot, Path(target) / "status-page.png")
