"""Middleware: ordering, and the shipped CORS, gzip, request-id and Basic auth."""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator

import pytest
from conftest import ConnectFactory, ServeFactory

import aserve
from aserve.app import CallNext
from aserve.middleware import (
    BasicAuthMiddleware,
    CORSMiddleware,
    GZipMiddleware,
    RequestIdMiddleware,
    basic_auth_users,
)
from aserve.testing import TestClient

TEXT = "All work and no play makes Jack a dull boy. " * 40


def base_app() -> aserve.App:
    app = aserve.App()

    @app.get("/")
    async def home(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("home")

    @app.get("/big")
    async def big(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(TEXT, headers={"etag": '"v1"'})

    @app.get("/png")
    async def png(request: aserve.Request) -> aserve.Response:
        return aserve.Response(b"\x89PNG" * 1000, media_type="image/png")

    @app.get("/stream")
    async def stream(request: aserve.Request) -> aserve.Response:
        async def produce() -> AsyncIterator[str]:
            for _ in range(10):
                yield TEXT

        return aserve.StreamingResponse(produce(), media_type="text/plain")

    @app.post("/items")
    async def items(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse({"ok": True}, status=201)

    @app.get("/whoami")
    async def whoami(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(request.state.get("user", "-"))

    return app


async def test_middleware_runs_outermost_first_and_as_a_decorator() -> None:
    app = base_app()
    order: list[str] = []

    @app.middleware
    async def outer(request: aserve.Request, call_next: CallNext) -> aserve.Response:
        order.append("outer in")
        response = await call_next(request)
        order.append("outer out")
        return response

    @app.middleware("http")
    async def inner(request: aserve.Request, call_next: CallNext) -> aserve.Response:
        order.append("inner in")
        response = await call_next(request)
        response.headers["x-inner"] = "1"
        order.append("inner out")
        return response

    async with TestClient(app) as client:
        response = await client.get("/")
    assert order == ["outer in", "inner in", "inner out", "outer out"]
    assert response.headers["x-inner"] == "1"


async def test_middleware_can_answer_without_calling_the_app() -> None:
    app = base_app()

    async def maintenance(request: aserve.Request, call_next: CallNext) -> aserve.Response:
        return aserve.PlainTextResponse("down for maintenance", status=503)

    app.middleware(maintenance)
    async with TestClient(app) as client:
        response = await client.get("/")
    assert (response.status_code, response.text) == (503, "down for maintenance")


# -- CORS --------------------------------------------------------------------


def cors_app(**options: object) -> aserve.App:
    app = base_app()
    app.middleware(CORSMiddleware(**options))  # type: ignore[arg-type]
    return app


async def test_cors_simple_request_gets_allow_origin() -> None:
    app = cors_app(allow_origins=["https://a.example"], expose_headers=["X-Total"])
    async with TestClient(app) as client:
        allowed = await client.get("/", headers={"origin": "https://a.example"})
        other = await client.get("/", headers={"origin": "https://evil.example"})
        none = await client.get("/")
    assert allowed.headers["access-control-allow-origin"] == "https://a.example"
    assert allowed.headers["access-control-expose-headers"] == "X-Total"
    assert allowed.headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in none.headers


async def test_cors_wildcard_and_credentials() -> None:
    async with TestClient(cors_app(allow_origins=["*"])) as client:
        star = await client.get("/", headers={"origin": "https://x.example"})
    assert star.headers["access-control-allow-origin"] == "*"
    app = cors_app(allow_origins=["*"], allow_credentials=True)
    async with TestClient(app) as client:
        echoed = await client.get("/", headers={"origin": "https://x.example"})
    assert echoed.headers["access-control-allow-origin"] == "https://x.example"
    assert echoed.headers["access-control-allow-credentials"] == "true"


async def test_cors_preflight_is_answered_before_the_app() -> None:
    app = cors_app(
        allow_origin_regex=r"https://.*\.example",
        allow_methods=["GET", "POST"],
        allow_headers=["X-Token"],
        max_age=60,
    )
    preflight = {
        "origin": "https://b.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "X-Token, Content-Type",
    }
    async with TestClient(app) as client:
        ok = await client.options("/items", headers=preflight)
        bad_method = await client.options(
            "/items", headers={**preflight, "access-control-request-method": "DELETE"}
        )
        bad_header = await client.options(
            "/items", headers={**preflight, "access-control-request-headers": "X-Other"}
        )
        bad_origin = await client.options(
            "/items", headers={**preflight, "origin": "https://b.evil"}
        )
        plain_options = await client.options("/items")
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://b.example"
    assert ok.headers["access-control-allow-methods"] == "GET, POST"
    assert ok.headers["access-control-allow-headers"] == "x-token, content-type"
    assert ok.headers["access-control-max-age"] == "60"
    assert (bad_method.status_code, bad_method.text) == (400, "Disallowed CORS method\n")
    assert bad_header.text == "Disallowed CORS headers\n"
    assert bad_origin.text == "Disallowed CORS origin\n"
    assert plain_options.headers["allow"] == "POST, OPTIONS"  # the App's own OPTIONS


async def test_cors_headers_on_error_answers() -> None:
    app = cors_app(allow_origins=["https://a.example"])
    async with TestClient(app) as client:
        response = await client.get("/missing", headers={"origin": "https://a.example"})
    assert response.status_code == 404
    assert response.headers["access-control-allow-origin"] == "https://a.example"


# -- gzip --------------------------------------------------------------------


def gzip_app() -> aserve.App:
    app = base_app()
    app.middleware(GZipMiddleware(minimum_size=500))
    return app


async def test_gzip_when_accepted_and_worth_it(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(gzip_app()) as server:
        client = await connect(server.port)
        await client.send(b"GET /big HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br, gzip\r\n\r\n")
        big = await client.response()
        await client.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        plain = await client.response()
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        small = await client.response()
        await client.send(b"GET /png HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        png = await client.response()
        await client.send(b"GET /big HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip;q=0\r\n\r\n")
        refused = await client.response()
    assert big.header("content-encoding") == "gzip"
    assert gzip.decompress(big.body).decode() == TEXT
    assert big.header("content-length") == str(len(big.body))
    assert len(big.body) < len(TEXT) / 10
    assert big.header("vary") == "Accept-Encoding"
    assert big.header("etag") == 'W/"v1"'
    assert plain.header("content-encoding") is None
    assert plain.body.decode() == TEXT
    assert plain.header("vary") == "Accept-Encoding"
    assert small.header("content-encoding") is None
    assert png.header("content-encoding") is None and png.header("vary") is None
    assert refused.header("content-encoding") is None


async def test_gzip_streams_chunk_by_chunk(serve: ServeFactory, connect: ConnectFactory) -> None:
    async with serve(gzip_app()) as server:
        client = await connect(server.port)
        await client.send(b"GET /stream HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        reply = await client.response()
    assert reply.header("content-encoding") == "gzip"
    assert reply.header("content-length") is None
    assert reply.header("transfer-encoding") == "chunked"
    assert gzip.decompress(reply.body).decode() == TEXT * 10


async def test_gzip_leaves_event_streams_alone() -> None:
    app = gzip_app()

    @app.get("/events")
    async def events(request: aserve.Request) -> aserve.Response:
        return aserve.EventSourceResponse(["x" * 1000], ping_interval=None)

    async with TestClient(app) as client:
        response = await client.get("/events", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in response.headers


# -- request id --------------------------------------------------------------


async def test_request_id_generated_or_taken_from_the_client() -> None:
    app = base_app()
    app.middleware(RequestIdMiddleware())

    @app.get("/id")
    async def show(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(request.state.request_id)

    async with TestClient(app) as client:
        fresh = await client.get("/id")
        given = await client.get("/id", headers={"x-request-id": "abc-123"})
        hostile = await client.get("/id", headers={"x-request-id": "a b<script>"})
    assert len(fresh.text) == 32 and fresh.headers["x-request-id"] == fresh.text
    assert given.text == "abc-123" and given.headers["x-request-id"] == "abc-123"
    assert hostile.text != "a b<script>" and len(hostile.text) == 32


# -- Basic auth --------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


async def test_basic_auth() -> None:
    app = base_app()
    app.middleware(
        BasicAuthMiddleware(basic_auth_users({"ann": "s3cret"}), realm="staff", exclude=["/"])
    )
    async with TestClient(app) as client:
        good = await client.get("/whoami", headers=basic("ann", "s3cret"))
        wrong = await client.get("/whoami", headers=basic("ann", "nope"))
        unknown = await client.get("/whoami", headers=basic("bob", "s3cret"))
        missing = await client.get("/whoami")
        garbage = await client.get("/whoami", headers={"authorization": "Basic !!!"})
        no_colon = await client.get(
            "/whoami", headers={"authorization": "Basic " + base64.b64encode(b"ann").decode()}
        )
        bearer = await client.get("/whoami", headers={"authorization": "Bearer x"})
        excluded = await client.get("/")
    assert (good.status_code, good.text) == (200, "ann")
    for response in (wrong, unknown, missing, garbage, no_colon, bearer):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Basic realm="staff", charset="UTF-8"'
    assert excluded.text == "home"


async def test_basic_auth_with_an_async_check() -> None:
    async def check(user: str, password: str) -> bool:
        return user == "svc" and password == "token"

    app = base_app()
    app.middleware(BasicAuthMiddleware(check))
    async with TestClient(app) as client:
        assert (await client.get("/whoami", headers=basic("svc", "token"))).text == "svc"
        assert (await client.get("/whoami", headers=basic("svc", "x"))).status_code == 401


def test_basic_auth_users_checks_user_and_password() -> None:
    check = basic_auth_users({"ann": "s3cret"})
    assert check("ann", "s3cret")
    assert not check("ann", "s3cre")
    assert not check("nobody", "\0" * 32)  # the dummy password of unknown users


def test_middleware_options_are_checked() -> None:
    with pytest.raises(TypeError):
        CORSMiddleware(allow_origins="https://a.example")
    with pytest.raises(ValueError):
        GZipMiddleware(compresslevel=12)
    with pytest.raises(ValueError):
        BasicAuthMiddleware(basic_auth_users({}), realm='a"b')
    with pytest.raises(TypeError):
        aserve.App().middleware(42)  # type: ignore[call-overload]
