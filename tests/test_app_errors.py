"""Error handling in the App: HTTPException, handlers by status and by type, 500 pages."""

from __future__ import annotations

import logging

import pytest
from conftest import ConnectFactory, ServeFactory

import aserve
from aserve.testing import TestClient


class Teapot(Exception):
    pass


class SmallTeapot(Teapot):
    pass


def failing_app(**options: object) -> aserve.App:
    app = aserve.App(**options)  # type: ignore[arg-type]

    @app.get("/boom")
    async def boom(request: aserve.Request) -> aserve.Response:
        raise RuntimeError("kaboom")

    @app.get("/sync-boom")
    def sync_boom(request: aserve.Request) -> aserve.Response:
        raise RuntimeError("sync kaboom")

    @app.get("/forbidden")
    async def forbidden(request: aserve.Request) -> aserve.Response:
        raise aserve.HTTPException(403, "No entry", headers={"X-Why": "rules"})

    @app.get("/teapot")
    async def teapot(request: aserve.Request) -> aserve.Response:
        raise SmallTeapot("short and stout")

    return app


async def test_http_exception_becomes_its_plain_answer() -> None:
    async with TestClient(failing_app()) as client:
        response = await client.get("/forbidden")
    assert response.status_code == 403
    assert response.text == "No entry\n"
    assert response.headers["x-why"] == "rules"


async def test_unhandled_error_is_a_plain_500_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with TestClient(failing_app(), raise_server_exceptions=False) as client:
        response = await client.get("/boom")
        sync_response = await client.get("/sync-boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error\n"
    assert "kaboom" not in response.text
    assert sync_response.status_code == 500
    logged = [r for r in caplog.records if r.name == "aserve.error"]
    assert logged and logged[0].exc_info is not None
    assert "GET /boom" in logged[0].getMessage()


async def test_debug_shows_the_traceback() -> None:
    async with TestClient(failing_app(debug=True), raise_server_exceptions=False) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert "Traceback" in response.text
    assert "RuntimeError: kaboom" in response.text


async def test_a_500_keeps_serving_others(serve: ServeFactory, connect: ConnectFactory) -> None:
    async with serve(failing_app()) as server:
        client = await connect(server.port)
        await client.send(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await client.response()).status == 500
        other = await connect(server.port)
        await other.send(b"GET /forbidden HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await other.response()).status == 403


async def test_custom_404_page_is_one_function() -> None:
    app = failing_app()

    @app.exception_handler(404)
    async def not_found(request: aserve.Request, exc: aserve.HTTPException) -> aserve.Response:
        return aserve.HTMLResponse(f"<h1>No {request.path}</h1>", status=404)

    async with TestClient(app) as client:
        response = await client.get("/missing")
    assert response.status_code == 404
    assert response.text == "<h1>No /missing</h1>"
    assert response.headers["content-type"] == "text/html; charset=utf-8"


async def test_custom_500_page() -> None:
    app = failing_app()

    @app.exception_handler(500)
    async def server_error(request: aserve.Request, exc: Exception) -> aserve.Response:
        return aserve.HTMLResponse(f"<p>sorry: {type(exc).__name__}</p>", status=500)

    async with TestClient(app, raise_server_exceptions=False) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.text == "<p>sorry: RuntimeError</p>"


async def test_handler_by_exception_class_catches_subclasses() -> None:
    app = failing_app()

    @app.exception_handler(Teapot)
    def teapot(request: aserve.Request, exc: Teapot) -> aserve.Response:
        return aserve.PlainTextResponse(str(exc), status=418)

    async with TestClient(app) as client:
        response = await client.get("/teapot")
    assert response.status_code == 418
    assert response.text == "short and stout"


async def test_handler_for_http_exception_class() -> None:
    app = failing_app()

    @app.exception_handler(aserve.HTTPException)
    async def any_http(request: aserve.Request, exc: aserve.HTTPException) -> aserve.Response:
        return aserve.JSONResponse({"error": exc.detail}, status=exc.status, headers=exc.headers)

    async with TestClient(app) as client:
        forbidden = await client.get("/forbidden")
        missing = await client.get("/missing")
        wrong = await client.post("/boom")
    assert forbidden.json() == {"error": "No entry"}
    assert missing.json() == {"error": "Not Found"}
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, HEAD, OPTIONS"


async def test_exception_handler_for_exception_catches_everything() -> None:
    app = failing_app()

    @app.exception_handler(Exception)
    async def everything(request: aserve.Request, exc: Exception) -> aserve.Response:
        return aserve.PlainTextResponse(f"caught {exc}", status=500)

    async with TestClient(app, raise_server_exceptions=False) as client:
        response = await client.get("/boom")
    assert response.text == "caught kaboom"


async def test_a_failing_500_handler_falls_back_to_the_plain_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = failing_app()

    @app.exception_handler(500)
    async def broken(request: aserve.Request, exc: Exception) -> aserve.Response:
        raise ValueError("handler broke")

    async with TestClient(app, raise_server_exceptions=False) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error\n"
    assert any("500 error handler failed" in r.getMessage() for r in caplog.records)


async def test_middleware_sees_error_answers_of_routing() -> None:
    app = failing_app()
    seen: list[int] = []

    @app.middleware
    async def record(request: aserve.Request, call_next: aserve.app.CallNext) -> aserve.Response:
        response = await call_next(request)
        seen.append(response.status_code)
        response.headers["x-seen"] = "yes"
        return response

    async with TestClient(app) as client:
        missing = await client.get("/missing")
        forbidden = await client.get("/forbidden")
    assert seen == [404, 403]
    assert missing.headers["x-seen"] == forbidden.headers["x-seen"] == "yes"


async def test_http_exception_raised_by_middleware_is_answered() -> None:
    app = failing_app()

    @app.middleware
    async def gate(request: aserve.Request, call_next: aserve.app.CallNext) -> aserve.Response:
        raise aserve.HTTPException(429, "Slow down")

    async with TestClient(app) as client:
        response = await client.get("/forbidden")
    assert (response.status_code, response.text) == (429, "Slow down\n")


async def test_an_error_in_middleware_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    app = failing_app()

    @app.middleware
    async def broken(request: aserve.Request, call_next: aserve.app.CallNext) -> aserve.Response:
        raise KeyError("oops")

    caplog.set_level(logging.ERROR)
    async with TestClient(app, raise_server_exceptions=False) as client:
        response = await client.get("/forbidden")
    assert response.status_code == 500


def test_exception_handler_key_is_checked() -> None:
    app = aserve.App()
    with pytest.raises(TypeError):
        app.add_exception_handler("404", lambda r, e: None)  # type: ignore[arg-type]
