"""ASGI and WSGI apps under a root path: an App mount, nested mounts, the
server's root path (with a proxy that keeps its prefix and one that strips it),
and the App's error handlers over what is mounted in it.

Every placement is checked against the real frameworks: FastAPI (routes,
``/docs`` and ``/openapi.json``), Starlette (``url_for``, a redirect built from
it), Flask (``url_for``, a redirect) and Django (``reverse()``, a redirect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from apps import fastapi_app
from conftest import READ_TIMEOUT, ServeFactory
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect as django_redirect
from django.urls import path as django_path
from django.urls import reverse
from flask import Flask, jsonify, url_for
from flask import redirect as flask_redirect
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse as StarletteJSON
from starlette.responses import PlainTextResponse as StarlettePlain
from starlette.responses import RedirectResponse as StarletteRedirect
from starlette.routing import Route as StarletteRoute

import aserve
from aserve.asgi import ASGIHandler
from aserve.wsgi import WSGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.django_project.settings")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Environ = dict[str, Any]


# --------------------------------------------------------------------------- placements


@dataclass(frozen=True)
class Placement:
    """Where a handler is served: what the server gets, the options it gets,
    the prefix a client puts in front of the app's paths, and the root path
    the app must see."""

    id: str
    mount: tuple[str, ...]  # App mounts from the outside in
    server_root: str
    client_prefix: str
    root: str

    def serve_with(self, handler: Any) -> tuple[Any, dict[str, Any]]:
        for prefix in reversed(self.mount):
            outer = aserve.App()
            outer.mount(prefix, handler)
            handler = outer
        return handler, {"root_path": self.server_root} if self.server_root else {}


PLACEMENTS = [
    Placement("mount", ("/m",), "", "/m", "/m"),
    Placement("nested-mounts", ("/outer", "/m"), "", "/outer/m", "/outer/m"),
    Placement("server-root", (), "/api", "/api", "/api"),
    Placement("server-root-stripped", (), "/api", "", "/api"),
    Placement("server-root-and-mount", ("/m",), "/api", "/api/m", "/api/m"),
    Placement("server-root-stripped-and-mount", ("/m",), "/api", "/m", "/api/m"),
]


@pytest.fixture(params=PLACEMENTS, ids=[p.id for p in PLACEMENTS])
def placement(request: pytest.FixtureRequest) -> Placement:
    found: Placement = request.param
    return found


@contextlib.asynccontextmanager
async def served(
    serve: ServeFactory, handler: Any, placement: Placement
) -> AsyncIterator[httpx.AsyncClient]:
    top, options = placement.serve_with(handler)
    async with serve(top, **options) as server:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}{placement.client_prefix}",
            timeout=READ_TIMEOUT,
        ) as client:
            yield client


def origin(client: httpx.AsyncClient) -> str:
    return f"http://127.0.0.1:{client.base_url.port}"


# --------------------------------------------------------------------------- the Request rules


def make_request(target: bytes, root_path: str = "") -> aserve.Request:
    request = aserve.Request(b"GET", target, [(b"host", b"example.com")])
    request.root_path = root_path
    return request


@pytest.mark.parametrize(
    "root, extra, target, split, route_path, stripped",
    [
        ("", "", b"/x", ("", "/x", b"/x", True), "/x", ""),
        ("/m", "", b"/m/x", ("/m", "/x", b"/x", True), "/x", ""),
        ("/m", "", b"/m", ("/m", "", b"", True), "/", ""),
        ("/m", "", b"/m/caf%C3%A9?q=1", ("/m", "/café", b"/caf%C3%A9", True), "/café", ""),
        ("/m", "", b"/m%2Fx", ("/m", "/x", b"/x", True), "/x", ""),
        ("/api", "", b"/x", ("/api", "/x", b"/x", False), "/x", "/api"),
        ("/api", "", b"/apiary", ("/api", "/apiary", b"/apiary", False), "/apiary", "/api"),
        ("", "/e", b"/e/x", ("/e", "/x", b"/x", True), "/e/x", ""),
        ("", "/e", b"/x", ("/e", "/x", b"/x", False), "/x", ""),
        ("/m", "/e", b"/m/e/x", ("/m/e", "/x", b"/x", True), "/e/x", ""),
        ("/m", "/e", b"/m/x", ("/m/e", "/x", b"/x", False), "/x", ""),
    ],
)
def test_split_root_table(
    root: str,
    extra: str,
    target: bytes,
    split: tuple[str, str, bytes, bool],
    route_path: str,
    stripped: str,
) -> None:
    request = make_request(target, root)
    assert tuple(request.split_root(extra)) == split
    assert request.route_path == route_path
    assert request.stripped_root == stripped


def test_a_stripped_server_root_stays_stripped_below_a_mount() -> None:
    request = make_request(b"/m/x", "/api")  # the proxy stripped /api
    assert request.route_path == "/m/x"  # what the top App routes on
    request.root_path = "/api/m"  # the App's mount
    assert request.route_path == "/x"
    assert tuple(request.split_root()) == ("/api/m", "/x", b"/x", False)
    assert request.stripped_root == "/api"


@pytest.mark.parametrize(
    "target, url",
    [
        (b"/api/x?q=1", "http://example.com/api/x?q=1"),  # the proxy kept the prefix
        (b"/x?q=1", "http://example.com/api/x?q=1"),  # the proxy stripped it
    ],
)
def test_url_is_the_one_the_client_used(target: bytes, url: str) -> None:
    assert make_request(target, "/api").url == url


# --------------------------------------------------------------------------- raw ASGI and WSGI


def recording_asgi(seen: list[Scope]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def recording_wsgi(seen: list[Environ]) -> Callable[[Environ, Any], Iterable[bytes]]:
    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


async def test_asgi_scope_holds_the_full_path_and_the_root_path(
    serve: ServeFactory, placement: Placement
) -> None:
    seen: list[Scope] = []
    handler = ASGIHandler(recording_asgi(seen), lifespan="off")
    async with served(serve, handler, placement) as client:
        assert (await client.get("/caf%C3%A9/a%20b", params={"q": "1"})).text == "ok"
    [scope] = seen
    root = placement.root
    assert scope["root_path"] == root
    # The spec (asgiref 3): path includes root_path; the app strips it.
    assert scope["path"] == root + "/café/a b"
    assert scope["raw_path"] == root.encode() + b"/caf%C3%A9/a%20b"
    assert scope["query_string"] == b"q=1"


async def test_asgi_scope_for_the_root_itself(serve: ServeFactory) -> None:
    seen: list[Scope] = []
    app = aserve.App()
    app.mount("/m", ASGIHandler(recording_asgi(seen), lifespan="off"))
    async with served(serve, app, Placement("x", (), "", "", "")) as client:
        await client.get("/m")
        await client.get("/m/")
    assert [(s["root_path"], s["path"], s["raw_path"]) for s in seen] == [
        ("/m", "/m", b"/m"),
        ("/m", "/m/", b"/m/"),
    ]


async def test_wsgi_environ_splits_script_name_and_path_info(
    serve: ServeFactory, placement: Placement
) -> None:
    seen: list[Environ] = []
    async with served(serve, WSGIHandler(recording_wsgi(seen), threads=2), placement) as client:
        assert (await client.get("/caf%C3%A9/a%2Fb")).text == "ok"
    [environ] = seen
    assert environ["SCRIPT_NAME"] == placement.root
    assert environ["PATH_INFO"] == "/caf\xc3\xa9/a/b"  # PEP 3333 bytes-as-unicode


async def test_wsgi_path_info_is_empty_for_the_mount_itself(serve: ServeFactory) -> None:
    seen: list[Environ] = []
    app = aserve.App()
    app.mount("/m", WSGIHandler(recording_wsgi(seen), threads=2))
    async with served(serve, app, Placement("x", (), "", "", "")) as client:
        await client.get("/m")
        await client.get("/m/")
    assert [(e["SCRIPT_NAME"], e["PATH_INFO"]) for e in seen] == [("/m", ""), ("/m", "/")]


async def test_a_non_ascii_root_path_is_bytes_as_unicode_in_script_name(
    serve: ServeFactory,
) -> None:
    seen: list[Environ] = []
    scopes: list[Scope] = []
    app = aserve.App()
    app.mount("/é", WSGIHandler(recording_wsgi(seen), threads=2))
    app.mount("/ü", ASGIHandler(recording_asgi(scopes), lifespan="off"))
    async with served(serve, app, Placement("x", (), "", "", "")) as client:
        await client.get("/%C3%A9/x")
        await client.get("/%C3%BC/x")
    assert (seen[0]["SCRIPT_NAME"], seen[0]["PATH_INFO"]) == ("/\xc3\xa9", "/x")
    assert (scopes[0]["root_path"], scopes[0]["path"]) == ("/ü", "/ü/x")
    assert scopes[0]["raw_path"] == b"/%C3%BC/x"


@pytest.mark.parametrize(
    "target, environ",
    [(b"/api/caf%E9", ("/api", "/caf\xe9")), (b"/caf%E9", ("/api", "/caf\xe9"))],
    ids=["in-path", "stripped"],
)
async def test_wsgi_takes_a_path_that_is_not_utf8_under_a_root_path(
    serve: ServeFactory, target: bytes, environ: tuple[str, str]
) -> None:
    seen: list[Environ] = []
    async with serve(WSGIHandler(recording_wsgi(seen), threads=2), root_path="/api") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(READ_TIMEOUT):
            reply = await reader.read()
        writer.close()
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert (seen[0]["SCRIPT_NAME"], seen[0]["PATH_INFO"]) == environ


@pytest.mark.parametrize("in_path", [True, False], ids=["in-path", "stripped"])
async def test_the_handlers_own_root_path_is_one_more_prefix_never_doubled(
    serve: ServeFactory, placement: Placement, in_path: bool
) -> None:
    scopes: list[Scope] = []
    environs: list[Environ] = []
    app = aserve.App()
    app.mount("/a", ASGIHandler(recording_asgi(scopes), lifespan="off", root_path="/extra/"))
    app.mount("/w", WSGIHandler(recording_wsgi(environs), threads=2, root_path="/extra"))
    extra = "/extra" if in_path else ""
    async with served(serve, app, placement) as client:
        await client.get(f"/a{extra}/x")
        await client.get(f"/w{extra}/x")
    root = placement.root
    [scope] = scopes
    assert scope["root_path"] == root + "/a/extra"
    assert scope["path"] == root + "/a/extra/x"
    assert scope["raw_path"] == (root + "/a/extra/x").encode()
    [environ] = environs
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == (root + "/w/extra", "/x")


async def test_the_handlers_own_root_path_at_the_top(serve: ServeFactory) -> None:
    scopes: list[Scope] = []
    handler = ASGIHandler(recording_asgi(scopes), lifespan="off", root_path="/withroot")
    async with served(serve, handler, Placement("x", (), "", "", "")) as client:
        await client.get("/withroot/x")
        await client.get("/x")
    assert [(s["root_path"], s["path"]) for s in scopes] == [
        ("/withroot", "/withroot/x"),
        ("/withroot", "/withroot/x"),
    ]


async def test_a_prefix_lookalike_is_not_the_prefix(serve: ServeFactory) -> None:
    scopes: list[Scope] = []
    handler = ASGIHandler(recording_asgi(scopes), lifespan="off")
    async with served(serve, handler, Placement("x", (), "/api", "", "/api")) as client:
        await client.get("/apiary/x")  # not below /api: a proxy stripped the prefix
    assert (scopes[0]["root_path"], scopes[0]["path"]) == ("/api", "/api/apiary/x")


async def test_root_path_is_restored_after_a_mounted_handler(serve: ServeFactory) -> None:
    seen: list[tuple[str, str]] = []

    async def record(request: aserve.Request, call_next: Any) -> aserve.Response:
        response: aserve.Response = await call_next(request)
        seen.append((request.root_path, request.route_path))
        return response

    inner = aserve.App()
    inner.mount("/deep", ASGIHandler(recording_asgi([]), lifespan="off"))
    app = aserve.App(middleware=[record])
    app.mount("/m", inner)
    async with served(serve, app, Placement("x", (), "/api", "/api", "/api")) as client:
        assert (await client.get("/m/deep/x")).text == "ok"
    assert seen == [("/api", "/m/deep/x")]


# --------------------------------------------------------------------------- FastAPI


async def test_fastapi_routes_docs_and_openapi(serve: ServeFactory, placement: Placement) -> None:
    fastapi_app.events.clear()
    handler = ASGIHandler(fastapi_app.app, lifespan="on")
    async with served(serve, handler, placement) as client:
        assert (await client.get("/")).json() == {"message": "Hello from FastAPI"}
        item = await client.get("/items/3", params={"q": "x"})
        assert item.json() == {"item_id": 3, "q": "x"}
        assert (await client.get("/state")).json() == {"answer": 42}  # lifespan ran
        docs = await client.get("/docs")
        assert docs.status_code == 200
        assert f"url: '{placement.root}/openapi.json'" in docs.text
        schema = await client.get("/openapi.json")
        assert schema.status_code == 200
        assert schema.json()["servers"] == [{"url": placement.root}]
        assert "/items/{item_id}" in schema.json()["paths"]
        missing = await client.get("/nowhere")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Not Found"}  # FastAPI's own 404
    assert fastapi_app.events == ["startup", "shutdown"]


async def test_fastapi_redirects_to_the_slash_under_the_prefix(serve: ServeFactory) -> None:
    app = aserve.App()
    app.mount("/fa", ASGIHandler(fastapi_app.app, lifespan="off"))
    async with served(serve, app, Placement("x", (), "", "", "")) as client:
        reply = await client.get("/fa")
        assert reply.status_code == 307
        assert reply.headers["location"] == f"{origin(client)}/fa/"


# --------------------------------------------------------------------------- Starlette


async def st_home(request: StarletteRequest) -> StarlettePlain:
    return StarlettePlain("starlette home")


async def st_item(request: StarletteRequest) -> StarletteJSON:
    return StarletteJSON(
        {
            "id": request.path_params["item_id"],
            "url": str(request.url_for("item", item_id=7)),
            "path": request.url.path,
            "base": str(request.base_url),
        }
    )


async def st_go(request: StarletteRequest) -> StarletteRedirect:
    return StarletteRedirect(str(request.url_for("home")))


starlette_app = Starlette(
    routes=[
        StarletteRoute("/", st_home, name="home"),
        StarletteRoute("/items/{item_id:int}", st_item, name="item"),
        StarletteRoute("/go", st_go),
    ]
)


async def test_starlette_routes_url_for_and_redirect(
    serve: ServeFactory, placement: Placement
) -> None:
    handler = ASGIHandler(starlette_app, lifespan="off")
    async with served(serve, handler, placement) as client:
        base = origin(client) + placement.root
        assert (await client.get("/")).text == "starlette home"
        assert (await client.get("/items/3")).json() == {
            "id": 3,
            "url": f"{base}/items/7",
            "path": f"{placement.root}/items/3",
            "base": f"{base}/",
        }
        go = await client.get("/go")
        assert go.status_code == 307
        assert go.headers["location"] == f"{base}/"
        assert (await client.get("/nowhere")).status_code == 404


# --------------------------------------------------------------------------- Flask

flask_app = Flask("test_mounts")


@flask_app.get("/")
def fl_home() -> str:
    return "flask home"


@flask_app.get("/items/<int:item_id>")
def fl_item(item_id: int) -> Any:
    return jsonify(
        id=item_id,
        url=url_for("fl_item", item_id=7),
        external=url_for("fl_home", _external=True),
        script_root=flask_request.script_root,
        path=flask_request.path,
    )


@flask_app.get("/go")
def fl_go() -> Any:
    return flask_redirect(url_for("fl_home"))


async def test_flask_url_for_and_redirect(serve: ServeFactory, placement: Placement) -> None:
    async with served(serve, WSGIHandler(flask_app, threads=2), placement) as client:
        root = placement.root
        assert (await client.get("/")).text == "flask home"
        assert (await client.get("/items/3")).json() == {
            "id": 3,
            "url": f"{root}/items/7",
            "external": f"{origin(client)}{root}/",
            "script_root": root,
            "path": "/items/3",
        }
        go = await client.get("/go")
        assert go.status_code == 302
        assert go.headers["location"] == f"{root}/"
        assert (await client.get("/nowhere")).status_code == 404


# --------------------------------------------------------------------------- Django


def dj_home(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {
            "item": reverse("dj-item", args=[9]),
            "path": request.path,
            "path_info": request.path_info,
            "script_name": request.META["SCRIPT_NAME"],
            "absolute": request.build_absolute_uri(),
        }
    )


def dj_item(request: HttpRequest, item_id: int) -> HttpResponse:
    return JsonResponse({"id": item_id})


def dj_go(request: HttpRequest) -> HttpResponse:
    return django_redirect("dj-home")


#: This module is the URLconf of the Django tests (see the `django` fixture).
urlpatterns = [
    django_path("", dj_home, name="dj-home"),
    django_path("items/<int:item_id>", dj_item, name="dj-item"),
    django_path("go", dj_go),
]


@pytest.fixture
def django() -> Iterator[Any]:
    from apps.django_project.wsgi import application
    from django.test import override_settings

    with override_settings(ROOT_URLCONF=__name__):
        yield application


async def test_django_reverse_and_redirect(
    serve: ServeFactory, placement: Placement, django: Any
) -> None:
    async with served(serve, WSGIHandler(django, threads=2), placement) as client:
        root = placement.root
        assert (await client.get("/")).json() == {
            "item": f"{root}/items/9",
            "path": f"{root}/",
            "path_info": "/",
            "script_name": root,
            "absolute": f"{origin(client)}{root}/",
        }
        assert (await client.get("/items/4")).json() == {"id": 4}
        go = await client.get("/go")
        assert go.status_code == 302
        assert go.headers["location"] == f"{root}/"


# --------------------------------------------------------------------------- what mount accepts


@pytest.mark.parametrize(
    "app, wrapper",
    [(fastapi_app.app, "ASGIHandler"), (starlette_app, "ASGIHandler"), (flask_app, "WSGIHandler")],
    ids=["fastapi", "starlette", "flask"],
)
def test_mounting_a_bare_framework_app_says_which_wrapper_it_needs(app: Any, wrapper: str) -> None:
    with pytest.raises(TypeError, match=wrapper) as info:
        aserve.App().mount("/x", app)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- error handlers


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    return tmp_path


def with_error_pages(app: aserve.App) -> aserve.App:
    @app.exception_handler(404)
    async def not_found(request: aserve.Request, exc: aserve.HTTPException) -> aserve.Response:
        return aserve.HTMLResponse(f"<h1>custom 404 for {request.path}</h1>", status=404)

    @app.exception_handler(405)
    async def not_allowed(request: aserve.Request, exc: aserve.HTTPException) -> aserve.Response:
        allow = (exc.headers or {})["Allow"]
        return aserve.PlainTextResponse(f"custom 405, allow {allow}", status=405)

    @app.exception_handler(500)
    async def server_error(request: aserve.Request, exc: Exception) -> aserve.Response:
        return aserve.PlainTextResponse(f"custom 500: {type(exc).__name__}", status=500)

    return app


@pytest.mark.parametrize("debug", [False, True], ids=["no-debug", "debug"])
async def test_error_handlers_answer_a_mounted_staticfiles(
    serve: ServeFactory, tree: Path, debug: bool
) -> None:
    app = with_error_pages(aserve.App())
    app.mount("/static", aserve.StaticFiles(tree))
    async with serve(app, debug=debug) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/static/hello.txt")).text == "hello"
            missing = await client.get("/static/missing.txt")
            assert missing.status_code == 404
            assert missing.text == "<h1>custom 404 for /static/missing.txt</h1>"
            assert (await client.get("/static/sub/")).text.startswith("<h1>custom 404")
            assert (await client.get("/static/../etc/passwd")).status_code == 404
            post = await client.post("/static/hello.txt")
            assert (post.status_code, post.text) == (405, "custom 405, allow GET, HEAD")
            # The App's own 404 too, of course.
            assert (await client.get("/elsewhere")).text == "<h1>custom 404 for /elsewhere</h1>"


async def test_staticfiles_answers_stay_plain_without_handlers(
    serve: ServeFactory, tree: Path
) -> None:
    app = aserve.App()
    app.mount("/static", aserve.StaticFiles(tree))
    async with serve(app) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            missing = await client.get("/static/missing.txt")
            post = await client.post("/static/hello.txt")
    assert (missing.status_code, missing.text) == (404, "Not Found\n")
    assert missing.headers["content-type"] == "text/plain; charset=utf-8"
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")


async def test_staticfiles_conditional_answers_are_not_errors_to_replace(
    serve: ServeFactory, tree: Path
) -> None:
    app = aserve.App()

    @app.exception_handler(416)
    async def never(request: aserve.Request, exc: aserve.HTTPException) -> aserve.Response:
        raise AssertionError("a 416 of StaticFiles is its answer, not an error page")

    app.mount("/static", aserve.StaticFiles(tree))
    async with serve(app) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            reply = await client.get("/static/hello.txt", headers={"Range": "bytes=100-"})
    assert reply.status_code == 416
    assert reply.headers["content-range"] == "bytes */5"


async def test_error_handlers_reach_through_nested_apps(serve: ServeFactory, tree: Path) -> None:
    inner = aserve.App()

    @inner.get("/boom")
    async def boom(request: aserve.Request) -> aserve.Response:
        raise RuntimeError("inner boom")

    @inner.get("/gone")
    async def gone(request: aserve.Request) -> aserve.Response:
        # A response of its own, whatever its status: kept.
        return aserve.JSONResponse({"error": "item 3 is gone"}, status=404)

    inner.mount("/static", aserve.StaticFiles(tree))
    app = with_error_pages(aserve.App())
    app.mount("/inner", inner)
    async with serve(app) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            for path in ("/inner/nowhere", "/inner/static/missing.txt"):
                reply = await client.get(path)
                assert (reply.status_code, reply.text) == (404, f"<h1>custom 404 for {path}</h1>")
            post = await client.post("/inner/boom")
            assert (post.status_code, post.text) == (405, "custom 405, allow GET, HEAD, OPTIONS")
            failed = await client.get("/inner/boom")
            assert (failed.status_code, failed.text) == (500, "custom 500: RuntimeError")
            gone = await client.get("/inner/gone")
            assert (gone.status_code, gone.json()) == (404, {"error": "item 3 is gone"})


async def test_a_mounted_apps_own_handlers_come_first(serve: ServeFactory) -> None:
    inner = aserve.App()

    @inner.exception_handler(404)
    async def inner_404(request: aserve.Request, exc: aserve.HTTPException) -> aserve.Response:
        return aserve.PlainTextResponse("inner 404", status=404)

    app = with_error_pages(aserve.App())
    app.mount("/inner", inner)
    async with serve(app) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/inner/nowhere")).text == "inner 404"
            assert (await client.get("/nowhere")).text == "<h1>custom 404 for /nowhere</h1>"


async def test_a_mounted_apps_500_is_logged_once(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    inner = aserve.App()

    @inner.get("/boom")
    async def boom(request: aserve.Request) -> aserve.Response:
        raise RuntimeError("inner boom")

    app = with_error_pages(aserve.App())
    app.mount("/inner", inner)
    async with serve(app) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/inner/boom")).text == "custom 500: RuntimeError"
    logged = [r for r in caplog.records if r.name == "aserve.error" and r.levelno >= logging.ERROR]
    assert len(logged) == 1, logged


async def test_http_exception_from_a_mounted_handler_gets_the_handler(
    serve: ServeFactory,
) -> None:
    async def refuse(request: aserve.Request) -> aserve.Response:
        raise aserve.HTTPException(404)

    app = with_error_pages(aserve.App())
    app.mount("/h", refuse)
    async with serve(app) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/h/x")).text == "<h1>custom 404 for /h/x</h1>"


async def test_an_asgi_or_wsgi_apps_own_404_is_its_own(serve: ServeFactory) -> None:
    app = with_error_pages(aserve.App())
    app.mount("/fa", ASGIHandler(fastapi_app.app, lifespan="off"))
    app.mount("/fl", WSGIHandler(flask_app, threads=2))
    async with serve(app) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            fa = await client.get("/fa/nowhere")
            fl = await client.get("/fl/nowhere")
    assert (fa.status_code, fa.json()) == (404, {"detail": "Not Found"})
    assert fl.status_code == 404
    assert "custom 404" not in fl.text


# --------------------------------------------------------------------------- the command

START_LINE = re.compile(r"aserve \S+ serving .+ on http://127\.0\.0\.1:(?P<port>\d+) ")
STATIC_APP = textwrap.dedent(
    """
    import aserve

    app = aserve.App()

    @app.exception_handler(404)
    async def not_found(request, exc):
        return aserve.HTMLResponse("<h1>custom 404</h1>", status=404)

    app.mount("/static", aserve.StaticFiles("."))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("debug", [False, True], ids=["no-debug", "debug"])
def test_the_command_with_and_without_debug_uses_the_404_handler(
    tmp_path: Path, debug: bool
) -> None:
    (tmp_path / "staticapp.py").write_text(STATIC_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASERVE_")}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    args = ["staticapp:app", "--port", "0", *(["--debug"] if debug else [])]
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
        with httpx.Client(base_url=f"http://127.0.0.1:{match['port']}", timeout=5) as client:
            assert client.get("/static/staticapp.py").status_code == 200
            missing = client.get("/static/missing.txt")
        assert (missing.status_code, missing.text) == (404, "<h1>custom 404</h1>")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
