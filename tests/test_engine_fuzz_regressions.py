"""Inputs the protocol fuzzer (fuzz/fuzz_protocol.py) found, replayed over a real socket.

Each test names the fuzzer's finding it comes from (see fuzz/README.md). A
finding not fixed yet is marked xfail: xfail is strict, so the fix makes the
test pass and the marker has to go.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from conftest import READ_TIMEOUT, ConnectFactory, ServeFactory, assert_serving

import aserve


async def hello(request: aserve.Request) -> aserve.Response:
    await request.body()
    return aserve.Response(b"hello\n", media_type="text/plain")


async def _collect_loop_errors(errors: list[dict[str, Any]]) -> None:
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.exc_info is not None and record.name.startswith("aserve")
    ]


async def _head_or_close(client: Any) -> bytes:
    """Read until a whole response head arrived or the server closed."""
    data = b""
    async with asyncio.timeout(READ_TIMEOUT):
        while b"\r\n\r\n" not in data:
            chunk = await client.reader.read(65536)
            if not chunk:
                break
            data += chunk
    return data


async def test_connect_request_gets_an_answer(
    serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Fuzz finding 1: b"CONNECT test:443 HTTP/1.1\r\nHost: test:443\r\n\r\n" (any
    # CONNECT, HTTP/1.0 too) reached the handler; its 200 made h11 switch protocols,
    # sending the body then failed inside the engine and the client got no answer
    # at all. aserve serves no tunnels: the client must get a whole response (a
    # refusal such as 501), nothing may fail inside the engine, and the server goes
    # on serving.
    caplog.set_level(logging.INFO, logger="aserve")
    errors: list[dict[str, Any]] = []
    await _collect_loop_errors(errors)
    async with serve(hello) as server:
        client = await connect(server.port)
        await client.send(b"CONNECT test:443 HTTP/1.1\r\nHost: test:443\r\n\r\n")
        head = await _head_or_close(client)
        await client.close()
        await assert_serving(server.port)
    gc.collect()
    await asyncio.sleep(0)
    assert head.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in head, head
    assert not _tracebacks(caplog)
    assert not errors, [e.get("message") for e in errors]


@pytest.mark.parametrize("empty_line", [b"\r\n", b"\n"], ids=["crlf", "lf"])
async def test_empty_line_then_one_byte_of_the_request_line(
    serve: ServeFactory, connect: ConnectFactory, empty_line: bytes
) -> None:
    # Fuzz finding 2: a read holding an empty line and then exactly one more byte
    # (b"\r\nG", b"\ns") raised IndexError out of data_received: skipping the
    # empty line shrank the buffer that was then indexed at its old length.
    async with serve(hello) as server:
        client = await connect(server.port)
        await client.send(empty_line + b"G")
        # Nothing to await: give the server time to read these bytes on their own.
        await asyncio.sleep(0.05)
        await client.send(b"ET / HTTP/1.1\r\nHost: test\r\n\r\n")
        reply = await client.response()
    assert reply.status == 200
    assert reply.body == b"hello\n"
