"""``http.server`` request handler classes seen as aserve handlers.

`HTTPServerHandler(MyHandler)` serves a `http.server.BaseHTTPRequestHandler`
subclass (`SimpleHTTPRequestHandler` included, or a ``functools.partial`` of
one) as it is: the class is instantiated once per request in a bounded pool
of worker threads and runs its own ``handle()`` -- ``parse_request``,
``do_GET``/``do_POST``/any ``do_METHOD``, ``send_response``, ``send_error``,
``log_message`` -- over a stand-in socket. This module owns that stand-in
socket and the translation of what the class writes into a `Response`. It
knows nothing of the real socket or of the server's h11 connection.

What the class sees
-------------------
- ``self.request`` / ``self.connection``: a socket-like object with
  ``makefile``, ``sendall``, ``send``, ``settimeout``, ``setsockopt``,
  ``getpeername`` and ``getsockname`` -- what `socketserver` needs of one.
- ``self.rfile``: the request head, rebuilt from the parsed request (header
  names in their usual capitalisation), then the body: bounded by its
  ``Content-Length``, or, for a chunked upload, read whole first (within
  ``max_body_size``) and given with a ``Content-Length``, since old code
  reads ``int(self.headers["Content-Length"])``. It ends there: reading on
  finds the end of the stream, never the next request. A large body is
  fetched from the connection as the class reads it, so the engine's read
  backpressure applies.
- ``self.client_address`` is ``request.client`` (``("", 0)`` on a Unix
  socket); ``self.server`` a `HandlerServer` (or the object given as
  ``server=``), shared by every request as a real server object would be.
- Below an `App.mount` prefix, ``self.path`` is the path below the prefix.

What the class writes
---------------------
Everything written to ``wfile`` (or sent on the socket) is parsed by an h11
client-role connection, in the worker thread, as a client would parse it.
The response is then framed again by aserve:

- the head goes out with the first body bytes; a response complete before
  the class returns (the common case, ``send_response`` ... ``wfile.write``
  with a ``Content-Length``) becomes one plain `Response`;
- a longer one is streamed: each write is queued for the loop, and the worker
  thread waits once more than `OUTPUT_HIGH_WATER` bytes are queued and not
  yet taken by the socket, so a slow client holds a thread, not memory;
- without a ``Content-Length`` (an ``HTTP/1.0`` class that ends its body by
  closing) the body ends when the class returns, and aserve sends it chunked
  to an HTTP/1.1 client: keep-alive works whatever the class's
  ``protocol_version``;
- hop-by-hop fields (``Connection``, ``Keep-Alive``, ``Transfer-Encoding``)
  are dropped, as are ``Server`` and ``Date``: the server sends its own;
- bytes that are not an HTTP response are an error of the class: 500 before
  anything went out, a closed connection after; bytes written after the
  response is complete are dropped (and logged).

Errors: the class raises before its response is complete -> 500 (logged by
the engine); after the head went out -> the connection is closed. When the
client goes away, the next write raises `BrokenPipeError`, as a real socket
would, and the class stops. One instance serves one request; the
``handle()`` loop of a keep-alive class ends there, and aserve keeps the
connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import http.server
import inspect
import io
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import h11

from .errors import ClientDisconnected, ConfigError, HTTPException
from .headers import REFRAMED_FIELDS
from .request import Request
from .response import Response, StreamingResponse

__all__ = ["HandlerServer", "HTTPServerHandler", "is_handler_class"]

error_log = logging.getLogger("aserve.error")

DEFAULT_THREADS: Final = 10
#: Bytes of response body queued for the loop before the worker thread waits.
OUTPUT_HIGH_WATER: Final = 256 * 1024
#: The largest response head a class may write.
MAX_RESPONSE_HEAD: Final = 64 * 1024

_NO_BODY_STATUS: Final = frozenset({204, 304})
_EMPTY: Final = b""

HandlerFactory = Callable[[Any, tuple[str, int], Any], object]


def is_handler_class(obj: Any) -> bool:
    """Whether `obj` is a `http.server.BaseHTTPRequestHandler` subclass, or a
    ``functools.partial`` of one (``partial(SimpleHTTPRequestHandler, directory=...)``)."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.isclass(obj) and issubclass(obj, http.server.BaseHTTPRequestHandler)


