"""Response extras: cookies, mutable headers, redirects, JSON, server-sent events."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator

import pytest
from conftest import ConnectFactory, ServeFactory

import aserve
from aserve.response import EventSourceResponse, ServerSentEvent
from aserve.testing import TestClient


def test_set_and_delete_cookie_headers() -> None:
    response = aserve.Response()
    response.set_cookie("session", "abc", max_age=60, httponly=True, secure=True)
    response.set_cookie("theme", "dark mode", path="/app", domain="example.com", samesite=None)
    response.delete_cookie("old")
    cookies = response.headers.getall("set-cookie")
    assert cookies[0] == "session=abc; HttpOnly; Max-Age=60; Path=/; SameSite=Lax; Secure"
    assert cookies[1] == 'theme="dark mode"; Domain=example.com; Path=/app'
    assert cookies[2].startswith('old=""; expires=')
    assert "Max-Age=0" in cookies[2]


def test_cookie_expires_as_a_datetime() -> None:
    response = aserve.Response()
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    response.set_cookie("a", "1", expires=when)
    assert "expires=Wed, 02 Jan 2030 03:04:05 GMT" in response.headers["set-cookie"]


@pytest.mark.parametrize("name", ["bad name", "semi;colon", ""])
def test_bad_cookie_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        aserve.Response().set_cookie(name, "x")


def test_headers_are_a_mutable_case_insensitive_view() -> None:
    response = aserve.JSONResponse({"a": 1}, headers={"X-One": "1"})
    headers = response.headers
    headers["x-one"] = "uno"
    headers.append("X-Two", "2")
    headers.append("x-two", "deux")
    del response.headers["Content-Type"]
    assert response.raw_headers == [
        (b"x-one", b"uno"),
        (b"content-length", b"7"),
        (b"x-two", b"2"),
        (b"x-two", b"deux"),
    ]
    with pytest.raises(ValueError):
        headers["x-evil"] = "a\r\nSet-Cookie: b"


async def test_cookies_round_trip_through_a_client() -> None:
    app = aserve.App()

    @app.get("/login")
    async def login(request: aserve.Request) -> aserve.Response:
        response = aserve.RedirectResponse("/me", status=303)
        response.set_cookie("user", "ann")
        return response

    @app.get("/me")
    async def me(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse(request.cookies.get("user", "nobody"))

    async with TestClient(app, follow_redirects=True) as client:
        response = await client.get("/login")
    assert response.text == "ann"
    assert response.history[0].status_code == 303


def test_server_sent_event_encoding() -> None:
    assert ServerSentEvent("hi").encode() == b"data: hi\n\n"
    assert ServerSentEvent("a\nb", event="tick", id="7", retry=1000).encode() == (
        b"event: tick\nid: 7\nretry: 1000\ndata: a\ndata: b\n\n"
    )
    assert ServerSentEvent({"n": 1}).encode() == b'data: {"n":1}\n\n'
    assert ServerSentEvent(comment="keep").encode() == b": keep\n\n"
    with pytest.raises(ValueError):
        ServerSentEvent("x", event="a\nb").encode()


async def test_event_source_streams_events_with_keep_alive_pings() -> None:
    app = aserve.App()
    gate = asyncio.Event()
    closed = asyncio.Event()

    @app.get("/events")
    async def events(request: aserve.Request) -> aserve.Response:
        async def produce() -> AsyncIterator[ServerSentEvent | str | dict[str, object]]:
            try:
                yield "first"
                await gate.wait()  # silence: pings go out meanwhile
                yield {"data": "second", "event": "tick"}
                yield ServerSentEvent(data=[1, 2], id="3")
            finally:
                closed.set()

        return EventSourceResponse(produce(), ping_interval=0.05)

    async with TestClient(app) as client, client.stream("GET", "/events") as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        received = b""
        async for chunk in response.aiter_bytes():
            received += chunk
            if received.count(b": ping") >= 2:
                gate.set()
            if b"id: 3" in received:
                break
    await asyncio.wait_for(closed.wait(), 3)
    assert received.startswith(b"data: first\n\n: ping\n\n")
    assert received.endswith(b"event: tick\ndata: second\n\nid: 3\ndata: [1,2]\n\n")


async def test_event_source_generator_is_closed_when_the_client_leaves(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    closed = asyncio.Event()
    started = asyncio.Event()

    async def events(request: aserve.Request) -> aserve.Response:
        async def forever() -> AsyncIterator[str]:
            try:
                started.set()
                while True:
                    await asyncio.sleep(3600)
                    yield "never"
            finally:
                closed.set()

        return EventSourceResponse(forever(), ping_interval=0.05)

    async with serve(events) as server:
        client = await connect(server.port)
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.wait_for(started.wait(), 3)
        await client.next_event()  # the response head
        await client.close()
        await asyncio.wait_for(closed.wait(), 3)


async def test_event_source_without_pings() -> None:
    async def events(request: aserve.Request) -> aserve.Response:
        return EventSourceResponse(["a", "b"], ping_interval=None)

    async with TestClient(events) as client:
        response = await client.get("/")
    assert response.text == "data: a\n\ndata: b\n\n"


def test_status_is_the_same_attribute_as_status_code() -> None:
    response = aserve.PlainTextResponse("x", status=201)
    assert response.status == response.status_code == 201
    response.status = 202  # a middleware changing it either way
    assert response.status_code == 202
    response.status_code = 203
    assert response.status == 203
