"""Real Flask and Django apps served by the WSGI adapter, driven with httpx."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from apps import flask_app
from conftest import READ_TIMEOUT, ServeFactory

from aserve.wsgi import WSGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.django_project.settings")


@contextlib.asynccontextmanager
async def served(serve: ServeFactory, app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(WSGIHandler(app, threads=4)) as server:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=READ_TIMEOUT
        ) as client:
            yield client


# --------------------------------------------------------------------------- Flask


@pytest.fixture
async def flask(serve: ServeFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with served(serve, flask_app.app) as client:
        yield client


async def test_flask_page_and_json(flask: httpx.AsyncClient) -> None:
    home = await flask.get("/")
    assert home.text == "Hello from Flask"
    assert home.headers["content-length"] == str(len("Hello from Flask"))
    item = await flask.get("/items/5", params={"q": "x"})
    assert item.json() == {"id": 5, "q": "x"}


async def test_flask_form_upload(flask: httpx.AsyncClient) -> None:
    content = b"\x00\xff" * 200_000
    reply = await flask.post(
        "/upload", data={"name": "archive"}, files={"file": ("a.bin", content)}
    )
    assert reply.json() == {"name": "archive", "filename": "a.bin", "size": len(content)}


async def test_flask_reads_a_chunked_upload(flask: httpx.AsyncClient) -> None:
    async def upload() -> AsyncIterator[bytes]:
        for _ in range(32):
            yield b"c" * 65536

    reply = await flask.post("/echo", content=upload())
    assert reply.json() == {"size": 32 * 65536}


async def test_flask_streamed_response(flask: httpx.AsyncClient) -> None:
    flask_app.closed.clear()
    reply = await flask.get("/stream", params={"count": 200})
    assert reply.headers["transfer-encoding"] == "chunked"
    assert reply.text == "".join(f"line {i}\n" for i in range(200))
    assert flask_app.closed == [True]


async def test_flask_error_and_404(flask: httpx.AsyncClient) -> None:
    failed = await flask.get("/fail")
    assert failed.status_code == 500
    missing = await flask.get("/missing")
    assert missing.status_code == 404
    assert (await flask.get("/")).status_code == 200


async def test_flask_sees_a_pep_3333_environ(flask: httpx.AsyncClient) -> None:
    reply = await flask.get("/environ", params={"a": "1"})
    environ = reply.json()
    assert environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == "/environ"
    assert environ["QUERY_STRING"] == "a=1"
    assert environ["SERVER_NAME"] == "127.0.0.1"


# --------------------------------------------------------------------------- Django


@pytest.fixture
async def django(serve: ServeFactory) -> AsyncIterator[httpx.AsyncClient]:
    from apps.django_project.wsgi import application

    async with served(serve, application) as client:
        yield client


async def test_django_view(django: httpx.AsyncClient) -> None:
    reply = await django.get("/")
    assert reply.status_code == 200
    assert reply.text == "Hello from Django"
    item = await django.get("/items/9", params={"q": "y"})
    assert item.json() == {"id": 9, "q": "y"}


async def test_django_form_post_with_csrf(django: httpx.AsyncClient) -> None:
    token = (await django.get("/form")).json()["csrftoken"]
    assert django.cookies.get("csrftoken")
    reply = await django.post(
        "/form",
        data={"name": "upload", "csrfmiddlewaretoken": token},
        files={"file": ("f.txt", b"q" * 100_000)},
        headers={"Referer": str(django.base_url)},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"name": "upload", "size": 100_000}


async def test_django_form_post_without_csrf_is_refused(django: httpx.AsyncClient) -> None:
    reply = await django.post("/form", data={"name": "x"})
    assert reply.status_code == 403


async def test_django_streamed_response(django: httpx.AsyncClient) -> None:
    reply = await django.get("/stream", params={"count": 100})
    assert reply.headers["transfer-encoding"] == "chunked"
    assert reply.text == "".join(f"row {i}\n" for i in range(100))


async def test_django_404(django: httpx.AsyncClient) -> None:
    reply = await django.get("/no/such/page")
    assert reply.status_code == 404
    assert (await django.get("/")).status_code == 200
