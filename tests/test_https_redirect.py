"""HTTPSRedirectMiddleware: 308 to https for plain HTTP, HSTS on HTTPS answers only,
the scheme a trusted proxy announces believed; over real sockets and the command."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme
from conftest import (
    READ_TIMEOUT,
    ConnectFactory,
    ServeFactory,
    Start,
    parse_events,
    replies,
    run_aserve,
)

import aserve
from aserve.middleware import HTTPSRedirectMiddleware, hsts_value


def make_app(**options: object) -> aserve.App:
    app = aserve.App()
    app.middleware(HTTPSRedirectMiddleware(**options))  # type: ignore[arg-type]

    @app.route("/{rest:path}", methods=["GET", "POST"])
    async def echo(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(f"{request.method} {request.url}")

    @app.get("/")
    async def home(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("home")

    return app


async def test_plain_http_gets_308_to_the_https_url(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(make_app(hsts=31536000)) as server:
        client = await connect(server.port)
        await client.send(b"GET /a/b%20c?x=1&y=2 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
        get = await client.response()
        await client.send(
            b"POST /form HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc"
        )
        post = await client.response()
        await client.send(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
        ipv6 = await client.response()
    assert get.status == 308
    assert get.header("location") == "https://example.com/a/b%20c?x=1&y=2"
    assert get.header("strict-transport-security") is None  # never over plain HTTP
    assert post.status == 308  # 308: the client repeats the POST, body and all
    assert post.header("location") == "https://example.com/form"
    assert ipv6.header("location") == "https://[::1]/"


async def test_https_port_and_exclusions(serve: ServeFactory, connect: ConnectFactory) -> None:
    app = make_app(https_port=8443, exclude=["/healthz", "/.well-known/"], status=301)
    async with serve(app) as server:
        client = await connect(server.port)
        await client.send(b"GET /page HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
        moved = await client.response()
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: example.com\r\n\r\n")
        health = await client.response()
        await client.send(b"GET /.well-known/acme/x HTTP/1.1\r\nHost: example.com\r\n\r\n")
        acme = await client.response()
    assert moved.status == 301
    assert moved.header("location") == "https://example.com:8443/page"
    assert (health.status, health.body) == (200, b"GET http://example.com/healthz")
    assert acme.status == 200


async def test_a_request_without_host_cannot_be_redirected(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(make_app()) as server:
        client = await connect(server.port)
        await client.send(b"GET / HTTP/1.0\r\n\r\n")
        reply = await client.response()
    assert reply.status == 400


@pytest.mark.parametrize(("trusted", "redirected"), [("127.0.0.1", False), ("10.0.0.1", True)])
async def test_the_scheme_a_trusted_proxy_announces(
    serve: ServeFactory, connect: ConnectFactory, trusted: str, redirected: bool
) -> None:
    app = make_app(hsts="max-age=63072000; includeSubDomains; preload")
    options = {"proxy_headers": True, "forwarded_allow_ips": trusted}
    async with serve(app, **options) as server:
        client = await connect(server.port)
        await client.send(
            b"GET /x HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-Proto: https\r\n\r\n"
        )
        behind = await client.response()
        await client.send(
            b"GET /x HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-Proto: http\r\n\r\n"
        )
        plain = await client.response()
    assert plain.status == 308
    if redirected:  # the peer is no trusted proxy: its header is not believed
        assert behind.status == 308
    else:
        assert (behind.status, behind.body) == (200, b"GET https://example.com/x")
        assert behind.header("strict-transport-security") == (
            "max-age=63072000; includeSubDomains; preload"
        )


async def test_over_tls_the_answer_carries_hsts(serve: ServeFactory, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with serve(
        make_app(hsts=600), ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)
    ) as server:
        async with asyncio.timeout(READ_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=context, server_hostname="localhost"
            )
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = await reader.read()
        writer.close()
    [reply] = replies(parse_events(data))
    assert (reply.status, reply.body) == (200, b"home")
    assert reply.header("strict-transport-security") == "max-age=600"


def test_option_values_are_checked() -> None:
    assert hsts_value(0) == "max-age=0"
    assert hsts_value("86400") == "max-age=86400"
    assert hsts_value("max-age=1; includesubdomains") == "max-age=1; includesubdomains"
    for bad in ("soon", "max-age=-1", "max-age=5; evil=1", "max-age=1\r\nX: y"):
        with pytest.raises(ValueError):
            hsts_value(bad)
    with pytest.raises(ValueError):
        HTTPSRedirectMiddleware(status=200)
    with pytest.raises(ValueError):
        HTTPSRedirectMiddleware(https_port=70000)


# --------------------------------------------------------------------------- the command


def test_https_redirect_through_the_command(tmp_path: Path, start: Start) -> None:
    (tmp_path / "index.html").write_text("<p>home</p>")
    server = start("--port", "0", "--https-redirect", "--hsts", "3600", "--proxy-headers")
    moved = server.get("/index.html?x=1", headers={"Host": "example.com"})
    assert moved.status == 308
    assert moved.getheader("location") == "https://example.com/index.html?x=1"
    assert moved.getheader("strict-transport-security") is None
    behind = server.get("/", headers={"Host": "example.com", "X-Forwarded-Proto": "https"})
    assert behind.status == 200
    assert behind.getheader("strict-transport-security") == "max-age=3600"
    assert server.stop()[0] == 0


def test_hsts_alone_through_the_command(tmp_path: Path, start: Start) -> None:
    server = start("--port", "0", "--hsts", "max-age=60; includeSubDomains", "--proxy-headers")
    assert server.get("/").status == 200  # no redirect without --https-redirect
    behind = server.get("/", headers={"X-Forwarded-Proto": "https"})
    assert behind.getheader("strict-transport-security") == "max-age=60; includeSubDomains"
    assert server.stop()[0] == 0


def test_a_bad_hsts_value_is_one_line(tmp_path: Path) -> None:
    result = run_aserve("--https-redirect", "--hsts", "forever", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aserve: error: --hsts: ")
