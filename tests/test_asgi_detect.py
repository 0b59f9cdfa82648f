"""Which interface a `module:attribute` target speaks, and `wrap()` serving each."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
import pytest
from apps import fastapi_app, flask_app, starlette_app
from conftest import READ_TIMEOUT, ServeFactory

import aserve
from aserve.asgi import ASGIHandler, detect_interface, wrap
from aserve.wsgi import WSGIHandler

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def native(request: aserve.Request) -> aserve.Response:
    return aserve.PlainTextResponse("native")


async def asgi3(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi3"})


class ASGI2App:
    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope

    async def __call__(self, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2"})


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"wsgi"]


class NativeObject:
    async def __call__(self, request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("object")


class ASGI3Object:
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await asgi3(scope, receive, send)


class WSGIObject:
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        return wsgi(environ, start_response)


class Flagged:
    __aserve_handler__ = True

    async def __call__(self, request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("flagged")


async def asgi3_with_extra(
    config: str, scope: dict[str, Any], receive: Receive, send: Send
) -> None:
    await asgi3(scope, receive, send)


@pytest.mark.parametrize(
    "target, interface",
    [
        (native, "native"),
        (NativeObject(), "native"),
        (Flagged(), "native"),
        (asgi3, "asgi3"),
        (ASGI3Object(), "asgi3"),
        (functools.partial(asgi3_with_extra, "x"), "asgi3"),
        (ASGI2App, "asgi2"),
        (wsgi, "wsgi"),
        (WSGIObject(), "wsgi"),
        (starlette_app.app, "asgi3"),
        (fastapi_app.app, "asgi3"),
        (flask_app.app, "wsgi"),
    ],
)
def test_detect_interface(target: Any, interface: str) -> None:
    assert detect_interface(target) == interface


def test_detect_django_apps() -> None:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.django_project.settings")
    from apps.django_project.wsgi import application
    from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler

    assert detect_interface(application) == "wsgi"
    assert detect_interface(DjangoASGIHandler()) == "asgi3"


async def two_arguments(a: Any, b: Any) -> None:
    pass


def three_plain_arguments(a: Any, b: Any, c: Any) -> None:
    pass


class NotAnApp:
    def __init__(self) -> None:
        pass


@pytest.mark.parametrize(
    "target", [42, "text", two_arguments, three_plain_arguments, NotAnApp, lambda: None]
)
def test_detect_interface_refuses_what_is_none(target: Any) -> None:
    with pytest.raises(aserve.ConfigError) as info:
        detect_interface(target)
    assert "\n" not in str(info.value)


def test_wrap_returns_a_handler_for_each_interface() -> None:
    assert wrap(native) is native
    assert isinstance(wrap(asgi3), ASGIHandler)
    assert isinstance(wrap(ASGI2App), ASGIHandler)
    handler = wrap(wsgi, threads=3)
    assert isinstance(handler, WSGIHandler)
    assert handler.threads == 3
    assert wrap(asgi3, lifespan="off").lifespan == "off"


def test_wrap_forced_interface() -> None:
    # `--interface wsgi` on something detection would call ASGI 2.
    assert isinstance(wrap(three_plain_arguments, interface="wsgi"), WSGIHandler)
    with pytest.raises(aserve.ConfigError):
        wrap(native, interface="cgi")


@pytest.mark.parametrize(
    "target, text", [(native, "native"), (asgi3, "asgi3"), (ASGI2App, "asgi2"), (wsgi, "wsgi")]
)
async def test_wrapped_targets_serve(serve: ServeFactory, target: Any, text: str) -> None:
    async with serve(wrap(target, lifespan="off")) as server:
        async with httpx.AsyncClient(timeout=READ_TIMEOUT) as client:
            reply = await client.get(f"http://127.0.0.1:{server.port}/")
    assert reply.text == text
