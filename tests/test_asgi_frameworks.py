"""Real Starlette and FastAPI apps served by the ASGI adapter, driven with httpx."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from apps import fastapi_app, starlette_app
from conftest import READ_TIMEOUT, ServeFactory

from aserve.asgi import ASGIHandler


@contextlib.asynccontextmanager
async def served(serve: ServeFactory, app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(ASGIHandler(app, lifespan="on")) as server:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=READ_TIMEOUT
        ) as client:
            yield client


async def wait_for(condition: Callable[[], bool]) -> None:
    """Until `condition()` holds: background work sets no event the test can see."""
    async with asyncio.timeout(READ_TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- Starlette


@pytest.fixture
async def starlette(serve: ServeFactory) -> AsyncIterator[httpx.AsyncClient]:
    starlette_app.events.clear()
    async with served(serve, starlette_app.app) as client:
        yield client
    assert starlette_app.events[-1] == "shutdown"


async def test_starlette_routes_and_json(starlette: httpx.AsyncClient) -> None:
    home = await starlette.get("/")
    assert home.status_code == 200
    assert home.text == "Hello from Starlette"
    assert home.headers["x-middleware"] == "yes"
    item = await starlette.get("/items/42", params={"q": "find me"})
    assert item.json() == {"id": 42, "q": "find me"}
    missing = await starlette.get("/nowhere")
    assert missing.status_code == 404


async def test_starlette_form_upload(starlette: httpx.AsyncClient) -> None:
    content = b"\x00\x01binary" * 50_000
    reply = await starlette.post(
        "/upload", data={"name": "report"}, files={"file": ("data.bin", content)}
    )
    assert reply.status_code == 200
    assert reply.json() == {"name": "report", "filename": "data.bin", "size": len(content)}


async def test_starlette_streams_the_request_body(starlette: httpx.AsyncClient) -> None:
    async def upload() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"y" * 65536

    reply = await starlette.post("/echo", content=upload())
    assert reply.json() == {"size": 64 * 65536}


async def test_starlette_streaming_response(starlette: httpx.AsyncClient) -> None:
    async with starlette.stream("GET", "/stream", params={"count": "100"}) as reply:
        assert reply.headers["transfer-encoding"] == "chunked"
        lines = [line async for line in reply.aiter_lines()]
    assert lines == [f"line {i}" for i in range(100)]


async def test_starlette_streaming_response_stops_when_the_client_leaves(
    starlette: httpx.AsyncClient,
) -> None:
    starlette_app.stream_closed = closed = asyncio.Event()
    try:
        async with starlette.stream("GET", "/stream", params={"count": "10000000"}) as reply:
            async for _ in reply.aiter_bytes():
                break
        async with asyncio.timeout(READ_TIMEOUT):
            await closed.wait()
    finally:
        starlette_app.stream_closed = None


async def test_starlette_background_task_runs_after_the_response(
    starlette: httpx.AsyncClient,
) -> None:
    starlette_app.release = release = asyncio.Event()
    try:
        reply = await starlette.get("/background")
        assert reply.text == "accepted"
        assert "background done" not in starlette_app.events
        release.set()
        await wait_for(lambda: "background done" in starlette_app.events)
    finally:
        starlette_app.release = None


async def test_starlette_lifespan_state(starlette: httpx.AsyncClient) -> None:
    assert starlette_app.events == ["startup"]
    reply = await starlette.get("/state")
    assert reply.text == "hello from lifespan"


async def test_starlette_file_response_uses_pathsend(
    starlette: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"0123456789" * 100_000)
    reply = await starlette.get("/file", params={"path": str(path)})
    assert reply.status_code == 200
    assert reply.headers["content-length"] == str(1_000_000)
    assert reply.content == path.read_bytes()


async def test_starlette_view_error_is_a_500(
    starlette: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    reply = await starlette.get("/fail")
    assert reply.status_code == 500
    assert any("the view failed" in str(r.exc_info) for r in caplog.records)


# --------------------------------------------------------------------------- FastAPI


@pytest.fixture
async def fastapi(serve: ServeFactory) -> AsyncIterator[httpx.AsyncClient]:
    fastapi_app.events.clear()
    async with served(serve, fastapi_app.app) as client:
        yield client
    assert fastapi_app.events[-1] == "shutdown"


async def test_fastapi_json_endpoints(fastapi: httpx.AsyncClient) -> None:
    assert (await fastapi.get("/")).json() == {"message": "Hello from FastAPI"}
    reply = await fastapi.get("/items/7", params={"q": "x"})
    assert reply.json() == {"item_id": 7, "q": "x"}
    created = await fastapi.post("/items", json={"name": "pen", "price": 1.5, "tags": ["a"]})
    assert created.json() == {
        "created": {"name": "pen", "price": 1.5, "tags": ["a"]},
        "total": 3.0,
    }


async def test_fastapi_validation_and_404(fastapi: httpx.AsyncClient) -> None:
    invalid = await fastapi.get("/items/not-a-number")
    assert invalid.status_code == 422
    missing = await fastapi.post("/items", json={"price": 1})
    assert missing.status_code == 422
    assert (await fastapi.get("/nowhere")).status_code == 404


async def test_fastapi_form_upload(fastapi: httpx.AsyncClient) -> None:
    content = b"z" * 300_000
    reply = await fastapi.post(
        "/upload", data={"name": "photo"}, files={"file": ("pic.jpg", content, "image/jpeg")}
    )
    assert reply.json() == {"name": "photo", "filename": "pic.jpg", "size": len(content)}


async def test_fastapi_streaming_response(fastapi: httpx.AsyncClient) -> None:
    reply = await fastapi.get("/stream", params={"count": 50})
    assert reply.text == "".join(f"chunk {i}\n" for i in range(50))


async def test_fastapi_background_task(fastapi: httpx.AsyncClient) -> None:
    fastapi_app.release = release = asyncio.Event()
    try:
        reply = await fastapi.post("/background")
        assert reply.json() == {"status": "accepted"}
        assert "background done" not in fastapi_app.events
        release.set()
        await wait_for(lambda: "background done" in fastapi_app.events)
    finally:
        fastapi_app.release = None


async def test_fastapi_lifespan_state_and_sync_views(fastapi: httpx.AsyncClient) -> None:
    assert (await fastapi.get("/state")).json() == {"answer": 42}
    assert (await fastapi.get("/sync")).json() == {"sync": "ok"}


async def test_fastapi_many_concurrent_requests(fastapi: httpx.AsyncClient) -> None:
    replies = await asyncio.gather(*(fastapi.get(f"/items/{i}") for i in range(50)))
    assert [r.json()["item_id"] for r in replies] == list(range(50))
