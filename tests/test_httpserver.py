"""http.server handler classes, the stdlib's own included, run unchanged on aserve.

Requests go out as raw bytes on a real socket; replies are parsed with h11,
so any framing the adapter gets wrong is an error here.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    READ_TIMEOUT,
    ConnectFactory,
    RawClient,
    ServeFactory,
    Start,
    exchange,
    replies,
    run_aserve,
    settle,
)

import aserve
from aserve.httpserver import HandlerServer, HTTPServerHandler, is_handler_class


class Quiet(http.server.BaseHTTPRequestHandler):
    """The tutorials' classes log every request on stderr; the tests keep it short."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class JSONApi(Quiet):
    """A JSON API written the way the http.server tutorials write it."""

    items: dict[str, Any] = {}

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        route = self.path.partition("?")[0]
        if route == "/items":
            self._send_json(200, self.items)
        elif route == "/whoami":
            self._send_json(
                200,
                {
                    "command": self.command,
                    "path": self.path,
                    "version": self.request_version,
                    "client": list(self.client_address),
                    "server_port": self.server.server_port,
                    "headers": dict(self.headers.items()),
                    "message_class": type(self.headers).__mro__[-2].__module__,
                },
            )
        else:
            self.send_error(404, "No such item")

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        data = json.loads(self.rfile.read(length))
        self.items[data["name"]] = data
        self._send_json(201, {"created": data["name"], "count": len(self.items)})


def get(path: str, *, close: bool = False, version: str = "1.1") -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/{version}\r\nHost: test\r\n{extra}\r\n".encode()