class HandlerServer:
    """What a handler class sees as ``self.server``: the attributes of a
    ``http.server.HTTPServer`` that handler code reads (``server_address``,
    ``server_name``, ``server_port``, ``RequestHandlerClass``), filled in from
    the first request. Any other attribute may be set on it to share state
    between requests, as on a real server object."""

    def __init__(self, handler_class: Any) -> None:
        self.RequestHandlerClass = handler_class
        self.server_address: tuple[str, int] = ("", 0)
        self.server_name = ""
        self.server_port = 0

    def _note(self, address: tuple[str, int] | None) -> None:
        if address is not None and not self.server_port:
            self.server_address = (address[0], address[1])
            self.server_name = address[0]
            self.server_port = address[1]


# --------------------------------------------------------------------------- the exchange


class _Exchange:
    """One request: the worker thread writes the class's output in, the loop
    takes the response out. Body bytes cross over in `pending`, under `lock`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, is_head: bool) -> None:
        self.loop = loop
        self.parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
        # The parser only needs to know the method (a HEAD answer has no body).
        method = b"HEAD" if is_head else b"GET"
        self.parser.send(h11.Request(method=method, target="/", headers=[("Host", "aserve")]))
        self.parser.send(h11.EndOfMessage())
        # Resolved once: ("full", body) or ("stream", b"").
        self.outcome: asyncio.Future[tuple[str, bytes]] = loop.create_future()
        self.head: h11.Response | None = None
        self.early: list[bytes] = []  # body bytes before the head was handed over
        self.delivered = False
        self.complete = False  # the whole response was parsed
        self.broken: BaseException | None = None
        self.dropped = 0
        # Streaming, guarded by `lock`.
        self.lock = threading.Condition()
        self.pending: list[bytes] = []
        self.queued = 0  # bytes handed over and not yet drained by the engine
        self.waiter: asyncio.Future[None] | None = None
        self.finished = False
        self.error: BaseException | None = None
        self.closed = False  # the loop side is gone: writes fail

    # -- worker side ------------------------------------------------------

    def output(self, data: bytes) -> None:
        """What the class sent on its socket."""
        if self.closed:
            raise BrokenPipeError(errno.EPIPE, "the client went away")
        if self.broken is not None:
            raise self.broken
        if self.complete:
            self.dropped += len(data)
            return
        try:
            self.parser.receive_data(data)
            self._parse()
        except h11.RemoteProtocolError as exc:
            self.broken = ValueError(f"the handler class wrote a malformed response: {exc}")
            raise self.broken from None

    def _parse(self) -> None:
        parser = self.parser
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Response):
                self.head = event
            elif isinstance(event, h11.Data):
                data = bytes(event.data)
                if self.delivered:
                    self._push(data)
                else:
                    self.early.append(data)
            elif isinstance(event, h11.EndOfMessage):
                self.complete = True
                rest = parser.trailing_data[0]
                self.dropped += len(rest)
                break
            elif isinstance(event, h11.ConnectionClosed):
                break
            # InformationalResponse: a class's own "100 Continue"; the engine
            # sends one itself when the body is first read.
        if not self.delivered and self.head is not None:
            if self.complete:
                self._deliver("full", b"".join(self.early))
            elif any(self.early):
                self._deliver("stream", b"".join(self.early))

    def _deliver(self, kind: str, data: bytes) -> None:
        self.delivered = True
        self.early = []
        if kind == "stream":
            with self.lock:
                self.pending.append(data)
                self.queued += len(data)
        self.loop.call_soon_threadsafe(_resolve, self.outcome, (kind, data))

    def _push(self, data: bytes) -> None:
        with self.lock:
            while self.queued >= OUTPUT_HIGH_WATER and not self.closed:
                self.lock.wait()
            if self.closed:
                raise BrokenPipeError(errno.EPIPE, "the client went away")
            self.pending.append(data)
            self.queued += len(data)
            waiter = self.waiter
        if waiter is not None:
            self.loop.call_soon_threadsafe(_wake, waiter)

    def run(self, factory: HandlerFactory, sock: _Socket, server: Any) -> None:
        """The worker thread's whole job for one request."""
        if self.closed:
            return  # given up while it waited for a thread
        failure: BaseException | None = None
        try:
            factory(sock, sock.peer, server)
        except BaseException as exc:
            failure = exc
        try:
            self._finish(failure)
        finally:
            if failure is not None and not isinstance(failure, Exception):
                raise failure

    def _finish(self, failure: BaseException | None) -> None:
        if failure is None and self.broken is not None:
            failure = self.broken  # the class caught it and went on
        if failure is None and not self.complete and not self.closed:
            try:
                # The end of the stream ends a body framed by closing.
                self.parser.receive_data(b"")
                self._parse()
            except h11.RemoteProtocolError as exc:
                failure = RuntimeError(f"the handler class ended its response early: {exc}")
        if failure is None and not self.complete:
            failure = RuntimeError(
                "the handler class wrote no response"
                if self.head is None
                else "the handler class did not finish its response"
            )
        if self.dropped:
            error_log.warning(
                "the handler class wrote %d bytes after its response; dropped", self.dropped
            )
        if self.closed:
            return
        if not self.delivered:
            if failure is not None:
                self.loop.call_soon_threadsafe(_fail, self.outcome, failure)
            return
        with self.lock:
            self.finished = True
            self.error = failure
            waiter = self.waiter
        if waiter is not None:
            self.loop.call_soon_threadsafe(_wake, waiter)

    # -- loop side --------------------------------------------------------

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify_all()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Body:
    """The streamed body: each step takes every queued byte at once and, by
    being asked for again, tells the worker the last ones were drained."""

    __slots__ = ("_exchange", "_taken")

    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange
        self._taken = 0

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        exchange = self._exchange
        while True:
            with exchange.lock:
                if self._taken:
                    exchange.queued -= self._taken
                    self._taken = 0
                    exchange.lock.notify_all()
                pending = exchange.pending
                if pending:
                    data = pending[0] if len(pending) == 1 else b"".join(pending)
                    pending.clear()
                    self._taken = len(data)
                    return data
                if exchange.finished:
                    if exchange.error is not None:
                        raise exchange.error
                    raise StopAsyncIteration
                waiter = exchange.waiter = exchange.loop.create_future()
            try:
                await waiter
            finally:
                exchange.waiter = None

    async def aclose(self) -> None:
        self._exchange.close()


