"""Behind a proxy, on a real socket: proxy headers from trusted peers only, the
PROXY protocol (v1 and v2, before TLS too), and the root path a proxy adds."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import READ_TIMEOUT, RawClient

import aserve
from aserve.asgi import ASGIHandler
from aserve.wsgi import WSGIHandler

pytestmark = pytest.mark.timeout(30)


async def who(request: aserve.Request) -> aserve.Response:
    return aserve.JSONResponse(
        {
            "client": list(request.client) if request.client else None,
            "scheme": request.scheme,
            "host": request.headers.get("host"),
            "root_path": request.root_path,
        }
    )


async def ask(port: int, head: bytes, prefix: bytes = b"") -> dict[str, Any]:
    client = await RawClient.connect(port)
    try:
        await client.send(prefix + b"GET /x HTTP/1.1\r\n" + head + b"\r\n")
        reply = await client.response()
    finally:
        await client.close()
    assert reply.status == 200, reply
    result: dict[str, Any] = json.loads(reply.body)
    return result


# --------------------------------------------------------------------------- headers


async def test_forwarded_headers_from_a_trusted_proxy(serve: Any) -> None:
    async with serve(who, proxy_headers=True) as server:
        seen = await ask(
            server.port,
            b"Host: internal:8000\r\nX-Forwarded-For: 203.0.113.7\r\n"
            b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: example.org\r\n",
        )
        assert seen == {
            "client": ["203.0.113.7", 0],
            "scheme": "https",
            "host": "example.org",
            "root_path": "",
        }
        seen = await ask(
            server.port,
            b'Host: internal\r\nForwarded: for="[2001:db8::1]:4711";proto=https;host=a.example\r\n',
        )
        assert seen["client"] == ["2001:db8::1", 0]
        assert seen["scheme"] == "https" and seen["host"] == "a.example"


async def test_spoofed_entries_left_of_the_proxy_are_not_believed(serve: Any) -> None:
    async with serve(who, proxy_headers=True, forwarded_allow_ips="127.0.0.1,10.0.0.0/8") as s:
        # The client wrote "1.1.1.1" itself; the trusted chain added the rest.
        seen = await ask(s.port, b"Host: x\r\nX-Forwarded-For: 1.1.1.1, 198.51.100.9, 10.0.0.5\r\n")
        assert seen["client"] == ["198.51.100.9", 0]


async def test_untrusted_peer_and_feature_off_change_nothing(serve: Any) -> None:
    head = b"Host: x\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
    async with serve(who, proxy_headers=True, forwarded_allow_ips="10.0.0.1") as server:
        seen = await ask(server.port, head)
        assert seen["client"][0] == "127.0.0.1" and seen["scheme"] == "http"
    async with serve(who) as server:
        seen = await ask(server.port, head)
        assert seen["client"][0] == "127.0.0.1" and seen["scheme"] == "http"


async def test_asgi_and_wsgi_see_what_the_proxy_says(serve: Any) -> None:
    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        body = json.dumps(
            {"client": scope["client"], "scheme": scope["scheme"], "root": scope["root_path"]}
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        keys = ("REMOTE_ADDR", "wsgi.url_scheme", "SCRIPT_NAME", "HTTP_HOST")
        return [json.dumps({k: environ[k] for k in keys}).encode()]

    head = b"Host: x\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
    head += b"X-Forwarded-Host: shop.example\r\n"
    options = {"proxy_headers": True, "root_path": "/api"}
    async with serve(ASGIHandler(asgi_app, lifespan="off"), **options) as server:
        seen = await ask(server.port, head)
        assert seen == {"client": ["203.0.113.7", 0], "scheme": "https", "root": "/api"}
    async with serve(WSGIHandler(wsgi_app), **options) as server:
        seen = await ask(server.port, head)
        assert seen == {
            "REMOTE_ADDR": "203.0.113.7",
            "wsgi.url_scheme": "https",
            "SCRIPT_NAME": "/api",
            "HTTP_HOST": "shop.example",
        }


async def test_root_path(serve: Any) -> None:
    async with serve(who, root_path="/api") as server:
        assert (await ask(server.port, b"Host: x\r\n"))["root_path"] == "/api"


# --------------------------------------------------------------------------- PROXY protocol


def v2_header(source: tuple[str, int], destination: tuple[str, int], command: int = 1) -> bytes:
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    if command == 0:
        return signature + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    block = socket.inet_aton(source[0]) + socket.inet_aton(destination[0])
    block += struct.pack("!HH", source[1], destination[1])
    return signature + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


async def test_proxy_protocol_v1_and_v2(serve: Any) -> None:
    async with serve(who, proxy_protocol=True) as server:
        v1 = b"PROXY TCP4 192.0.2.10 192.0.2.1 56324 443\r\n"
        seen = await ask(server.port, b"Host: x\r\n", prefix=v1)
        assert seen["client"] == ["192.0.2.10", 56324]
        v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n"
        assert (await ask(server.port, b"Host: x\r\n", prefix=v6))["client"] == [
            "2001:db8::7",
            4000,
        ]
        v2 = v2_header(("198.51.100.3", 4242), ("198.51.100.1", 80))
        assert (await ask(server.port, b"Host: x\r\n", prefix=v2))["client"] == [
            "198.51.100.3",
            4242,
        ]
        local = v2_header(("0.0.0.0", 0), ("0.0.0.0", 0), command=0)
        assert (await ask(server.port, b"Host: x\r\n", prefix=local))["client"][0] == "127.0.0.1"
        unknown = b"PROXY UNKNOWN\r\n"
        assert (await ask(server.port, b"Host: x\r\n", prefix=unknown))["client"][0] == "127.0.0.1"


async def test_proxy_protocol_byte_by_byte_then_keep_alive(serve: Any) -> None:
    async with serve(who, proxy_protocol=True) as server:
        client = await RawClient.connect(server.port)
        for byte in b"PROXY TCP4 192.0.2.10 192.0.2.1 5 80\r\n":
            await client.send(bytes([byte]))
        for _ in range(3):
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert json.loads((await client.response()).body)["client"] == ["192.0.2.10", 5]
        await client.close()


@pytest.mark.parametrize(
    ("options", "prefix", "logged"),
    [
        ({"forwarded_allow_ips": "10.0.0.1"}, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "trusted"),
        ({}, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "PROXY protocol"),
        ({}, b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "PROXY protocol"),
        ({"header_timeout": 0.3}, b"PROXY TCP4 1.2", "header_timeout"),
    ],
)
async def test_proxy_protocol_refusals(
    serve: Any,
    caplog: pytest.LogCaptureFixture,
    options: dict[str, Any],
    prefix: bytes,
    logged: str,
) -> None:
    caplog.set_level(logging.INFO, "aserve.error")
    async with serve(who, proxy_protocol=True, **options) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(prefix)
        async with asyncio.timeout(READ_TIMEOUT):
            assert await reader.read() == b""  # closed, no HTTP answer
        writer.close()
        lines = [r.getMessage() for r in caplog.records if r.name == "aserve.error"]
        assert len(lines) == 1 and logged in lines[0] and "127.0.0.1" in lines[0], lines
        good = b"PROXY TCP4 192.0.2.10 192.0.2.1 5 80\r\n"
        if "forwarded_allow_ips" not in options:
            assert (await ask(server.port, b"Host: x\r\n", prefix=good))["client"][
                0
            ] == "192.0.2.10"


async def test_proxy_protocol_before_tls(serve: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    certfile, keyfile = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with serve(
        who, proxy_protocol=True, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(v2_header(("203.0.113.50", 999), ("203.0.113.1", 443)))
        await writer.drain()
        async with asyncio.timeout(READ_TIMEOUT):
            await writer.start_tls(context, server_hostname="localhost")
        client = RawClient(reader, writer)
        await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        seen = json.loads((await client.response()).body)
        assert seen["client"] == ["203.0.113.50", 999] and seen["scheme"] == "https"
        await client.close()


async def test_proxy_protocol_with_proxy_headers(serve: Any) -> None:
    # The PROXY header names the proxy's client, a trusted load balancer; its
    # X-Forwarded-For then names the real client.
    async with serve(
        who, proxy_protocol=True, proxy_headers=True, forwarded_allow_ips="127.0.0.1,10.0.0.0/8"
    ) as server:
        seen = await ask(
            server.port,
            b"Host: x\r\nX-Forwarded-For: 203.0.113.9\r\n",
            prefix=b"PROXY TCP4 10.1.1.1 10.0.0.2 5 80\r\n",
        )
        assert seen["client"] == ["203.0.113.9", 0]


async def test_static_files_under_a_root_path_kept_or_stripped(serve: Any, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "page.txt").write_text("page")
    async with serve(aserve.StaticFiles(tmp_path), root_path="/api") as server:
        for path in (b"/api/sub/page.txt", b"/sub/page.txt"):  # prefix kept, or stripped
            client = await RawClient.connect(server.port)
            await client.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = await client.response()
            assert (reply.status, reply.body) == (200, b"page"), path
            await client.send(b"GET " + path.rsplit(b"/", 1)[0] + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = await client.response()
            assert reply.status == 301 and reply.header("location") == "/api/sub/", path
            await client.close()
