"""request.form(): urlencoded and multipart bodies, uploads, spooling, limits, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import ConnectFactory, ServeFactory

import aserve
from aserve.forms import FormLimits, MultipartParser, media_type_params
from aserve.testing import TestClient


def form_app(**limits: Any) -> aserve.App:
    app = aserve.App()

    @app.post("/form")
    async def form(request: aserve.Request) -> aserve.Response:
        data = await request.form(**limits)
        out: list[Any] = []
        for name, value in data.multi_items():
            if isinstance(value, aserve.UploadFile):
                content = await value.read()
                out.append(
                    [
                        name,
                        {
                            "filename": value.filename,
                            "content_type": value.content_type,
                            "size": value.size,
                            "head": content[:20].decode("latin-1"),
                        },
                    ]
                )
            else:
                out.append([name, value])
        return aserve.JSONResponse(out)

    return app


async def test_urlencoded_form() -> None:
    async with TestClient(form_app()) as client:
        response = await client.post("/form", data={"name": "Ann Lee", "tags": ["a", "é"]})
    assert response.json() == [["name", "Ann Lee"], ["tags", "a"], ["tags", "é"]]


async def test_multipart_form_with_fields_and_files() -> None:
    files = [
        ("doc", ("notes.txt", b"hello notes", "text/plain")),
        ("doc", ("photo.png", b"\x89PNG" + bytes(range(256)), "image/png")),
    ]
    async with TestClient(form_app()) as client:
        response = await client.post("/form", data={"title": "Trip — day 1"}, files=files)
    assert response.status_code == 200, response.text
    assert response.json() == [
        ["title", "Trip — day 1"],
        [
            "doc",
            {
                "filename": "notes.txt",
                "content_type": "text/plain",
                "size": 11,
                "head": "hello notes",
            },
        ],
        [
            "doc",
            {
                "filename": "photo.png",
                "content_type": "image/png",
                "size": 260,
                "head": (b"\x89PNG" + bytes(range(16))).decode("latin-1"),
            },
        ],
    ]


async def test_a_large_upload_is_spooled_to_disk_and_read_back_whole() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    app = aserve.App()
    seen: dict[str, Any] = {}

    @app.post("/upload")
    async def upload(request: aserve.Request) -> aserve.Response:
        form = await request.form(spool_size=64 * 1024)
        upload = form["file"]
        assert isinstance(upload, aserve.UploadFile)
        seen["upload"] = upload
        seen["rolled"] = getattr(upload.file, "_rolled", None)
        data = await upload.read()
        return aserve.JSONResponse({"size": upload.size, "same": data == payload})

    async with TestClient(app) as client:
        response = await client.post("/upload", files={"file": ("big.bin", payload)})
    assert response.json() == {"size": len(payload), "same": True}
    assert seen["rolled"] is True
    assert seen["upload"].file.closed  # the App closed it after the response


async def test_form_is_parsed_once_and_kept() -> None:
    app = aserve.App()

    @app.post("/")
    async def twice(request: aserve.Request) -> aserve.Response:
        first = await request.form()
        second = await request.form()
        return aserve.PlainTextResponse(str(first is second))

    async with TestClient(app) as client:
        assert (await client.post("/", data={"a": "1"})).text == "True"


def multipart(*parts: bytes, boundary: bytes = b"XyZ") -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + (
        b"--" + boundary + b"--\r\n"
    )


FIELD = b'Content-Disposition: form-data; name="a"\r\n\r\nvalue'

BAD_FORMS = [
    # (content type, body, status, reason)
    ("multipart/form-data", multipart(FIELD), 400, "boundary"),
    ("multipart/form-data; boundary=XyZ", multipart(FIELD)[:-9], 400, "ends before"),
    ("multipart/form-data; boundary=XyZ", b"no boundary at all", 400, "ends before"),
    ("multipart/form-data; boundary=XyZ", multipart(b"\r\nvalue"), 400, "Content-Disposition"),
    (
        "multipart/form-data; boundary=XyZ",
        multipart(b"Content-Disposition: attachment\r\n\r\nv"),
        400,
        "not a named form-data",
    ),
    (
        "multipart/form-data; boundary=XyZ",
        multipart(b"Content-Disposition form-data\r\n\r\nv"),
        400,
        "bad part header",
    ),
    (
        "multipart/form-data; boundary=XyZ",
        multipart(b'Content-Disposition: form-data; name="a"\r\n\r\n\xff\xfe'),
        400,
        "is not utf-8",
    ),
    (
        "multipart/form-data; boundary=XyZ",
        multipart(
            b'Content-Disposition: form-data; name="a"\r\nContent-Type: text/plain; '
            b"charset=bogus\r\n\r\nv"
        ),
        400,
        "is not bogus",
    ),
    (
        "multipart/form-data; boundary=XyZ",
        b"--XyZ\r\n" + FIELD + b"\r\n--XyZjunk\r\n",
        400,
        "bad boundary line",
    ),
    (
        "multipart/form-data; boundary=XyZ",
        multipart(b"Content-Disposition: form-data; name=a\r\n" + b"X: y\r\n" * 3000),
        413,
        "headers too large",
    ),
    ("application/x-www-form-urlencoded", b"a=%ff", 400, "Malformed form"),
    ("application/json", b"{}", 415, "Unsupported form type"),
]


@pytest.mark.parametrize(("content_type", "body", "status", "reason"), BAD_FORMS)
async def test_malformed_forms_get_a_short_400_or_413(
    serve: ServeFactory,
    connect: ConnectFactory,
    content_type: str,
    body: bytes,
    status: int,
    reason: str,
) -> None:
    async with serve(form_app()) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Type: "
            + content_type.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        reply = await client.response()
    assert reply.status == status, reply.body
    assert reason.encode() in reply.body
    assert len(reply.body) < 200


@pytest.mark.parametrize(
    ("limits", "data", "files", "reason"),
    [
        ({"max_size": 100}, {"a": "x" * 200}, None, "Form larger than 100 bytes"),
        ({"max_size": 100}, None, {"f": ("a.txt", b"x" * 200)}, "Form larger than 100 bytes"),
        ({"max_fields": 2}, {"a": ["1", "2", "3"]}, None, "Too many fields"),
        ({"max_fields": 1}, {"a": ["1", "2"]}, {"f": ("a", b"1")}, "Too many fields"),
        ({"max_files": 1}, None, [("f", ("a", b"1")), ("f", ("b", b"2"))], "Too many files"),
        ({"max_field_size": 10}, {"a": "x" * 11}, {"f": ("a", b"1")}, "larger than 10 bytes"),
    ],
)
async def test_form_limits_are_413(
    limits: dict[str, int], data: Any, files: Any, reason: str
) -> None:
    async with TestClient(form_app(**limits)) as client:
        response = await client.post("/form", data=data, files=files)
    assert response.status_code == 413
    assert reason in response.text


async def test_server_body_limit_still_applies_to_forms() -> None:
    async with TestClient(form_app(), max_body_size=1000) as client:
        response = await client.post("/form", files={"f": ("a", b"x" * 5000)})
    assert response.status_code == 413


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
async def test_multipart_parser_is_indifferent_to_chunk_boundaries(size: int) -> None:
    body = (
        b"preamble to ignore\r\n"
        + multipart(
            FIELD,
            b'Content-Disposition: form-data; name="f"; filename="a\\"b.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nline1\r\n--XyNot\r\n-XyZ\r\nline3",
            b'Content-Disposition: form-data; name="empty"\r\n\r\n',
        )
        + b"epilogue"
    )
    form = await MultipartParser(b"XyZ", FormLimits()).parse(chunks(body, size))
    upload = form["f"]
    assert isinstance(upload, aserve.UploadFile)
    assert form["a"] == "value"
    assert form["empty"] == ""
    assert upload.filename == 'a"b.txt'
    assert await upload.read() == b"line1\r\n--XyNot\r\n-XyZ\r\nline3"
    await form.close()


def test_media_type_params() -> None:
    assert media_type_params('multipart/form-data; boundary="a;b"; x=1') == (
        "multipart/form-data",
        {"boundary": "a;b", "x": "1"},
    )
    assert media_type_params('form-data; name="f"; filename="C:\\dir\\a.txt"')[1] == {
        "name": "f",
        "filename": "C:\\dir\\a.txt",
    }


async def test_an_upload_abandoned_midway_ends_the_handler_and_frees_the_file(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    outcome: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    app = aserve.App()

    @app.post("/upload")
    async def upload(request: aserve.Request) -> aserve.Response:
        try:
            await request.form()
        except BaseException as exc:
            outcome.set_result(exc)
            raise
        return aserve.Response()

    head = b'Content-Disposition: form-data; name="f"; filename="a.bin"\r\n\r\n'
    async with serve(app) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /upload HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: multipart/form-data; boundary=XyZ\r\n"
            b"Content-Length: 1000000\r\n\r\n--XyZ\r\n" + head + b"x" * 5000
        )
        await client.close()
        exc = await asyncio.wait_for(outcome, 3)
        assert isinstance(exc, aserve.ClientDisconnected)
        other = await connect(server.port)
        await other.send(b"GET /upload HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await other.response()).status == 405