# --------------------------------------------------------------------------- the socket


class _Reader(io.RawIOBase):
    """``rfile`` underneath: the rebuilt head, then the body, then the end."""

    def __init__(
        self,
        exchange: _Exchange,
        head: bytes,
        body: bytes,
        stream: AsyncIterator[bytes] | None,
    ) -> None:
        super().__init__()
        self._exchange = exchange
        self._buffer = head + body
        self._stream = stream
        #: An error the engine gave while reading (body too large...), for the handler.
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        if not self._buffer:
            self._fill()
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size

    def _fill(self) -> None:
        stream = self._stream
        exchange = self._exchange
        if stream is None or exchange.complete:
            return  # the end: the class's handle() loop stops here
        if exchange.closed:
            raise ConnectionResetError(errno.ECONNRESET, "the client went away")
        future = asyncio.run_coroutine_threadsafe(_next(stream), exchange.loop)
        try:
            chunk = future.result()
        except BaseException as exc:
            self._stream = None
            self.error = exc
            raise
        if chunk:
            self._buffer = chunk
        else:
            self._stream = None


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    return await anext(stream, _EMPTY)


class _Writer(io.RawIOBase):
    """``makefile("wb")`` underneath: writes go to the socket's `sendall`."""

    def __init__(self, sock: _Socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        with memoryview(data) as view:
            self._sock.sendall(view.tobytes())
            return view.nbytes


class _Socket:
    """The connection as a handler class sees it: enough of a socket for
    `socketserver.StreamRequestHandler` and for code that asks it its addresses."""

    def __init__(
        self,
        exchange: _Exchange,
        reader: _Reader,
        peer: tuple[str, int],
        local: tuple[str, int],
    ) -> None:
        self._exchange = exchange
        self._reader = reader
        self.peer = peer
        self.local = local
        self._timeout: float | None = None

    def makefile(self, mode: str = "r", buffering: int | None = None, **_: Any) -> Any:
        if "w" in mode:
            writer = _Writer(self)
            return writer if buffering == 0 else io.BufferedWriter(writer)
        if buffering == 0:
            return self._reader
        return io.BufferedReader(self._reader)

    def sendall(self, data: Any) -> None:
        self._exchange.output(bytes(data))

    def send(self, data: Any) -> int:
        payload = bytes(data)
        self._exchange.output(payload)
        return len(payload)

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout  # aserve's own deadlines govern the connection

    def gettimeout(self) -> float | None:
        return self._timeout

    def setsockopt(self, *args: Any) -> None:
        pass

    def getpeername(self) -> tuple[str, int]:
        return self.peer

    def getsockname(self) -> tuple[str, int]:
        return self.local

    def fileno(self) -> int:
        raise io.UnsupportedOperation("aserve carries this connection: it has no file descriptor")

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- the handler


def _field_name(name: bytes) -> bytes:
    """``content-type`` -> ``Content-Type``, as clients usually write it."""
    return b"-".join(part[:1].upper() + part[1:] for part in name.split(b"-"))


class HTTPServerHandler:
    """Serve a ``http.server`` request handler class, unchanged:
    ``aserve.run(HTTPServerHandler(MyHandler))``.

    ``threads`` bounds the worker threads, hence how many requests the class
    handles at once (more wait their turn). ``server`` is what the class sees
    as ``self.server`` (default: a `HandlerServer`).
    """

    __slots__ = ("handler_class", "threads", "server", "_executor")

    def __init__(
        self, handler_class: Any, *, threads: int = DEFAULT_THREADS, server: Any = None
    ) -> None:
        if not callable(handler_class):
            raise TypeError(f"a handler class must be callable, not {type(handler_class).__name__}")
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ConfigError(f"threads must be a positive integer, not {threads!r}")
        self.handler_class: HandlerFactory = handler_class
        self.threads = threads
        self.server = server if server is not None else HandlerServer(handler_class)
        self._executor = self._new_executor()

    def _new_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix="aserve-httpserver"
        )

    async def shutdown(self) -> None:
        # As WSGIHandler: a worker still running for a client that left stops
        # at its next write; a fresh pool lets the handler serve again.
        executor, self._executor = self._executor, self._new_executor()
        executor.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        if isinstance(self.server, HandlerServer):
            self.server._note(request.server)
        headers = request.headers
        chunked = "transfer-encoding" in headers
        body = _EMPTY
        stream: AsyncIterator[bytes] | None = None
        if chunked:
            body = await request.body()  # old code wants a Content-Length
        elif headers.get("content-length", "0") != "0":
            stream = request.stream()
        exchange = _Exchange(loop, request.method == "HEAD")
        head = self._head(request, len(body) if chunked else None)
        reader = _Reader(exchange, head, body, stream)
        client = request.client or ("", 0)
        local = request.server or ("", 0)
        sock = _Socket(exchange, reader, (client[0], client[1]), (local[0], local[1]))
        self._executor.submit(exchange.run, self.handler_class, sock, self.server)
        try:
            kind, data = await exchange.outcome
        except BaseException as exc:
            exchange.close()
            if isinstance(reader.error, HTTPException):
                raise reader.error from None  # too large, malformed: the engine's answer
            if isinstance(exc, HTTPException) or not isinstance(exc, Exception):
                raise
            if request.client is not None and await request.is_disconnected():
                raise ClientDisconnected("client disconnected") from exc
            raise
        if isinstance(reader.error, HTTPException):
            exchange.close()
            raise reader.error
        answer = exchange.head
        assert answer is not None
        status = answer.status_code
        raw = [(bytes(n), bytes(v)) for n, v in answer.headers if bytes(n) not in REFRAMED_FIELDS]
        if kind == "full":
            if (
                status >= 200
                and status not in _NO_BODY_STATUS
                and request.method != "HEAD"
                and not any(name == b"content-length" for name, _ in raw)
            ):
                raw.append((b"content-length", b"%d" % len(data)))
            return Response.from_parts(status, raw, data)
        return StreamingResponse.from_stream(status, raw, _Body(exchange))

    def _head(self, request: Request, length: int | None) -> bytes:
        """The request head as the class will read it."""
        if request.root_path:
            rest = request.split_root().raw_rest or b"/"
            query = request.query_string
            target = rest + b"?" + query if query else rest
        else:
            target = request.target
        version = b"1.1" if request.http_version == "1.1" else b"1.0"
        lines = [b"%s %s HTTP/%s\r\n" % (request.method.encode("ascii"), target, version)]
        for name, value in request.headers.raw:
            if length is not None and name in (b"transfer-encoding", b"content-length"):
                continue
            lines.append(_field_name(name) + b": " + value + b"\r\n")
        if length is not None:
            lines.append(b"Content-Length: %d\r\n" % length)
        lines.append(b"\r\n")
        return b"".join(lines)

    def __repr__(self) -> str:
        name = getattr(self.handler_class, "__qualname__", None) or repr(self.handler_class)
        return f"HTTPServerHandler({name})"
