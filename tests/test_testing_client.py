"""The TestClient: a real server on an ephemeral port, httpx on top."""

from __future__ import annotations

import pytest

import aserve
from aserve.testing import TestClient


def make_app() -> aserve.App:
    app = aserve.App()

    @app.get("/")
    async def home(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse({"client": list(request.client or ()), "ua": "x"})

    @app.get("/boom")
    async def boom(request: aserve.Request) -> aserve.Response:
        raise LookupError("lost it")

    @app.post("/echo")
    async def echo(request: aserve.Request) -> aserve.Response:
        return aserve.Response(await request.body())

    @app.get("/stream")
    async def stream(request: aserve.Request) -> aserve.Response:
        async def produce():  # type: ignore[no-untyped-def]
            for i in range(3):
                yield f"{i}\n"

        return aserve.StreamingResponse(produce(), media_type="text/plain")

    return app


async def test_requests_go_over_a_real_socket() -> None:
    async with TestClient(make_app()) as client:
        assert client.port > 0
        assert client.base_url == f"http://127.0.0.1:{client.port}"
        response = await client.get("/")
        assert response.status_code == 200
        assert response.json()["client"][0] == "127.0.0.1"
        assert response.headers["server"] == "aserve"


async def test_server_exceptions_are_raised_in_the_test() -> None:
    async with TestClient(make_app()) as client:
        with pytest.raises(LookupError, match="lost it"):
            await client.get("/boom")
        # The client stays usable afterwards.
        assert (await client.get("/")).status_code == 200


async def test_server_options_reach_the_server() -> None:
    async with TestClient(make_app(), max_body_size=10) as client:
        small = await client.post("/echo", content=b"0123456789")
        large = await client.post("/echo", content=b"0123456789a")
    assert small.content == b"0123456789"
    assert large.status_code == 413


async def test_streamed_responses_can_be_read_as_they_come() -> None:
    async with TestClient(make_app()) as client, client.stream("GET", "/stream") as response:
        lines = [line async for line in response.aiter_lines()]
    assert lines == ["0", "1", "2"]


async def test_a_bare_handler_works_too() -> None:
    async def hello(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("hello")

    async with TestClient(hello) as client:
        assert (await client.get("/anything")).text == "hello"


def test_using_the_client_outside_the_block_is_an_error() -> None:
    client = TestClient(make_app())
    with pytest.raises(RuntimeError, match="async with"):
        client.http  # noqa: B018
