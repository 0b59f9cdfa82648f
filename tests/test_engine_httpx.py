"""The engine as a real HTTP client sees it: httpx over a socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from conftest import READ_TIMEOUT, ServeFactory

import aserve


async def app(request: aserve.Request) -> aserve.Response:
    if request.path == "/client-port":
        assert request.client is not None
        return aserve.PlainTextResponse(str(request.client[1]))
    if request.path == "/json":
        return aserve.JSONResponse({"hello": "world", "numbers": [1, 2, 3], "nested": {"ok": True}})
    if request.path == "/echo":
        return aserve.Response(await request.body(), media_type="application/octet-stream")
    if request.path == "/echo-json":
        return aserve.JSONResponse({"received": await request.json()})
    if request.path == "/stream":

        async def numbers() -> AsyncIterator[bytes]:
            for n in range(100):
                yield b"line %d\n" % n

        return aserve.StreamingResponse(numbers(), media_type="text/plain")
    if request.path == "/html":
        return aserve.HTMLResponse("<p>hi</p>")
    raise aserve.HTTPException(404)


def client_for(server: aserve.Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=READ_TIMEOUT)


async def test_httpx_reuses_the_keep_alive_connection(serve: ServeFactory) -> None:
    async with serve(app) as server, client_for(server) as client:
        first = await client.get("/client-port")
        second = await client.get("/client-port")
    assert first.status_code == second.status_code == 200
    assert first.text == second.text


async def test_httpx_json_response(serve: ServeFactory) -> None:
    async with serve(app) as server, client_for(server) as client:
        response = await client.get("/json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"hello": "world", "numbers": [1, 2, 3], "nested": {"ok": True}}


async def test_httpx_post_body_is_echoed(serve: ServeFactory) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    async with serve(app) as server, client_for(server) as client:
        response = await client.post("/echo", content=payload)
        small = await client.post("/echo", content=b"tiny")
    assert response.status_code == 200
    assert response.content == payload
    assert small.content == b"tiny"


async def test_httpx_chunked_upload_is_echoed(serve: ServeFactory) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for n in range(50):
            yield b"part %d;" % n

    async with serve(app) as server, client_for(server) as client:
        response = await client.post("/echo", content=parts())
    assert response.content == b"".join(b"part %d;" % n for n in range(50))


async def test_httpx_json_request_body(serve: ServeFactory) -> None:
    async with serve(app) as server, client_for(server) as client:
        response = await client.post("/echo-json", json={"a": [1, "two", None]})
    assert response.json() == {"received": {"a": [1, "two", None]}}


async def test_httpx_streaming_response(serve: ServeFactory) -> None:
    async with serve(app) as server, client_for(server) as client:
        async with client.stream("GET", "/stream") as response:
            assert response.headers["transfer-encoding"] == "chunked"
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        after = await client.get("/json")
    assert body == b"".join(b"line %d\n" % n for n in range(100))
    assert after.status_code == 200


async def test_httpx_html_and_not_found(serve: ServeFactory) -> None:
    async with serve(app) as server, client_for(server) as client:
        html = await client.get("/html")
        missing = await client.get("/nowhere")
    assert html.headers["content-type"].startswith("text/html")
    assert html.text == "<p>hi</p>"
    assert missing.status_code == 404
    assert missing.text.strip() == "Not Found"
