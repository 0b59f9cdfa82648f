"""A 2 GiB file is served with flat memory: the server process (the real `aserve`
command) keeps its resident size within a few MiB while a slow client reads
the file, and while a fast one reads all of it.

The file is sparse (`os.truncate`), so the test needs no disk space, and ends
with a few known bytes so that a Range request at a 2 GiB offset can be checked
exactly. RSS is read from /proc, so this runs on Linux only.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIZE = 2 * 1024**3
TAIL = b"THE END"
#: How much the server's RSS may grow while streaming, in bytes.
RSS_ALLOWANCE = 6 * 1024 * 1024

pytestmark = [
    pytest.mark.serial,  # reads this process's resident memory: run alone
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.timeout(60),
]


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1)) * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(SIZE)
        f.seek(SIZE - len(TAIL))
        f.write(TAIL)
    (tmp_path / "small.txt").write_text("warm-up")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aserve", "-d", str(tmp_path), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+) ", line)
        assert match, line
        yield proc, int(match.group(1))
    finally:
        proc.kill()
        proc.communicate()


def request(port: int, head: bytes, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(head)
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def fetch_small(port: int, path: str, extra: bytes = b"") -> tuple[bytes, bytes]:
    with request(
        port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".encode() + extra + b"\r\n"
    ) as sock:
        head, body = read_head(sock)
        while chunk := sock.recv(65536):
            body += chunk
    return head, body


def test_two_gigabytes_with_flat_memory(server: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = server
    for _ in range(3):  # warm up: imports, first connections, first file
        fetch_small(port, "/small.txt")
        fetch_small(port, "/big.bin", b"Range: bytes=0-99\r\n")
    baseline = rss(proc.pid)
    peak = baseline

    # A slow reader: the server must wait for it, not buffer ahead of it.
    with request(port, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n", rcvbuf=64 * 1024) as sock:
        head, _ = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert f"content-length: {SIZE}".encode() in head.lower()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert sock.recv(16 * 1024)
            time.sleep(0.005)  # the slowness under test
            peak = max(peak, rss(proc.pid))

    # A fast reader takes all 2 GiB.
    with request(port, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n") as sock:
        sock.settimeout(30)
        head, body = read_head(sock)
        received = len(body)
        last = body[-len(TAIL) :]
        samples = 0
        buffer = bytearray(1024 * 1024)
        while received < SIZE:
            count = sock.recv_into(buffer)
            assert count, f"connection closed after {received} bytes"
            received += count
            last = (last + bytes(buffer[max(0, count - len(TAIL)) : count]))[-len(TAIL) :]
            samples += 1
            if samples % 256 == 0:
                peak = max(peak, rss(proc.pid))
        assert received == SIZE
        assert last == TAIL

    print(f"RSS baseline {baseline / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB")
    assert peak - baseline < RSS_ALLOWANCE, f"RSS grew by {(peak - baseline) / 2**20:.1f} MiB"

    # Ranges at a 2 GiB offset come back exact.
    head, body = fetch_small(port, "/big.bin", f"Range: bytes=-{len(TAIL)}\r\n".encode())
    assert head.startswith(b"HTTP/1.1 206 ")
    assert body == TAIL
    first = SIZE - len(TAIL)
    head, body = fetch_small(port, "/big.bin", f"Range: bytes={first}-{first + 2}\r\n".encode())
    assert f"content-range: bytes {first}-{first + 2}/{SIZE}".encode() in head.lower()
    assert body == TAIL[:3]
