"""Start-up and shutdown: hooks, an async-context-manager lifespan, mounted handlers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

import aserve
from aserve.testing import TestClient


async def test_hooks_run_when_the_server_starts_and_stops() -> None:
    events: list[str] = []
    app = aserve.App()

    @app.on_startup
    async def open_pool() -> None:
        events.append("startup")

    @app.on_startup
    def sync_hook() -> None:
        events.append("sync startup")

    @app.on_shutdown
    async def close_pool() -> None:
        events.append("shutdown")

    @app.get("/")
    async def home(request: aserve.Request) -> aserve.Response:
        events.append("request")
        return aserve.Response()

    async with aserve.Server(app, host="127.0.0.1", port=0):
        assert events == ["startup", "sync startup"]
        async with TestClient(app):  # a second server on the same app runs the hooks again
            pass
    assert events == ["startup", "sync startup", "startup", "sync startup", "shutdown", "shutdown"]


async def test_lifespan_context_manager_and_its_state() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: aserve.App) -> AsyncIterator[dict[str, object]]:
        events.append("enter")
        yield {"db": "connected"}
        events.append("exit")

    app = aserve.App(lifespan=lifespan)

    @app.get("/")
    async def home(request: aserve.Request) -> aserve.Response:
        assert request.app is not None
        return aserve.PlainTextResponse(request.app.state.db)

    async with TestClient(app) as client:
        assert events == ["enter"]
        assert (await client.get("/")).text == "connected"
    assert events == ["enter", "exit"]


async def test_a_failing_startup_stops_what_started_and_the_server_does_not_start() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: aserve.App) -> AsyncIterator[None]:
        events.append("enter")
        yield
        events.append("exit")

    class Sub:
        async def __call__(self, request: aserve.Request) -> aserve.Response:
            return aserve.Response()

        async def startup(self) -> None:
            raise RuntimeError("no database")

    app = aserve.App(lifespan=lifespan)
    app.mount("/sub", Sub())
    server = aserve.Server(app, host="127.0.0.1", port=0)
    with pytest.raises(RuntimeError, match="no database"):
        await server.start()
    assert not server.started
    assert events == ["enter", "exit"]


async def test_mounted_apps_start_and_stop_with_their_parent() -> None:
    events: list[str] = []
    sub = aserve.App(on_startup=[lambda: events.append("sub up")])
    sub.on_shutdown(lambda: events.append("sub down"))
    app = aserve.App(on_startup=[lambda: events.append("up")])
    app.on_shutdown(lambda: events.append("down"))
    app.mount("/sub", sub)
    async with TestClient(app):
        assert events == ["up", "sub up"]
    assert events == ["up", "sub up", "sub down", "down"]
