"""The access log on a real socket: the combined and JSON formats and
templates, bytes and duration to the last byte written, and the line of an
exchange that did not end well (the client left, the handler timed out)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import READ_TIMEOUT, ConnectFactory, ServeFactory

import aserve
from aserve.accesslog import compile_format
from aserve.middleware import RequestIdMiddleware

COMBINED = re.compile(
    r"(?P<client>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "
    r'"(?P<method>\S+) (?P<target>\S+) HTTP/(?P<version>[\d.]+)" (?P<status>\d{3}) '
    r'(?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" (?P<ms>[\d.]+)ms(?: (?P<outcome>\S+))?'
)


async def handler(request: aserve.Request) -> aserve.Response:
    if request.path == "/slow":
        await asyncio.sleep(0.2)
    if request.path == "/hang":
        await asyncio.sleep(60)
    if request.path == "/stream":

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(50):
                yield b"x" * 1000

        return aserve.StreamingResponse(chunks())
    if request.path == "/endless":

        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield b"y" * 65536

        return aserve.StreamingResponse(endless())
    return aserve.PlainTextResponse("hello")


def lines_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "aserve.access"]


async def until_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    async with asyncio.timeout(READ_TIMEOUT):
        while len(lines_of(caplog)) < count:
            await asyncio.sleep(0.01)
    return lines_of(caplog)


async def test_combined_lines_with_bytes_and_duration(
    serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.access")
    async with serve(handler, access_log=True) as server:
        client = await connect(server.port)
        await client.send(
            b"GET /slow?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: probe/1.0\r\n"
            b"Referer: https://from.example/\r\n\r\n"
        )
        await client.response()
        head_and_body = len(client.received)
        await client.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        streamed = await client.response()
        [slow, stream] = await until_lines(caplog, 2)
    first = COMBINED.fullmatch(slow)
    assert first is not None, slow
    assert first["client"] == "127.0.0.1" and first["target"] == "/slow?q=1"
    assert first["status"] == "200" and first["agent"] == "probe/1.0"
    assert first["referer"] == "https://from.example/" and first["outcome"] is None
    assert int(first["bytes"]) == head_and_body  # the head included, to the last byte
    assert 200 <= float(first["ms"]) < 2000
    second = COMBINED.fullmatch(stream)
    assert second is not None and len(streamed.body) == 50_000
    assert int(second["bytes"]) > 50_000  # chunked framing and the head on top


async def test_json_lines_carry_the_request_id(
    serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.access")
    app = aserve.App()
    app.middleware(RequestIdMiddleware())

    @app.get("/items/{n:int}")
    async def item(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse({"n": request.path_params["n"]})

    async with serve(app, access_log=True, access_log_format="json") as server:
        client = await connect(server.port)
        await client.send(b"GET /items/3?full=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await client.response()
        [line] = await until_lines(caplog, 1)
    record = json.loads(line)
    assert record["method"] == "GET" and record["path"] == "/items/3"
    assert record["query"] == "full=1" and record["status"] == 200
    assert record["http_version"] == "1.1" and record["client"] == "127.0.0.1"
    assert record["bytes"] > len(reply.body) and record["duration_ms"] >= 0
    assert record["user_agent"] is None and record["outcome"] == "ok"
    assert record["request_id"] == reply.header("x-request-id")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])


async def test_a_template(
    serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.access")
    template = "{method} {path} -> {status} in {duration_ms}ms ({outcome})"
    async with serve(handler, access_log=True, access_log_format=template) as server:
        client = await connect(server.port)
        await client.send(b"HEAD /x%41%s HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.response("HEAD")
        [line] = await until_lines(caplog, 1)
    # "%" in a path stays as sent (the line is no format string)
    assert re.fullmatch(r"HEAD /x%41%s -> 200 in [\d.]+ms \(ok\)", line), line


def test_bad_templates_are_refused_at_start() -> None:
    for spec in ("{nope}", "plain words", "{method"):
        with pytest.raises(aserve.ConfigError):
            compile_format(spec)


async def test_a_client_that_leaves_and_a_handler_that_times_out_show(
    serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aserve.access")
    async with serve(handler, access_log=True, handler_timeout=0.2) as server:
        client = await connect(server.port)
        await client.send(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.response()).status == 504
        gone = await connect(server.port)
        await gone.send(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        await gone.next_event()
        gone.writer.transport.abort()
        lines = await until_lines(caplog, 2)
    timed_out = COMBINED.fullmatch(lines[0])
    left = COMBINED.fullmatch(lines[1])
    assert timed_out is not None and left is not None, lines
    assert timed_out["status"] == "504" and timed_out["outcome"] == "handler-timeout"
    assert left["status"] == "200" and left["outcome"] == "client-gone"


async def test_static_files_count_what_sendfile_sent(
    serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, "aserve.access")
    (tmp_path / "big.bin").write_bytes(b"z" * 3_000_000)
    async with serve(aserve.StaticFiles(tmp_path), access_log=True) as server:
        client = await connect(server.port)
        await client.send(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await client.response(timeout=10)
        [line] = await until_lines(caplog, 1)
    match = COMBINED.fullmatch(line)
    assert match is not None and len(reply.body) == 3_000_000
    assert int(match["bytes"]) == len(client.received)


async def test_without_the_access_log_the_plain_protocol_runs(serve: ServeFactory) -> None:
    from aserve.protocol import HTTPProtocol, MeteredHTTPProtocol

    async with serve(handler) as server:
        assert server._state.observer is None
        assert server._state.protocol_class is HTTPProtocol
    async with serve(handler, access_log=True) as server:
        assert server._state.protocol_class is MeteredHTTPProtocol


def test_lines_are_made_only_when_the_logger_wants_them(monkeypatch: Any) -> None:
    from aserve import accesslog

    made: list[int] = []
    log = accesslog.AccessLog("combined")
    log.make_line = lambda done: made.append(1) or ""  # type: ignore[assignment, func-returns-value]
    logging.getLogger("aserve.access").setLevel(logging.WARNING)
    try:
        log.exchange_done(object())  # type: ignore[arg-type]
    finally:
        logging.getLogger("aserve.access").setLevel(logging.NOTSET)
    assert made == []


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str, int, float]] = []

    def exchange_done(self, done: Any) -> None:
        self.seen.append(
            (done.request.path, done.status, done.outcome, done.bytes_sent, done.duration)
        )


class Broken:
    def exchange_done(self, done: Any) -> None:
        raise RuntimeError("the observer fails")


async def test_a_program_s_observers_are_told_of_every_exchange(
    connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    recorder = Recorder()
    server = aserve.Server(
        handler, host="127.0.0.1", port=0, access_log=True, observers=[Broken(), recorder]
    )
    async with server:
        client = await connect(server.port)
        await client.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.response()
        await client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        await client.response()
        async with asyncio.timeout(READ_TIMEOUT):
            while len(recorder.seen) < 2:
                await asyncio.sleep(0.01)
    [(path, status, outcome, sent, took), second] = recorder.seen
    assert (path, status, outcome) == ("/slow", 200, "ok") and sent > 0 and took >= 0.2
    assert second[0] == "/x"
    assert len(lines_of(caplog)) == 2  # the access log, told too
    failures = [r for r in caplog.records if "observer" in r.getMessage()]
    assert len(failures) == 2 and failures[0].levelno == logging.ERROR


def test_an_observer_needs_exchange_done() -> None:
    with pytest.raises(TypeError, match="exchange_done"):
        aserve.Server(handler, observers=[object()])  # type: ignore[list-item]
