"""HTTPS: real certificates (trustme), real TLS clients, on both event loops.

The handshake is the start of the head (header_timeout), a failed one is one
log line and a close, plain HTTP to the TLS port gets a plain 400 that says so,
and nothing of this disturbs the other connections. Keep-alive, bodies both
ways, static files (no sendfile under TLS), lingering closes and certificate
reloads all work through the TLS layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import READ_TIMEOUT, RawClient, replies

import aserve
from aserve.front import FrontProtocol

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certfiles(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile = tmp_path / "cert.pem"
    keyfile = tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    return {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)}


def client_context(ca: trustme.CA, **kwargs: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    for name, value in kwargs.items():
        setattr(context, name, value)
    return context


async def tls_client(
    port: int, context: ssl.SSLContext, server_hostname: str = "localhost"
) -> RawClient:
    async with asyncio.timeout(READ_TIMEOUT):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=server_hostname
        )
    return RawClient(reader, writer)


@contextlib.asynccontextmanager
async def client_of(
    port: int, context: ssl.SSLContext, server_hostname: str = "localhost"
) -> AsyncIterator[RawClient]:
    client = await tls_client(port, context, server_hostname)
    try:
        yield client
    finally:
        await client.close()


async def echo_request(request: aserve.Request) -> aserve.Response:
    body = await request.body()
    tls = request.tls
    return aserve.JSONResponse(
        {
            "scheme": request.scheme,
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "version": tls.version if tls else None,
            "client_cert": tls.client_cert is not None if tls else None,
            "subject": tls.client_cert_subject if tls else None,
            "san": (tls.client_cert or {}).get("subjectAltName") if tls else None,
        }
    )


GET = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


async def test_https_keep_alive(serve: Any, certfiles: dict[str, str], ca: trustme.CA) -> None:
    async with serve(echo_request, **certfiles) as server:
        async with client_of(server.port, client_context(ca)) as client:
            for _ in range(3):
                await client.send(GET)
                reply = await client.response()
                assert reply.status == 200
                assert json.loads(reply.body)["scheme"] == "https"
            ssl_object = client.writer.get_extra_info("ssl_object")
            assert ssl_object.selected_alpn_protocol() in (None, "http/1.1")
            assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")


async def test_alpn_is_http11(serve: Any, certfiles: dict[str, str], ca: trustme.CA) -> None:
    context = client_context(ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    async with serve(echo_request, **certfiles) as server:
        async with client_of(server.port, context) as client:
            ssl_object = client.writer.get_extra_info("ssl_object")
            assert ssl_object.selected_alpn_protocol() == "http/1.1"
            await client.send(GET)
            assert (await client.response()).status == 200


async def test_bodies_both_ways(serve: Any, certfiles: dict[str, str], ca: trustme.CA) -> None:
    payload = os.urandom(3 * 1024 * 1024)

    async def stream(request: aserve.Request) -> aserve.Response:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(payload), 100_000):
                yield payload[i : i + 100_000]

        return aserve.StreamingResponse(chunks())

    async with serve(stream, **certfiles) as server:
        async with client_of(server.port, client_context(ca)) as client:
            await client.send(GET)
            reply = await client.response(timeout=10)
            assert reply.body == payload
    async with serve(echo_request, **certfiles) as server:
        async with client_of(server.port, client_context(ca)) as client:
            head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n\r\n"
            await client.send(head.encode() + payload)
            reply = await client.response(timeout=10)
            seen = json.loads(reply.body)
            assert seen["length"] == len(payload)
            assert seen["sha256"] == hashlib.sha256(payload).hexdigest()


async def test_static_file_over_tls(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    data = os.urandom(2 * 1024 * 1024 + 17)
    (site / "big.bin").write_bytes(data)
    async with serve(aserve.StaticFiles(site), **certfiles) as server:
        async with client_of(server.port, client_context(ca)) as client:
            await client.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = await client.response(timeout=10)
            assert reply.status == 200
            assert reply.body == data
            await client.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\n\r\n")
            reply = await client.response()
            assert reply.status == 206 and reply.body == data[5:10]


async def test_plain_http_to_the_tls_port(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.error")
    async with serve(echo_request, **certfiles) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(GET)
        async with asyncio.timeout(READ_TIMEOUT):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"speaks HTTPS" in answer
        lines = [r.getMessage() for r in caplog.records if "HTTPS port" in r.getMessage()]
        assert len(lines) == 1 and "127.0.0.1" in lines[0]
        async with client_of(server.port, client_context(ca)) as client:
            await client.send(GET)
            assert (await client.response()).status == 200


async def test_garbage_handshake_is_one_line_and_a_close(
    serve: Any, certfiles: dict[str, str], caplog: pytest.LogCaptureFixture, ca: trustme.CA
) -> None:
    caplog.set_level(logging.INFO, "aserve.error")
    async with serve(echo_request, **certfiles) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x16\x03\x01\x00\x05hello" + b"\x00" * 100)
        async with asyncio.timeout(READ_TIMEOUT):
            await reader.read()  # an alert, then the close
        writer.close()
        lines = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "127.0.0.1" in lines[0] and "failed" in lines[0]
        async with client_of(server.port, client_context(ca)) as client:
            await client.send(GET)
            assert (await client.response()).status == 200


async def test_untrusted_server_certificate_is_the_client_s_failure(
    serve: Any, certfiles: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.error")
    other = trustme.CA()
    async with serve(echo_request, **certfiles) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            await tls_client(server.port, client_context(other))
        async with asyncio.timeout(READ_TIMEOUT):
            while not any("TLS handshake" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)


async def test_handshake_runs_under_header_timeout(
    serve: Any, certfiles: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.error")
    async with serve(echo_request, header_timeout=0.3, **certfiles) as server:
        loop = asyncio.get_running_loop()
        for first in (b"", b"\x16\x03\x01"):  # silent; half a ClientHello
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(first)
            started = loop.time()
            async with asyncio.timeout(READ_TIMEOUT):
                assert await reader.read() == b""
            assert loop.time() - started < 2.0
            writer.close()
        late = [r.getMessage() for r in caplog.records if "header_timeout" in r.getMessage()]
        assert len(late) == 2 and all("TLS handshake" in line for line in late)


async def test_client_certificates(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    person = ca.issue_cert("alice@example.org")
    with_cert = client_context(ca)
    person.configure_cert(with_cert)
    options = dict(certfiles, ssl_ca_certs=str(ca_file))
    async with serve(echo_request, ssl_cert_reqs="required", **options) as server:
        async with client_of(server.port, with_cert) as client:
            await client.send(GET)
            seen = json.loads((await client.response()).body)
            assert seen["client_cert"] is True
            assert "O=trustme" in seen["subject"]
            assert ["email", "alice@example.org"] in seen["san"]
        # Without a certificate the handshake fails (TLS 1.3 reports it on the
        # first read); the server goes on serving.
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            client = await tls_client(server.port, client_context(ca))
            try:
                await client.send(GET)
                await client.response()
            finally:
                await client.close()
        async with client_of(server.port, with_cert) as client:
            await client.send(GET)
            assert (await client.response()).status == 200
    async with serve(echo_request, ssl_cert_reqs="optional", **options) as server:
        async with client_of(server.port, client_context(ca)) as client:
            await client.send(GET)
            assert json.loads((await client.response()).body)["client_cert"] is False


async def test_error_answer_then_clean_tls_close(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA
) -> None:
    async with serve(echo_request, **certfiles) as server:
        async with client_of(server.port, client_context(ca)) as client:
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
            reply = await client.response()
            assert reply.status == 400
            # close_notify then EOF: a clean end, not a reset
            assert await client.read_until_close() == b""
        async with client_of(server.port, client_context(ca)) as client:
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await client.response()).status == 200
            assert await client.read_until_close() == b""


async def test_certificate_reload(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.error")
    async with serve(echo_request, **certfiles) as server:
        old_client = await tls_client(server.port, client_context(ca))
        new_ca = trustme.CA()
        renewed = new_ca.issue_cert("localhost")
        renewed.cert_chain_pems[0].write_to_path(certfiles["ssl_certfile"])
        renewed.private_key_pem.write_to_path(certfiles["ssl_keyfile"])
        assert server.reload_certificates()
        async with client_of(server.port, client_context(new_ca)) as client:
            await client.send(GET)
            assert (await client.response()).status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            await tls_client(server.port, client_context(ca))
        # the connection opened before the reload keeps its certificate
        await old_client.send(GET)
        assert (await old_client.response()).status == 200
        await old_client.close()
        # a broken file is reported and the certificate in service stays
        Path(certfiles["ssl_keyfile"]).write_text("not a key")
        assert not server.reload_certificates()
        assert any("not reloaded" in r.getMessage() for r in caplog.records)
        async with client_of(server.port, client_context(new_ca)) as client:
            await client.send(GET)
            assert (await client.response()).status == 200


async def test_handshakes_count_and_shut_down(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA
) -> None:
    async with serve(echo_request, max_connections=2, **certfiles) as server:
        sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        state = server._state
        async with asyncio.timeout(READ_TIMEOUT):
            while len(state.connections) < 2:
                await asyncio.sleep(0.01)
        assert all(isinstance(p, FrontProtocol) for p in state.connections)
        # a third connection is past max_connections: closed, no handshake
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        async with asyncio.timeout(READ_TIMEOUT):
            assert await reader.read() == b""
        writer.close()
        for sock in sockets:
            sock.close()
        async with asyncio.timeout(READ_TIMEOUT):
            while state.connections:
                await asyncio.sleep(0.01)
        held = socket.create_connection(("127.0.0.1", server.port))
        async with asyncio.timeout(READ_TIMEOUT):
            while not state.connections:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(server.shutdown(timeout=1), READ_TIMEOUT)
        held.settimeout(READ_TIMEOUT)
        assert held.recv(10) == b""
        held.close()


async def test_resets_at_every_stage_leave_nothing(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA
) -> None:
    context = client_context(ca)

    async def slow_stream(request: aserve.Request) -> aserve.Response:
        async def chunks() -> AsyncIterator[bytes]:
            while True:
                yield b"x" * 65536
                await asyncio.sleep(0)

        return aserve.StreamingResponse(chunks())

    def reset(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()

    async with serve(slow_stream, **certfiles) as server:
        state = server._state
        for i in range(200):
            stage = i % 4
            if stage == 0:  # mid-handshake
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                reset(sock)
                continue
            client = await tls_client(server.port, context)
            sock = client.writer.get_extra_info("socket")
            if stage == 1:  # mid-head
                await client.send(b"GET / HTTP/1.1\r\nHo")
            elif stage == 2:  # mid-body
                await client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\nab")
            else:  # mid-stream
                await client.send(GET)
                await client.next_event()
            raw = socket.socket(fileno=os.dup(sock.fileno()))
            reset(raw)
            client.writer.transport.abort()
        async with asyncio.timeout(10):
            while state.connections:
                await asyncio.sleep(0.02)
        async with client_of(server.port, context) as client:
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            event = await client.next_event()
            assert getattr(event, "status_code", None) == 200
            client.writer.transport.abort()  # the stream is endless


async def test_pipelined_requests_over_tls(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA
) -> None:
    async with serve(echo_request, **certfiles) as server:
        async with client_of(server.port, client_context(ca)) as client:
            await client.send(GET * 20 + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await client.read_until_close()
            assert len(replies_of(client.received)) == 21 or data == b""


def replies_of(received: bytearray) -> list[Any]:
    from conftest import parse_events

    return replies(parse_events(bytes(received), ["GET"] * 21))


async def test_closed_connections_are_freed_without_the_cycle_collector(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA
) -> None:
    import gc

    context = client_context(ca)
    async with serve(echo_request, **certfiles) as server:
        gc.collect()
        gc.disable()
        try:
            for _ in range(30):
                async with client_of(server.port, context) as client:
                    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    await client.response()
                    await client.read_until_close()
            async with asyncio.timeout(READ_TIMEOUT):
                while server._state.connections:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            alive = [o for o in gc.get_objects() if isinstance(o, FrontProtocol)]
            assert len(alive) <= 1, f"{len(alive)} FrontProtocol objects wait for the collector"
        finally:
            gc.enable()


async def test_asgi_and_wsgi_see_https_and_the_client_certificate(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA, tmp_path: Path
) -> None:
    from aserve.asgi import ASGIHandler
    from aserve.wsgi import WSGIHandler

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        tls = scope["extensions"].get("tls")
        body = json.dumps({"scheme": scope["scheme"], "tls": tls}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        keys = ("wsgi.url_scheme", "HTTPS", "SSL_PROTOCOL", "SSL_CLIENT_VERIFY", "SSL_CLIENT_S_DN")
        seen = {k: environ.get(k) for k in keys}
        seen["pem"] = environ.get("SSL_CLIENT_CERT", "")[:27]
        return [json.dumps(seen).encode()]

    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with_cert = client_context(ca)
    ca.issue_cert("bob@example.org").configure_cert(with_cert)
    options = dict(certfiles, ssl_ca_certs=str(ca_file), ssl_cert_reqs="optional")
    async with serve(ASGIHandler(asgi_app, lifespan="off"), **options) as server:
        async with client_of(server.port, with_cert) as client:
            await client.send(GET)
            seen = json.loads((await client.response()).body)
        assert seen["scheme"] == "https"
        tls = seen["tls"]
        assert tls["tls_version"] in (0x0303, 0x0304)
        assert isinstance(tls["cipher_suite"], int)
        assert tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----")
        assert "O=trustme" in tls["client_cert_name"] and tls["client_cert_error"] is None
    async with serve(WSGIHandler(wsgi_app), **options) as server:
        async with client_of(server.port, with_cert) as client:
            await client.send(GET)
            seen = json.loads((await client.response()).body)
        assert seen["wsgi.url_scheme"] == "https" and seen["HTTPS"] == "on"
        assert seen["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3")
        assert seen["SSL_CLIENT_VERIFY"] == "SUCCESS" and "O=trustme" in seen["SSL_CLIENT_S_DN"]
        assert seen["pem"] == "-----BEGIN CERTIFICATE-----"
        async with client_of(server.port, client_context(ca)) as client:
            await client.send(GET)
            seen = json.loads((await client.response()).body)
        assert seen["SSL_CLIENT_VERIFY"] == "NONE" and seen["SSL_CLIENT_S_DN"] is None


async def test_access_log_and_metrics_over_tls(
    serve: Any, certfiles: dict[str, str], ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    # The front hands over to the metered protocol when an observer is on.
    caplog.set_level(logging.INFO, "aserve.access")
    options = dict(certfiles, access_log=True, metrics_path="/metrics")
    async with serve(echo_request, **options) as server:
        async with client_of(server.port, client_context(ca)) as client:
            await client.send(GET)
            reply = await client.response()
            await client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            metrics = (await client.response()).body.decode()
        async with asyncio.timeout(READ_TIMEOUT):
            while not any(r.name == "aserve.access" for r in caplog.records):
                await asyncio.sleep(0.01)
    line = next(r.getMessage() for r in caplog.records if r.name == "aserve.access")
    assert '"GET / HTTP/1.1" 200 ' in line
    sent = int(line.split('" 200 ', 1)[1].split()[0])
    assert sent > len(reply.body)  # the plaintext written, head included
    assert 'aserve_requests_total{method="GET",status="2xx"} 1' in metrics
    assert f"aserve_response_bytes_total {sent}" in metrics
