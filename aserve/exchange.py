"""One request/response exchange: await the handler, then send its response.

An `Exchange` runs as one task per request. It turns what the handler does
into bytes on the connection: a small response in hand goes out in one write
(then waits for the socket only if it is behind); a large one goes out in
slices of the one buffer, never copied; a streamed one goes chunk by chunk
with `await channel.drain()` between chunks, so it never runs ahead of the
socket and gives the loop a turn per chunk. It turns what goes wrong into answers:
`HTTPException` -> its status, any other exception -> 500 (logged; the
traceback reaches the client only with `debug`), an error after the head went
out -> the connection is closed, because the framing can no longer be trusted.

It talks to its connection through the small `Channel` protocol below and
never touches the transport or h11 directly. When the connection answers for
it (a deadline, bad framing), the exchange is detached: its channel becomes
`DETACHED`, which drops what the handler still writes.

`settings.active` counts the requests being handled (for `max_concurrency`);
an exchange releases its count once, when it ends or is detached.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from .errors import BadRequestBody, BodyTooLarge, ClientDisconnected, HTTPException
from .response import FileSegment, PlainTextResponse, Response

if TYPE_CHECKING:
    from .connection import HeaderTriples, HTTPConnection
    from .request import Request

Handler = Callable[["Request"], Awaitable[Response]]

error_log = logging.getLogger("aserve.error")

#: An in-hand body larger than this is written in slices of LARGE_SLICE with a
#: drain after each (see Exchange._send_large); a smaller one goes out with its
#: head in one write, which is faster.
LARGE_BODY = 256 * 1024
LARGE_SLICE = 256 * 1024


class Channel(Protocol):
    """What an exchange needs from the connection that carries it."""

    @property
    def disconnected(self) -> bool: ...
    @property
    def write_paused(self) -> bool: ...
    def write(self, data: Any) -> None: ...
    async def drain(self) -> None: ...
    async def send_file(self, fd: int, offset: int, count: int) -> None: ...
    def must_close(self) -> bool: ...
    def base_headers(self) -> HeaderTriples: ...
    def exchange_finished(self, clean: bool) -> Exchange | None:
        """This exchange is over; the next one to run in the same task (a
        request the client pipelined, already in), or None."""
        ...


class _Detached:
    """The channel of an exchange its connection gave up on (a timeout, bad
    framing): the connection already answered and closes; whatever the handler
    still does goes nowhere."""

    disconnected = True
    write_paused = False

    def write(self, data: Any) -> None:
        pass

    async def drain(self) -> None:
        raise ClientDisconnected("connection closed")

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        raise ClientDisconnected("connection closed")

    def must_close(self) -> bool:
        return True

    def base_headers(self) -> HeaderTriples:
        return []

    def exchange_finished(self, clean: bool) -> Exchange | None:
        return None


DETACHED: Final = _Detached()


class _NoMeter:
    sent = 0


_NO_METER: Final = _NoMeter()


class _Switched:
    """The HTTP side of an exchange whose connection switched protocols (the
    handler accepted a WebSocket, aserve/wsprotocol.py): nothing more is
    framed or sent, and nobody is told (the session reports itself)."""

    is_head = True  # no body is ever iterated
    debug = False
    observer = None
    active = 0

    def send_full(self, status: int, headers: Any, body: Any, *, close: bool = False) -> bytes:
        return b""

    def send_head(self, status: int, headers: Any, *, close: bool = False) -> bytes:
        return b""

    def send_data(self, data: Any) -> bytes:
        return b""

    def send_data_pieces(self, data: Any) -> list[Any]:
        return []

    def send_end(self) -> bytes:
        return b""


_SWITCHED: Final[Any] = _Switched()


class Observer(Protocol):
    """Told of every finished exchange: the access log, metrics, or a
    program's own (``Server(app, observers=[...])``, for OpenTelemetry or
    statsd). `done` has ``request``, ``status``, ``outcome`` ("ok",
    "client-gone", "handler-timeout", "body-timeout", "bad-request",
    "cancelled"), ``bytes_sent`` (head included) and ``duration`` (seconds from
    the request head to the last byte written). It is called on the event loop
    once the response is out: keep it quick, hand slow work elsewhere. Without
    any observer, the engine measures nothing."""

    def exchange_done(self, done: Exchange) -> None: ...


class Meter(Protocol):
    """A connection that counts the bytes it wrote."""

    sent: int


class ExchangeSettings(Protocol):
    """The server-wide settings an exchange reads and the count it keeps."""

    debug: bool
    observer: Observer | None
    active: int


class Exchange:
    __slots__ = (
        "_channel",
        "_conn",
        "_settings",
        "_handler",
        "_counted",
        "request",
        "task",
        "streaming",
        "status",
        "close_after",
        "outcome",
        "started",
        "_meter",
        "_sent_mark",
        "bytes_sent",
        "duration",
    )

    def __init__(
        self,
        channel: Channel,
        conn: HTTPConnection,
        settings: ExchangeSettings,
        request: Request,
        handler: Handler,
        counted: bool = True,
    ) -> None:
        self._channel = channel
        self._conn = conn
        self._settings = settings
        self._handler = handler
        # Counted in settings.active (requests being handled) until released.
        self._counted = counted
        self.request = request
        self.task: asyncio.Task[None] | None = None
        self.streaming = False
        self.status = 0
        self.close_after = False
        #: How the exchange ended, for observers: "ok", "client-gone",
        #: "handler-timeout", "body-timeout", "bad-request", "cancelled".
        self.outcome = "ok"
        # Set, with the measures below, by measure() when an observer is on;
        # without one nothing more is stored per request.
        self._meter: Meter | None = None

    def measure(self, meter: Meter) -> None:
        """Count the time and the bytes of this exchange (an observer is on)."""
        self.started = time.perf_counter()
        self._meter = meter
        self._sent_mark = meter.sent
        #: Bytes written for the response (head included) and seconds from the
        #: request head to the last of them; filled in for observers.
        self.bytes_sent = 0
        self.duration = 0.0

    def connection_lost(self) -> None:
        """The client is gone. A streamed body stops at once; a handler still
        computing is left to finish (its reads fail with ClientDisconnected)."""
        if self.streaming and self.task is not None:
            self.task.cancel()

    def detach(self, cancel: bool) -> None:
        """The connection answered for this exchange and closes: nothing the
        handler does from now on reaches it. With `cancel` the handler is
        cancelled too (it ran out of time)."""
        self._channel = DETACHED
        self.release()
        if cancel and self.task is not None:
            self.task.cancel()

    def release(self) -> None:
        if self._counted:
            self._counted = False
            self._settings.active -= 1

    def switched(self) -> None:
        """The connection switched protocols during the handler (it accepted a
        WebSocket): the handler runs on as the session, its request no longer
        counts as one being handled, and what it returns at the end (a 101
        that middleware may have seen) goes nowhere, unobserved."""
        self.status = 101
        self.release()
        self._channel = DETACHED
        self._conn = _SWITCHED
        self._settings = _SWITCHED
        self._meter = None  # the HTTP connection, which nothing needs any more

    async def run(self) -> None:
        # One coroutine frame for the common case: the handler's call and a
        # response in hand are handled inline; only streaming awaits more.
        # Requests the client pipelined, already read, run on in this frame
        # and this task, one after the other (the connection hands each one
        # over as the last finishes): no task and no loop turn each.
        exchange: Exchange | None = self
        while exchange is not None:
            clean = False
            try:
                try:
                    response: Response | None = await exchange._handler(exchange.request)
                    if not isinstance(response, Response):
                        response = exchange._internal_error(
                            TypeError(f"handler returned {type(response).__name__}, not a Response")
                        )
                except HTTPException as exc:
                    if isinstance(exc, BodyTooLarge | BadRequestBody):
                        exchange.close_after = True
                    response = _error_response(exc.status, exc.detail, exc.headers)
                except ClientDisconnected:
                    response = None
                except Exception as exc:
                    response = (
                        None if exchange._channel.disconnected else exchange._internal_error(exc)
                    )
                if response is not None:
                    if response.streaming:
                        clean = await exchange._send_stream(response)
                    elif len(response.body) > LARGE_BODY and not exchange._conn.is_head:
                        clean = await exchange._send_large(response)
                    else:
                        clean = exchange._send_full(response)
                        if exchange._channel.write_paused:
                            # The socket is behind: finish only once it took
                            # this response, so a client that pipelines
                            # requests and never reads cannot make us buffer
                            # one answer after another (send_timeout bounds
                            # the wait).
                            await exchange._channel.drain()
            except asyncio.CancelledError:
                # Shutdown past its grace period, or a timeout (which said so).
                clean = False
                if exchange.outcome == "ok" and not exchange._channel.disconnected:
                    exchange.outcome = "cancelled"
            except ClientDisconnected:
                clean = False  # the client left
            except Exception as exc:
                clean = False
                if not exchange._channel.disconnected:
                    error_log.error("sending the response failed", exc_info=exc)
            finally:
                exchange.release()
                following = exchange._channel.exchange_finished(clean)
                observer = exchange._settings.observer
                if observer is not None:
                    exchange._observe(observer, clean)
            exchange = following

    def _observe(self, observer: Observer, clean: bool) -> None:
        meter = self._meter
        if meter is None:  # made outside the engine, with no measure taken
            self.measure(_NO_METER)
        else:
            self.duration = time.perf_counter() - self.started
            self.bytes_sent = meter.sent - self._sent_mark
        if not clean and self.outcome == "ok":
            self.outcome = "client-gone"
        try:
            observer.exchange_done(self)
        except Exception as exc:  # a broken observer must not break serving
            error_log.error("the access log or metrics failed", exc_info=exc)

    def _internal_error(self, exc: BaseException) -> Response:
        request = self.request
        self.close_after = True
        error_log.error(
            "handler failed on %s %s",
            request.method,
            request.target.decode("latin-1"),
            exc_info=exc,
        )
        detail = "Internal Server Error"
        if self._settings.debug:
            detail += "\n\n" + "".join(traceback.format_exception(exc))
        return _error_response(500, detail)

    def _head(self, response: Response) -> HeaderTriples:
        self.status = response.status_code
        headers: HeaderTriples = [(name, name, value) for name, value in response.raw_headers]
        headers += self._channel.base_headers()
        return headers

    def _send_full(self, response: Response) -> bool:
        channel = self._channel
        headers = self._head(response)
        close = self.close_after or channel.must_close()
        channel.write(self._conn.send_full(self.status, headers, response.body, close=close))
        return True

    async def _send_large(self, response: Response) -> bool:
        """A large body in hand goes out in slices of the one buffer, each
        after the socket took the last: never copied whole, never queued whole
        for a client that does not read (each reader of a shared body would
        otherwise hold its own copy)."""
        channel = self._channel
        conn = self._conn
        headers = self._head(response)
        close = self.close_after or channel.must_close()
        channel.write(conn.send_head(self.status, headers, close=close))
        view = memoryview(response.body)
        self.streaming = True
        try:
            for start in range(0, len(view), LARGE_SLICE):
                for piece in conn.send_data_pieces(view[start : start + LARGE_SLICE]):
                    channel.write(piece)
                await channel.drain()
        finally:
            self.streaming = False
            view.release()
        channel.write(conn.send_end())
        return True

    async def _send_stream(self, response: Response) -> bool:
        channel = self._channel
        conn = self._conn
        headers = self._head(response)
        close = self.close_after or channel.must_close()
        status = self.status
        iterator = response.body_iterator  # type: ignore[attr-defined]
        try:
            channel.write(conn.send_head(status, headers, close=close))
            if not conn.is_head:
                self.streaming = True
                async for chunk in iterator:
                    if type(chunk) is FileSegment:
                        for piece in conn.send_data_pieces(chunk):
                            if piece is chunk:
                                await channel.send_file(chunk.fd, chunk.offset, chunk.count)
                            else:
                                channel.write(piece)
                        continue
                    if isinstance(chunk, str):
                        chunk = chunk.encode("utf-8")
                    channel.write(conn.send_data(chunk))
                    # Waits while the socket is behind; also gives the loop a
                    # turn per chunk, so a generator that never awaits cannot
                    # starve every other connection.
                    await channel.drain()
                self.streaming = False
            channel.write(conn.send_end())
            return True
        except ClientDisconnected:
            return False
        except HTTPException as exc:
            # The request body the stream was reading turned out bad (framing,
            # size): the client's fault, one line and no traceback.
            error_log.warning("streamed response cut short: %s", exc)
            return False
        except Exception as exc:
            if not channel.disconnected:
                error_log.error("streamed body failed after the response started", exc_info=exc)
            return False
        finally:
            self.streaming = False
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as exc:  # a broken finally in the app's generator
                    error_log.error("closing a streamed body failed", exc_info=exc)


def _error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = detail if detail.endswith("\n") else detail + "\n"
    if status < 200 or status in (204, 304):
        body = ""
    return PlainTextResponse(body, status=status, headers=headers)
