"""Plain ``def handler(request)`` handlers: told apart from ASGI 2 and WSGI apps,
run in a worker thread wherever a bare handler is accepted, and refused at
start-up, with a line that says what to write, where they cannot work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import READ_TIMEOUT, ServeFactory

import aserve
from aserve.app import ThreadedHandler, as_async_handler
from aserve.asgi import ASGIHandler, detect_interface, wrap
from aserve.wsgi import WSGIHandler

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# --------------------------------------------------------------------------- shapes


def sync_handler(request: aserve.Request) -> aserve.Response:
    return aserve.PlainTextResponse(f"sync on {threading.current_thread().name}")


def sync_unannotated(request):  # type: ignore[no-untyped-def]
    return aserve.PlainTextResponse("unannotated")


def sync_short_name(req):  # type: ignore[no-untyped-def]
    return aserve.PlainTextResponse("short name")


def asgi2_function(scope):  # type: ignore[no-untyped-def]
    async def instance(receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2 function"})

    return instance


def asgi2_annotated(environment: Scope) -> Callable[[Receive, Send], Awaitable[None]]:
    # Not named scope, but annotated as a mapping: ASGI 2.
    return asgi2_function(environment)  # type: ignore[no-any-return]


def request_named_scope(scope: aserve.Request) -> aserve.Response:
    # Named scope, but annotated Request: the annotation wins.
    return aserve.PlainTextResponse("annotated request")


def real_annotation(thing):  # type: ignore[no-untyped-def]
    return aserve.PlainTextResponse("real annotation")


real_annotation.__annotations__ = {"thing": aserve.Request}


def real_scope_annotation(thing):  # type: ignore[no-untyped-def]
    return asgi2_function(thing)


real_scope_annotation.__annotations__ = {"thing": dict[str, Any]}


def wsgi_function(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"wsgi"]


class WSGIObject:
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        return wsgi_function(environ, start_response)


class WSGIClass:
    """The class form PEP 3333 allows: instantiated per request, then iterated."""

    def __init__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> None:
        start_response("200 OK", [])

    def __iter__(self) -> Any:
        yield b"wsgi class"


class SyncHandlerObject:
    def __call__(self, request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("sync object")


class ASGI2Object:
    """An instance whose ``__call__(scope)`` gives the ASGI 2 instance."""

    def __call__(self, scope: Scope) -> Callable[[Receive, Send], Awaitable[None]]:
        return asgi2_function(scope)  # type: ignore[no-any-return]


class ASGI2Class:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2 class"})


def sync_with_option(request: aserve.Request, greeting: str = "hi") -> aserve.Response:
    return aserve.PlainTextResponse(greeting)


async def async_with_option(request: aserve.Request, greeting: str = "hi") -> aserve.Response:
    return aserve.PlainTextResponse(greeting)


async def asgi3(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi3"})


async def native(request: aserve.Request) -> aserve.Response:
    return aserve.PlainTextResponse("native")


@pytest.mark.parametrize(
    "target, interface",
    [
        (sync_handler, "native"),
        (sync_unannotated, "native"),
        (sync_short_name, "native"),
        (request_named_scope, "native"),
        (real_annotation, "native"),
        (SyncHandlerObject(), "native"),
        (lambda request: aserve.PlainTextResponse("lambda"), "native"),
        (asgi2_function, "asgi2"),
        (asgi2_annotated, "asgi2"),
        (real_scope_annotation, "asgi2"),
        (ASGI2Object(), "asgi2"),
        (ASGI2Class, "asgi2"),
        (wsgi_function, "wsgi"),
        (WSGIObject(), "wsgi"),
        (WSGIClass, "wsgi"),
        (asgi3, "asgi3"),
        (native, "native"),
        (sync_with_option, "native"),
        (async_with_option, "native"),
    ],
)
def test_detect_interface_of_each_shape(target: Any, interface: str) -> None:
    assert detect_interface(target) == interface


@pytest.mark.parametrize("cls", [WSGIObject, SyncHandlerObject])
def test_a_class_whose_instances_are_apps_asks_for_an_instance(cls: type) -> None:
    with pytest.raises(aserve.ConfigError, match=rf"give an instance, {cls.__qualname__}\(\)"):
        detect_interface(cls)


# --------------------------------------------------------------------------- serving them


@pytest.mark.parametrize(
    "target, text",
    [
        (sync_unannotated, "unannotated"),
        (sync_short_name, "short name"),
        (request_named_scope, "annotated request"),
        (SyncHandlerObject(), "sync object"),
        (asgi2_function, "asgi2 function"),
        (asgi2_annotated, "asgi2 function"),
        (ASGI2Object(), "asgi2 function"),
        (ASGI2Class, "asgi2 class"),
        (WSGIClass, "wsgi class"),
        (sync_with_option, "hi"),
    ],
)
async def test_wrapped_shapes_serve(serve: ServeFactory, target: Any, text: str) -> None:
    async with serve(wrap(target, lifespan="off")) as server:
        async with httpx.AsyncClient(timeout=READ_TIMEOUT) as client:
            reply = await client.get(f"http://127.0.0.1:{server.port}/")
    assert (reply.status_code, reply.text) == (200, text)


async def test_a_sync_handler_runs_in_a_worker_thread(serve: ServeFactory) -> None:
    handler = wrap(sync_handler)
    assert isinstance(handler, ThreadedHandler)
    assert wrap(sync_handler, interface="native").handler is sync_handler
    async with serve(handler) as server:
        async with httpx.AsyncClient(timeout=READ_TIMEOUT) as client:
            replies = [await client.get(f"http://127.0.0.1:{server.port}/") for _ in range(3)]
    for reply in replies:
        assert reply.status_code == 200
        assert reply.text.startswith("sync on ")
        assert reply.text != f"sync on {threading.current_thread().name}"


async def test_forced_native_runs_even_a_scope_named_function_in_a_thread(
    serve: ServeFactory,
) -> None:
    def scope(scope):  # type: ignore[no-untyped-def]
        return aserve.PlainTextResponse("forced")

    async with serve(wrap(scope, interface="native")) as server:
        async with httpx.AsyncClient(timeout=READ_TIMEOUT) as client:
            assert (await client.get(f"http://127.0.0.1:{server.port}/")).text == "forced"


async def test_server_takes_a_plain_def_handler(serve: ServeFactory) -> None:
    """Pending the server: `Server.__init__` wraps its handler once with
    `aserve.app.as_async_handler`."""
    async with serve(sync_handler) as server:
        async with httpx.AsyncClient(timeout=READ_TIMEOUT) as client:
            reply = await client.get(f"http://127.0.0.1:{server.port}/")
    assert reply.status_code == 200
    assert reply.text.startswith("sync on ")


async def test_mount_takes_a_plain_def_handler(serve: ServeFactory) -> None:
    app = aserve.App()
    app.mount("/sync", sync_short_name)
    app.mount("/object", SyncHandlerObject())
    async with serve(app) as server:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=READ_TIMEOUT
        ) as client:
            assert (await client.get("/sync/x")).text == "short name"
            assert (await client.get("/object")).text == "sync object"


async def test_a_plain_def_that_returns_a_coroutine_is_awaited(serve: ServeFactory) -> None:
    async with serve(as_async_handler(lambda request: native(request))) as server:
        async with httpx.AsyncClient(timeout=READ_TIMEOUT) as client:
            assert (await client.get(f"http://127.0.0.1:{server.port}/")).text == "native"


# --------------------------------------------------------------------------- as_async_handler


def test_as_async_handler_keeps_async_handlers() -> None:
    app = aserve.App()
    static = aserve.StaticFiles(".")
    adapter = ASGIHandler(asgi3)

    async def passes_on(*args: Any) -> aserve.Response:  # a wrapper without functools.wraps
        return await native(*args)

    for handler in (native, app, static, adapter, WSGIHandler(wsgi_function), passes_on):
        assert as_async_handler(handler) is handler


def test_as_async_handler_wraps_plain_defs_once() -> None:
    wrapped = as_async_handler(sync_handler)
    assert isinstance(wrapped, ThreadedHandler)
    assert as_async_handler(wrapped) is wrapped
    assert detect_interface(wrapped) == "native"


def test_a_threaded_handler_passes_on_start_up_and_shut_down() -> None:
    class WithHooks:
        def __call__(self, request: aserve.Request) -> aserve.Response:
            return aserve.PlainTextResponse("x")

        async def startup(self) -> None:
            pass

    hooked = WithHooks()
    wrapped = as_async_handler(hooked)
    assert getattr(wrapped, "startup") == hooked.startup  # noqa: B009
    assert getattr(as_async_handler(sync_handler), "startup", None) is None


@pytest.mark.parametrize(
    "target, says",
    [
        (asgi3, r"asgi3 is an ASGI app.*aserve\.asgi\.ASGIHandler\(app\)"),
        (asgi2_function, r"asgi2_function is an ASGI 2 app.*aserve\.asgi\.wrap\(app\)"),
        (ASGI2Object(), r"ASGI2Object is an ASGI 2 app"),
        (ASGI2Class, r"ASGI2Class is an ASGI 2 app"),
        (wsgi_function, r"wsgi_function is a WSGI app.*aserve\.wsgi\.WSGIHandler\(app\)"),
        (WSGIObject(), r"WSGIObject is a WSGI app"),
        (SyncHandlerObject, r"give an instance"),
        (lambda scope, receive, send: None, r"takes 3 arguments"),
        (lambda: None, r"takes 0 arguments"),
    ],
)
def test_as_async_handler_refuses_apps_with_one_line(target: Any, says: str) -> None:
    with pytest.raises(TypeError, match=says) as info:
        as_async_handler(target)
    assert "\n" not in str(info.value)
    with pytest.raises(TypeError):
        aserve.App().mount("/x", target)


def test_as_async_handler_refuses_what_is_not_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        as_async_handler(42)


# --------------------------------------------------------------------------- the command

START_LINE = re.compile(r"aserve \S+ serving (?P<what>.+) on http://127\.0\.0\.1:(?P<port>\d+) ")
MODULE = textwrap.dedent(
    """
    import threading
    import aserve

    def sync_handler(request):
        return aserve.PlainTextResponse("sync " + request.path)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("interface", [None, "native"], ids=["detected", "forced"])
def test_the_command_serves_a_plain_def_handler(tmp_path: Path, interface: str | None) -> None:
    (tmp_path / "syncmod.py").write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASERVE_")}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    args = ["syncmod:sync_handler", "--port", "0"]
    if interface:
        args += ["--interface", interface]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aserve", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the start line; the test's timeout bounds the wait
        match = START_LINE.match(line)
        assert match is not None, line
        assert match["what"] == "syncmod:sync_handler (native)"
        with httpx.Client(base_url=f"http://127.0.0.1:{match['port']}", timeout=5) as client:
            for path in ("/", "/a/b"):
                reply = client.get(path)
                assert (reply.status_code, reply.text) == (200, f"sync {path}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
