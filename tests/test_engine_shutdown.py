"""Graceful shutdown: stop listening at once, close idle connections, let
in-flight requests finish with `Connection: close`, cancel what outlives the
graceful timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from conftest import READ_TIMEOUT, ConnectFactory, Handler, refused

import aserve

GET_FAST = b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n"
GET_SLOW = b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n"


class Gate:
    """A handler whose /slow requests wait until the test opens the gate."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, request: aserve.Request) -> aserve.Response:
        if request.path == "/slow":
            self.started.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return aserve.PlainTextResponse("slow done")
        return aserve.PlainTextResponse("fast")


@contextlib.asynccontextmanager
async def running(handler: Handler, **options: Any) -> AsyncIterator[aserve.Server]:
    """A started server for tests that call shutdown() themselves (and a safety net)."""
    server = aserve.Server(handler, host="127.0.0.1", port=0, **options)
    async with asyncio.timeout(READ_TIMEOUT):
        await server.start()
    try:
        yield server
    finally:
        async with asyncio.timeout(READ_TIMEOUT):
            await server.shutdown(timeout=0.5)


async def test_shutdown_lets_the_in_flight_request_finish_and_closes_the_rest(
    connect: ConnectFactory,
) -> None:
    gate = Gate()
    async with running(gate) as server:
        port = server.port
        busy = await connect(port)
        await busy.send(GET_SLOW)
        async with asyncio.timeout(READ_TIMEOUT):
            await gate.started.wait()

        idle = await connect(port)
        await idle.send(GET_FAST)
        assert (await idle.response()).body == b"fast"

        shutdown = asyncio.create_task(server.shutdown(timeout=5))
        try:
            # The idle keep-alive connection is closed without an answer...
            assert await idle.read_until_close() == b""
            # ...nobody can connect any more...
            assert await refused(port)
            # ...and the request in flight is still running.
            assert not shutdown.done()
            assert not gate.cancelled.is_set()

            gate.release.set()
            reply = await busy.response()
            assert await busy.read_until_close() == b""
            async with asyncio.timeout(READ_TIMEOUT):
                await shutdown
        finally:
            gate.release.set()
            shutdown.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shutdown
    assert (reply.status, reply.body) == (200, b"slow done")
    assert (reply.header("connection") or "").lower() == "close"
    assert not gate.cancelled.is_set()


async def test_a_head_under_way_at_shutdown_is_answered(connect: ConnectFactory) -> None:
    # Its first bytes came before the shutdown: the client is mid-request, and
    # dropping it would lose a request that a proxy may not retry (a POST).
    async with running(Gate()) as server:
        client = await connect(server.port)
        await client.send(b"POST /fast HTTP/1.1\r\nHost: test\r\nContent-")
        shutdown = asyncio.create_task(server.shutdown(timeout=5))
        try:
            await asyncio.sleep(0.05)
            await client.send(b"Length: 2\r\n\r\nhi")
            reply = await client.response()
            assert (reply.status, reply.body) == (200, b"fast")
            assert (reply.header("connection") or "").lower() == "close"
            assert await client.read_until_close() == b""
            async with asyncio.timeout(READ_TIMEOUT):
                await shutdown
        finally:
            shutdown.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shutdown


async def test_shutdown_cancels_a_handler_that_outlives_the_graceful_timeout(
    connect: ConnectFactory,
) -> None:
    gate = Gate()
    loop = asyncio.get_running_loop()
    before = asyncio.all_tasks()
    async with running(gate) as server:
        client = await connect(server.port)
        await client.send(GET_SLOW)
        async with asyncio.timeout(READ_TIMEOUT):
            await gate.started.wait()

        started = loop.time()
        async with asyncio.timeout(READ_TIMEOUT):
            await server.shutdown(timeout=0.2)
        took = loop.time() - started

        assert gate.cancelled.is_set()
        with contextlib.suppress(ConnectionError):
            rest = await client.read_until_close()
            assert b"slow done" not in rest
    assert 0.15 <= took < 2.0
    assert not asyncio.all_tasks() - before


async def test_shutdown_with_nothing_in_flight_returns_at_once(
    connect: ConnectFactory,
) -> None:
    loop = asyncio.get_running_loop()
    async with running(Gate(), graceful_timeout=30.0) as server:
        port = server.port
        client = await connect(port)
        await client.send(GET_FAST)
        assert (await client.response()).status == 200
        started = loop.time()
        async with asyncio.timeout(READ_TIMEOUT):
            await server.shutdown()
        assert loop.time() - started < 1.0
        assert await client.read_until_close() == b""
        assert await refused(port)


async def test_serve_forever_returns_after_shutdown() -> None:
    async with running(Gate()) as server:
        forever = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0)
        assert not forever.done()
        async with asyncio.timeout(READ_TIMEOUT):
            await server.shutdown()
            await forever


async def test_a_new_connection_at_shutdown_gets_a_moment_for_its_request(
    connect: ConnectFactory,
) -> None:
    # Accepted a moment before the shutdown, its request not yet sent: closing
    # it would fail a request the client cannot know to retry.
    async with running(Gate()) as server:
        late = await connect(server.port)
        silent = await connect(server.port)
        async with asyncio.timeout(READ_TIMEOUT):
            while len(server._state.connections) < 2:
                await asyncio.sleep(0.01)
        shutdown = asyncio.create_task(server.shutdown(timeout=5))
        try:
            await asyncio.sleep(0.2)
            await late.send(GET_FAST)
            reply = await late.response()
            assert (reply.status, reply.body) == (200, b"fast")
            assert (reply.header("connection") or "").lower() == "close"
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await silent.read_until_close() == b""  # closed after the moment
            assert loop.time() - started < 2.5
            async with asyncio.timeout(READ_TIMEOUT):
                await shutdown
        finally:
            shutdown.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shutdown