def post_json(path: str, payload: Any) -> bytes:
    body = json.dumps(payload).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "hello.txt").write_text("hello from a folder\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "index.html").write_text("<p>sub index</p>")
    (folder / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    return folder


# --------------------------------------------------------------------------- the stdlib's class


async def test_simple_http_request_handler_serves_a_folder_with_keep_alive(
    serve: ServeFactory, connect: ConnectFactory, site: Path
) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    async with serve(HTTPServerHandler(handler)) as server:
        client = await connect(server.port)
        # One connection for all of them, although the class speaks HTTP/1.0.
        await client.send(get("/hello.txt"))
        text = await client.response()
        await client.send(b"HEAD /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n")
        head = await client.response("HEAD")
        await client.send(get("/"))
        listing = await client.response()
        await client.send(get("/sub"))
        moved = await client.response()
        await client.send(get("/sub/"))
        index = await client.response()
        await client.send(get("/missing.txt"))
        missing = await client.response()
        await client.send(get("/big.bin"))
        big = await client.response()
    assert (text.status, text.body) == (200, b"hello from a folder\n")
    assert text.header("content-length") == "20"
    assert text.header("content-type") == "text/plain"
    assert text.header("last-modified") is not None
    assert text.header("server") == "aserve"  # one Server field: the server's own
    assert head.status == 200 and head.body == b"" and head.header("content-length") == "20"
    assert listing.status == 200 and b'<a href="hello.txt">hello.txt</a>' in listing.body
    assert moved.status == 301 and moved.header("location") == "/sub/"
    assert index.body == b"<p>sub index</p>"
    assert missing.status == 404 and b"File not found" in missing.body
    assert big.status == 200 and big.body == (site / "big.bin").read_bytes()
    assert not client.eof  # the connection stayed open throughout


async def test_simple_http_request_handler_answers_if_modified_since(
    serve: ServeFactory, connect: ConnectFactory, site: Path
) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    async with serve(HTTPServerHandler(handler)) as server:
        client = await connect(server.port)
        await client.send(get("/hello.txt"))
        first = await client.response()
        since = first.header("last-modified")
        assert since is not None
        await client.send(
            f"GET /hello.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: {since}\r\n\r\n".encode()
        )
        again = await client.response()
    assert again.status == 304 and again.body == b""


async def test_an_http_10_client_gets_the_answer_and_a_close(
    serve: ServeFactory, site: Path
) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    async with serve(HTTPServerHandler(handler)) as server:
        events = await exchange(server.port, get("/hello.txt", version="1.0"))
    [reply] = replies(events)
    assert reply.body == b"hello from a folder\n"


# --------------------------------------------------------------------------- a JSON API


async def test_a_tutorial_json_api(serve: ServeFactory, connect: ConnectFactory) -> None:
    class Api(JSONApi):
        items: dict[str, Any] = {}

    async with serve(HTTPServerHandler(Api)) as server:
        client = await connect(server.port)
        await client.send(post_json("/items", {"name": "apple", "price": 3}))
        created = await client.response()
        await client.send(post_json("/items", {"name": "pear", "price": 4}))
        second = await client.response()
        await client.send(get("/items"))
        listed = await client.response()
        await client.send(get("/nope"))
        missing = await client.response()
    assert created.status == 201
    assert json.loads(created.body) == {"created": "apple", "count": 1}
    assert json.loads(second.body)["count"] == 2
    assert json.loads(listed.body) == {
        "apple": {"name": "apple", "price": 3},
        "pear": {"name": "pear", "price": 4},
    }
    assert missing.status == 404
    assert b"No such item" in missing.body


async def test_what_the_class_sees_of_its_request(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(HTTPServerHandler(JSONApi)) as server:
        port = server.port
        client = await connect(port)
        await client.send(b"GET /whoami HTTP/1.1\r\nHost: test\r\nX-Custom-Thing: 42\r\n\r\n")
        reply = await client.response()
    seen = json.loads(reply.body)
    assert seen["command"] == "GET"
    assert seen["path"] == "/whoami"
    assert seen["version"] == "HTTP/1.1"
    assert seen["client"] == ["127.0.0.1", client.client_port]
    assert seen["server_port"] == port
    assert seen["headers"]["Host"] == "test"
    assert seen["headers"]["X-Custom-Thing"] == "42"
    assert seen["message_class"] == "email.message"


async def test_a_chunked_upload_reaches_the_class_with_a_content_length(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    class Api(JSONApi):
        items: dict[str, Any] = {}

    body = json.dumps({"name": "plum"}).encode()
    async with serve(HTTPServerHandler(Api)) as server:
        client = await connect(server.port)
        await client.send(
            b"POST /items HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        )
        reply = await client.response()
    assert reply.status == 201
    assert json.loads(reply.body) == {"created": "plum", "count": 1}


async def test_rfile_ends_with_the_body(serve: ServeFactory, connect: ConnectFactory) -> None:
    class ReadAll(Quiet):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            data = self.rfile.read()  # to the end: the body's end, not the next request
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    async with serve(HTTPServerHandler(ReadAll)) as server:
        client = await connect(server.port)
        for size in (0, 5, 300_000):
            await client.send(b"PUT / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
            await client.send(b"z" * size)
            reply = await client.response()
            assert reply.body == b"z" * size


async def test_mounted_under_a_prefix_the_class_sees_the_path_below_it(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    app = aserve.App()
    app.mount("/legacy", HTTPServerHandler(JSONApi))
    async with serve(app) as server:
        client = await connect(server.port)
        await client.send(get("/legacy/whoami?x=1"))
        reply = await client.response()
    assert json.loads(reply.body)["path"] == "/whoami?x=1"


# --------------------------------------------------------------------------- errors


class Raises(Quiet):
    def do_GET(self) -> None:
        if self.path == "/late":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"the start of a body")
        raise RuntimeError("the handler class failed")


async def test_a_class_that_raises_gets_a_500_and_the_server_goes_on(
    serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(HTTPServerHandler(Raises)) as server:
        events = await exchange(server.port, get("/"))
        client = await connect(server.port)
        await client.send(get("/late"))
        late = await client.read_until_close()
        again = await exchange(server.port, get("/"))
    [reply] = replies(events)
    assert reply.status == 500
    assert b"the handler class failed" not in reply.body
    assert any("the handler class failed" in str(r.exc_info) for r in caplog.records)
    # After the head went out: the connection is cut, the body incomplete.
    assert late.startswith(b"HTTP/1.1 200 ")
    assert b"the start of a body" in late
    assert not late.endswith(b"0\r\n\r\n")
    assert replies(again)[0].status == 500


async def test_send_error_404_is_the_class_s_own_page(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    class NotFound(Quiet):
        def do_GET(self) -> None:
            self.send_error(404, "Nothing here", "Really nothing")

    async with serve(HTTPServerHandler(NotFound)) as server:
        client = await connect(server.port)
        await client.send(get("/a"))
        first = await client.response()
        await client.send(get("/b"))  # send_error says Connection: close; aserve keeps it
        second = await client.response()
    for reply in (first, second):
        assert reply.status == 404
        assert b"Nothing here" in reply.body and b"Really nothing" in reply.body
        assert reply.header("content-type") == "text/html;charset=utf-8"
        assert reply.header("connection") is None


async def test_a_method_the_class_lacks_is_its_own_501(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(HTTPServerHandler(JSONApi)) as server:
        client = await connect(server.port)
        await client.send(b"DELETE /items HTTP/1.1\r\nHost: t\r\n\r\n")
        reply = await client.response()
    assert reply.status == 501
    assert b"Unsupported method" in reply.body


async def test_bytes_that_are_not_a_response_give_500(serve: ServeFactory) -> None:
    class Garbage(Quiet):
        def do_GET(self) -> None:
            self.wfile.write(b"this is not HTTP\r\n\r\n")

    async with serve(HTTPServerHandler(Garbage)) as server:
        events = await exchange(server.port, get("/"))
    assert replies(events)[0].status == 500


async def test_a_class_that_writes_nothing_gives_500(serve: ServeFactory) -> None:
    class Silent(Quiet):
        def do_GET(self) -> None:
            pass

    async with serve(HTTPServerHandler(Silent)) as server:
        events = await exchange(server.port, get("/"))
    assert replies(events)[0].status == 500


# --------------------------------------------------------------------------- streaming


class Stream(Quiet):
    """An HTTP/1.0 class that streams without a Content-Length, ending by closing."""

    produced = 0
    stopped = threading.Event()
    failure: list[BaseException] = []

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        count = int(self.path.strip("/") or 0)
        try:
            for _ in range(count) if count else iter(int, 1):
                self.wfile.write(b"x" * 65536)
                type(self).produced += 65536
        except OSError as exc:
            type(self).failure.append(exc)
            raise
        finally:
            type(self).stopped.set()


async def test_a_body_without_length_is_chunked_and_keep_alive_holds(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    class Short(Stream):
        pass

    async with serve(HTTPServerHandler(Short)) as server:
        client = await connect(server.port)
        await client.send(get("/3"))
        first = await client.response()
        await client.send(get("/1"))
        second = await client.response()
    assert first.header("transfer-encoding") == "chunked"
    assert first.body == b"x" * 3 * 65536
    assert second.body == b"x" * 65536


async def test_a_slow_client_holds_the_thread_not_memory(
    serve: ServeFactory, connect: ConnectFactory
) -> None:
    class Endless(Stream):
        produced = 0
        stopped = threading.Event()
        failure: list[BaseException] = []

    async with serve(HTTPServerHandler(Endless, threads=2)) as server:
        client = await connect(server.port, rcvbuf=16384)
        await client.send(get("/"))
        stalled = await settle(lambda: Endless.produced)
        assert stalled < 8 * 1024 * 1024  # the class waits for the socket
        await client.close()
        await asyncio.to_thread(Endless.stopped.wait, READ_TIMEOUT)
    assert Endless.stopped.is_set()
    assert Endless.failure and isinstance(Endless.failure[0], BrokenPipeError)


# --------------------------------------------------------------------------- concurrency


async def test_a_hundred_clients_at_once_are_all_answered(serve: ServeFactory) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    class Sleepy(Quiet):
        def do_GET(self) -> None:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.1)
            with lock:
                running -= 1
            body = self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    async def one(port: int, index: int) -> bytes:
        client = await RawClient.connect(port)
        try:
            await client.send(get(f"/{index}"))
            reply = await client.response(timeout=15)
        finally:
            await client.close()
        return reply.body

    async with serve(HTTPServerHandler(Sleepy, threads=20), backlog=256) as server:
        bodies = await asyncio.gather(*(one(server.port, i) for i in range(100)))
    assert bodies == [f"/{i}".encode() for i in range(100)]
    assert peak == 20  # the pool is bounded, and full


# --------------------------------------------------------------------------- the parts


def test_which_objects_are_handler_classes() -> None:
    assert is_handler_class(http.server.SimpleHTTPRequestHandler)
    assert is_handler_class(functools.partial(http.server.SimpleHTTPRequestHandler, directory="."))
    assert is_handler_class(JSONApi)
    assert not is_handler_class(http.server.HTTPServer)
    assert not is_handler_class(lambda request: None)


def test_threads_must_be_positive() -> None:
    with pytest.raises(aserve.ConfigError):
        HTTPServerHandler(JSONApi, threads=0)


def test_the_server_stand_in_is_shared_state() -> None:
    handler = HTTPServerHandler(JSONApi)
    assert isinstance(handler.server, HandlerServer)
    assert handler.server.RequestHandlerClass is JSONApi
    own = object()
    assert HTTPServerHandler(JSONApi, server=own).server is own


# --------------------------------------------------------------------------- the command


APP = textwrap.dedent(
    """
    import json, time
    from http.server import BaseHTTPRequestHandler

    class Api(BaseHTTPRequestHandler):
        def do_POST(self):
            data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps({"echo": data, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def not_a_class(environ, start_response):
        return []
    """
)


def test_the_stdlib_class_through_the_command(tmp_path: Path, start: Start) -> None:
    (tmp_path / "page.txt").write_text("served by the stdlib's own class\n")
    server = start("http.server:SimpleHTTPRequestHandler", "--port", "0")
    assert server.match.group("what") == "http.server:SimpleHTTPRequestHandler (httpserver)"
    assert server.body("/page.txt") == b"served by the stdlib's own class\n"
    assert server.get("/nope").status == 404
    status, stderr = server.stop()
    assert status == 0
    assert '"GET /page.txt HTTP/1.1" 200' in stderr  # the class's own log_message


def test_a_module_class_through_the_command(tmp_path: Path, start: Start) -> None:
    import http.client

    (tmp_path / "legacy.py").write_text(APP)
    server = start("legacy:Api", "--port", "0", "--threads", "4")
    assert server.match.group("what") == "legacy:Api (httpserver)"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", "/x?y=1", body=b'{"a": 1}', headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    assert json.loads(reply.read()) == {"echo": {"a": 1}, "path": "/x?y=1"}
    conn.request("POST", "/again", body=b"[2]")  # the same connection
    assert json.loads(conn.getresponse().read())["echo"] == [2]
    conn.close()
    assert server.stop()[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["legacy:Api", "--interface", "wsgi"], "but Api is an http.server handler class"),
        (["legacy:not_a_class", "--interface", "httpserver"], "is no http.server handler class"),
    ],
)
def test_forcing_the_wrong_interface_is_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "legacy.py").write_text(APP)
    result = run_aserve(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aserve: error: ")
    assert message in lines[0]


@pytest.mark.parametrize(
    ("bare", "advice"),
    [
        (JSONApi, "give aserve.httpserver.HTTPServerHandler(JSONApi) instead"),
        (
            functools.partial(http.server.SimpleHTTPRequestHandler, directory="."),
            "give aserve.httpserver.HTTPServerHandler("
            "functools.partial(SimpleHTTPRequestHandler, ...)) instead",
        ),
    ],
)
def test_mounting_a_bare_handler_class_says_to_wrap_it(bare: Any, advice: str) -> None:
    app = aserve.App()
    with pytest.raises(TypeError, match="is an http.server handler class") as caught:
        app.mount("/legacy", bare)
    assert str(caught.value).endswith(advice)
    assert "\n" not in str(caught.value)
    app.mount("/legacy", HTTPServerHandler(bare))  # what the message says works
