"""Request: query, cookies, url, path decoding, body helpers, state, and bad input -> 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import ConnectFactory, ServeFactory

import aserve
from aserve.datastructures import MultiDict, State, parse_cookies, parse_query
from aserve.testing import TestClient


def describe_app() -> aserve.App:
    app = aserve.App()

    @app.route("/describe/{rest:path}", methods=["GET", "POST"])
    async def describe(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse(
            {
                "method": request.method,
                "path": request.path,
                "raw_path": request.raw_path.decode("latin-1"),
                "query": request.query.multi_items(),
                "first_a": request.query.get("a"),
                "all_a": request.query.getall("a"),
                "cookies": request.cookies,
                "url": request.url,
                "url_path": request.url.path,
                "scheme": request.scheme,
                "http_version": request.http_version,
                "client_host": request.client[0] if request.client else None,
                "params": request.path_params,
            }
        )

    @app.post("/text")
    async def text(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(await request.text())

    @app.post("/json")
    async def json_body(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse({"got": await request.json()})

    @app.post("/stream")
    async def stream(request: aserve.Request) -> aserve.Response:
        sizes = [len(chunk) async for chunk in request.stream()]
        return aserve.JSONResponse({"total": sum(sizes)})

    @app.get("/query")
    async def query(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse(request.query.multi_items())

    @app.get("/url")
    async def url(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(request.url)

    return app


async def test_request_head_in_full() -> None:
    cookies = {"session": "abc", "theme": "dark"}
    async with TestClient(describe_app(), cookies=cookies) as client:
        response = await client.get("/describe/a%20b/c?a=1&b=x+y&a=%C3%A9&empty=&flag")
    data = response.json()
    assert data["path"] == "/describe/a b/c"
    assert data["raw_path"] == "/describe/a%20b/c"
    assert data["query"] == [["a", "1"], ["b", "x y"], ["a", "é"], ["empty", ""], ["flag", ""]]
    assert data["first_a"] == "1"
    assert data["all_a"] == ["1", "é"]
    assert data["cookies"] == {"session": "abc", "theme": "dark"}
    assert data["url"].startswith("http://127.0.0.1:")
    assert data["url"].endswith("/describe/a%20b/c?a=1&b=x+y&a=%C3%A9&empty=&flag")
    assert data["url_path"] == "/describe/a%20b/c"
    assert data["scheme"] == "http"
    assert data["http_version"] == "1.1"
    assert data["client_host"] == "127.0.0.1"
    assert data["params"] == {"rest": "a b/c"}


async def test_text_uses_the_charset_of_content_type() -> None:
    async with TestClient(describe_app()) as client:
        latin = await client.post(
            "/text",
            content="café".encode("latin-1"),
            headers={"content-type": "text/plain; charset=ISO-8859-1"},
        )
        default = await client.post("/text", content="café".encode())
    assert latin.text == "café"
    assert default.text == "café"


async def test_json_and_stream() -> None:
    async with TestClient(describe_app()) as client:
        parsed = await client.post("/json", json={"a": [1, 2, None]})
        streamed = await client.post("/stream", content=b"x" * 300_000)
    assert parsed.json() == {"got": {"a": [1, 2, None]}}
    assert streamed.json() == {"total": 300_000}


BAD_BODIES = [
    ("/json", b"{not json", {}, "Malformed JSON body"),
    ("/json", b"", {}, "Malformed JSON body"),
    ("/json", b"[" * 100_000, {}, "Malformed JSON body"),
    ("/json", b'"\xff\xfe"', {}, "Malformed JSON body"),
    ("/text", b"\xff\xfe", {}, "Body is not valid utf-8"),
    ("/text", b"abc", {"content-type": "text/plain; charset=nope"}, "Unknown charset"),
    ("/text", b"abc", {"content-type": "text/plain; charset=base64"}, "charset"),
    ("/text", b"\xff", {"content-type": "text/plain; charset=ascii"}, "not valid ascii"),
]


@pytest.mark.parametrize(("path", "body", "headers", "reason"), BAD_BODIES)
async def test_malformed_bodies_are_400_with_a_reason(
    path: str, body: bytes, headers: dict[str, str], reason: str
) -> None:
    async with TestClient(describe_app()) as client:
        response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 400
    assert reason in response.text
    assert len(response.text) < 200


BAD_HEADS = [
    # Percent-encoding that decodes to bytes that are not UTF-8.
    (b"GET /describe/%ff HTTP/1.1\r\nHost: t\r\n\r\n", 400, b"Malformed path"),
    (b"GET /query?a=%ff%fe HTTP/1.1\r\nHost: t\r\n\r\n", 400, b"Malformed query string"),
    (b"GET /query?%C3=1 HTTP/1.1\r\nHost: t\r\n\r\n", 400, b"Malformed query string"),
    (b"GET /url HTTP/1.1\r\nHost: evil.com/x@y\r\n\r\n", 400, b"Malformed Host header"),
]


@pytest.mark.parametrize(("request_bytes", "status", "reason"), BAD_HEADS)
async def test_malformed_heads_are_400_never_500(
    serve: ServeFactory,
    connect: ConnectFactory,
    request_bytes: bytes,
    status: int,
    reason: bytes,
) -> None:
    async with serve(describe_app()) as server:
        client = await connect(server.port)
        await client.send(request_bytes)
        reply = await client.response()
    assert reply.status == status
    assert reason in reply.body


async def test_lenient_where_browsers_are(serve: ServeFactory, connect: ConnectFactory) -> None:
    async with serve(describe_app()) as server:
        client = await connect(server.port)
        # A malformed escape stays as it is; odd cookies are skipped, not fatal.
        await client.send(
            b"GET /describe/x?a=%zz&&b=%4 HTTP/1.1\r\nHost: t\r\n"
            b'Cookie: good=1; junk; =x; q="quoted"; good=2\r\n\r\n'
        )
        reply = await client.response()
    assert reply.status == 200
    data = json.loads(reply.body)
    assert data["query"] == [["a", "%zz"], ["b", "%4"]]
    assert data["cookies"] == {"good": "1", "q": "quoted"}


def test_parse_query_table() -> None:
    assert parse_query(b"") == []
    assert parse_query(b"a") == [("a", "")]
    assert parse_query(b"a=1=2") == [("a", "1=2")]
    assert parse_query(b"%2B=%26") == [("+", "&")]
    with pytest.raises(aserve.BadRequest, match="Too many"):
        parse_query(b"a&b&c", max_fields=2)


def test_parse_cookies_table() -> None:
    assert parse_cookies("") == {}
    assert parse_cookies("a=1;b=2") == {"a": "1", "b": "2"}
    assert parse_cookies(" a = 1 ") == {"a": "1"}
    assert parse_cookies('a=""') == {"a": ""}


def test_multidict() -> None:
    d: MultiDict[Any] = MultiDict([("a", 1), ("b", 2), ("a", 3)])
    assert d["a"] == 1
    assert d.getall("a") == [1, 3]
    assert list(d) == ["a", "b"]
    assert len(d) == 2
    assert "b" in d and "c" not in d
    assert d.get("c", 0) == 0
    assert d == MultiDict([("a", 1), ("a", 3), ("b", 2)])
    assert dict(d) == {"a": 1, "b": 2}


def test_state_is_attributes_and_items() -> None:
    state = State()
    state.user = "ann"
    assert state["user"] == "ann"
    state["role"] = "admin"
    assert state.role == "admin"
    assert "role" in state
    with pytest.raises(AttributeError):
        state.missing  # noqa: B018
    del state.role
    assert state.get("role") is None


async def test_state_is_per_request() -> None:
    app = aserve.App()

    @app.middleware
    async def tag(request: aserve.Request, call_next: aserve.app.CallNext) -> aserve.Response:
        assert "user" not in request.state
        request.state.user = request.headers.get("x-user", "anon")
        return await call_next(request)

    @app.get("/")
    async def home(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(request.state.user)

    async with TestClient(app) as client:
        assert (await client.get("/", headers={"x-user": "ann"})).text == "ann"
        assert (await client.get("/")).text == "anon"


def test_request_built_from_bytes_alone() -> None:
    request = aserve.Request(b"GET", b"/a%2Fb?x=1", [(b"host", b"example.com:8080")])
    assert request.path == "/a/b"
    assert request.query["x"] == "1"
    assert request.url == "http://example.com:8080/a%2Fb?x=1"
    assert request.url.port == 8080
    assert request.cookies == {}


def test_url_of_an_absolute_form_target() -> None:
    request = aserve.Request(b"GET", b"http://example.com/x?y=1", [(b"host", b"example.com")])
    assert request.url == "http://example.com/x?y=1"
