"""Flow control between the socket and a handler, in both directions.

`BodyStream` carries a request body from the protocol to the handler. It holds
at most about `READ_HIGH_WATER` unread bytes: past that it asks its channel to
stop reading the socket, and below `READ_LOW_WATER` to start again, so a client
uploading faster than the handler reads fills the kernel's buffers and its own,
never ours. Its first read asks the channel to send `100 Continue` when the
client is waiting for one. While a reader waits for bytes that have not come,
the channel is told (`body_wait`), so that it can run `body_timeout` for that
gap only.

`WriteGate` is the other way: the transport's `pause_writing`/`resume_writing`
close and open it, and a writer awaits `wait()` between chunks so a streamed
body never runs ahead of the socket. When the connection is lost every waiter
fails at once with `ClientDisconnected` instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from .errors import BodyTooLarge, ClientDisconnected

READ_HIGH_WATER = 256 * 1024
READ_LOW_WATER = 64 * 1024


class BodyChannel(Protocol):
    """What a BodyStream needs from the connection that feeds it."""

    def pause_body(self) -> None: ...
    def resume_body(self) -> None: ...
    def send_continue(self) -> None: ...
    def body_wait(self, waiting: bool) -> None: ...


class BodyStream:
    """An async, bounded stream of one request body."""

    __slots__ = (
        "_channel",
        "_chunks",
        "_buffered",
        "_received",
        "_limit",
        "_complete",
        "_error",
        "_waiter",
        "_paused",
        "_started",
        "_discarding",
    )

    def __init__(self, channel: BodyChannel, limit: int | None) -> None:
        self._channel = channel
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._received = 0
        self._limit = limit
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._started = False
        self._discarding = False

    # -- producer side (the protocol) -------------------------------------

    @property
    def received(self) -> int:
        return self._received

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def started(self) -> bool:
        """The handler asked for the body at least once."""
        return self._started

    def feed(self, data: bytes) -> None:
        self._received += len(data)
        if self._discarding:
            return
        if self._limit is not None and self._received > self._limit:
            if self._error is None:
                self._error = BodyTooLarge(self._limit)
                self._chunks.clear()
                self._buffered = 0
                if not self._paused:
                    # Nobody will read past the limit: stop taking bytes in.
                    self._paused = True
                    self._channel.pause_body()
            self._wake()
            return
        if self._error is not None:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_HIGH_WATER and not self._paused:
            self._paused = True
            self._channel.pause_body()
        self._wake()

    def end(self) -> None:
        self._complete = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        """The body cannot be completed (client gone, bad framing): readers get `exc`."""
        if self._error is None and not self._complete:
            self._error = exc
        self._wake()

    def discard(self) -> None:
        """The handler is done: drop what is buffered and whatever still comes."""
        self._discarding = True
        self._chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._channel.resume_body()

    @property
    def over_limit(self) -> bool:
        return isinstance(self._error, BodyTooLarge)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- consumer side (the handler) --------------------------------------

    async def read(self) -> bytes:
        """The next chunk of the body, or `b""` once it is complete."""
        if not self._started:
            self._started = True
            self._channel.send_continue()
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            # The reader now waits on the client: body_timeout runs (and the
            # handler's own clock stops) until bytes, the end or an error come.
            self._channel.body_wait(True)
            try:
                await waiter
            finally:
                self._channel.body_wait(False)
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < READ_LOW_WATER:
            self._paused = False
            self._channel.resume_body()
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)


class WriteGate:
    """Open while the transport accepts writes; `wait()` blocks while it is paused."""

    __slots__ = ("_paused", "_waiters", "_lost")

    def __init__(self) -> None:
        self._paused = False
        self._waiters: list[asyncio.Future[None]] | None = None
        self._lost = False

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._release(None)

    def connection_lost(self) -> None:
        self._lost = True
        self._release(ClientDisconnected("client disconnected"))

    def _release(self, exc: BaseException | None) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    async def wait(self) -> None:
        if self._lost:
            raise ClientDisconnected("client disconnected")
        if not self._paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
