"""HTTPS through the real command: it serves, the start line says https, and
SIGHUP reloads the certificate files without a restart."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_pair(ca: trustme.CA, folder: Path) -> tuple[str, str]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return str(certfile), str(keyfile)


def get(port: int, ca: trustme.CA) -> bytes:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data


@contextlib.contextmanager
def aserve_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m aserve ARGS` running, and its start line; SIGINT at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aserve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process, process.stdout.readline()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, trustme.CA, Path]]:
    ca = trustme.CA()
    certfile, keyfile = write_pair(ca, tmp_path)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<p>secure</p>")
    port = free_port()
    site = str(tmp_path / "site")
    tls = ("--ssl-certfile", certfile, "--ssl-keyfile", keyfile)
    with aserve_process("-d", site, "--port", str(port), *tls) as (process, line):
        assert f"https://127.0.0.1:{port}" in line, line
        yield process, port, ca, tmp_path


def test_https_from_the_command_line(
    served: tuple[subprocess.Popen[str], int, trustme.CA, Path],
) -> None:
    process, port, ca, _ = served
    answer = get(port, ca)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"<p>secure</p>" in answer


def test_sighup_reloads_the_certificate(
    served: tuple[subprocess.Popen[str], int, trustme.CA, Path],
) -> None:
    process, port, old_ca, folder = served
    new_ca = trustme.CA()
    write_pair(new_ca, folder)
    os.kill(process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        try:
            answer = get(port, new_ca)
            break
        except ssl.SSLCertVerificationError:
            assert time.monotonic() < deadline, "the new certificate never came"
            time.sleep(0.05)
    assert answer.startswith(b"HTTP/1.1 200 ")
    with pytest.raises(ssl.SSLCertVerificationError):
        get(port, old_ca)
    assert process.poll() is None  # still the same process


def test_workers_serve_https_and_sighup_brings_the_new_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    certfile, keyfile = write_pair(ca, tmp_path)
    (tmp_path / "pidapp.py").write_text(
        "import os\nimport aserve\n"
        "async def app(request):\n"
        "    return aserve.PlainTextResponse(str(os.getpid()))\n"
    )
    port = free_port()
    args = ("pidapp:app", "--app-dir", str(tmp_path), "--port", str(port), "--workers", "2")
    tls = ("--ssl-certfile", certfile, "--ssl-keyfile", keyfile)
    with aserve_process(*args, *tls) as (process, line):
        assert f"https://127.0.0.1:{port} with 2 workers" in line, line
        pids = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2:
            assert time.monotonic() < deadline, f"one worker only: {pids}"
            pids.add(int(get(port, ca).split(b"\r\n\r\n", 1)[1]))
        new_ca = trustme.CA()
        write_pair(new_ca, tmp_path)
        os.kill(process.pid, signal.SIGHUP)  # new workers, new certificate
        while True:
            try:
                answer = get(port, new_ca)
                break
            except ssl.SSLCertVerificationError:
                assert time.monotonic() < deadline + 20, "the new certificate never came"
                time.sleep(0.05)
        assert int(answer.split(b"\r\n\r\n", 1)[1]) not in pids
    assert process.returncode == 0
