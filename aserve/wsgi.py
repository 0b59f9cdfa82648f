"""WSGI applications (PEP 3333) seen as aserve handlers.

`WSGIHandler(app, threads=N)` runs each request's application call in a
bounded pool of N worker threads; the event loop never blocks on it. This
module owns the translation between a `Request`/`Response` and the WSGI
environ/`start_response`/iterable triple, and the hand-over between the loop
and the worker threads. It knows nothing of sockets or h11.

Hand-over, both ways
--------------------
- The loop builds the environ (cheap, no IO) and submits the call to the pool.
  The worker resolves one asyncio future, once, with either the whole
  response or its head and first chunk: the common case (a body that is all
  there, as Flask and Django produce it with a `Content-Length`) costs one
  thread hop each way and becomes a plain `Response`.
- ``wsgi.input`` reads the request body from the loop in the worker thread:
  each `read()` that needs more bytes fetches the next chunk of
  `request.stream()` with `asyncio.run_coroutine_threadsafe` and keeps only
  that chunk's unread rest, so a large upload is never held whole and the
  engine's read backpressure applies (nothing is read ahead of the app).
- A streamed body goes back chunk by chunk: the worker hands a chunk to the
  loop and waits until the engine has written it and drained the socket
  before it asks the iterable for the next one. A slow client therefore holds
  a worker thread, not memory. When the client goes away the worker stops
  iterating; the iterable's `close()` is always called, in the worker thread.

PEP 3333 points
---------------
- ``SCRIPT_NAME``/``PATH_INFO``: ``SCRIPT_NAME`` is the root path the request
  came through (`request.root_path`: the server's root path and App mount
  prefixes, then the handler's own ``root_path``), ``PATH_INFO`` the rest of
  the path (empty for the root itself, else it starts with ``/``). Both are
  bytes-as-unicode: the raw path is percent-decoded *as bytes* and those bytes
  decoded as latin-1; ``SCRIPT_NAME`` is UTF-8 encoded, then decoded as
  latin-1. Nothing is computed for a request without a root path.
- Header names with an underscore are dropped: ``X_Forwarded_For`` would land
  in the same environ key as ``X-Forwarded-For`` (a spoofing vector).
- `start_response` checks the status and every header (no CR/LF can split
  the response) and follows the ``exc_info`` rules: a second call without it
  is an error; with it, before anything was sent, it replaces the head; after,
  it re-raises. The head goes out with the first non-empty chunk.
- Errors: the app raises before its head went out -> 500 (logged by the
  engine); after -> the connection is closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from .errors import BadRequest, ClientDisconnected, ConfigError, HTTPException
from .headers import encode_header
from .request import Request
from .response import Response, StreamingResponse

__all__ = ["WSGIHandler"]

error_log = logging.getLogger("aserve.error")

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], None]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

DEFAULT_THREADS: Final = 10
_NO_BODY_STATUS: Final = frozenset({204, 304})
_EMPTY: Final = b""


class _ErrorStream:
    """``wsgi.errors``: text written here goes to the ``aserve.wsgi`` logger, a line at a time."""

    __slots__ = ("_buffer",)
    _log = logging.getLogger("aserve.wsgi")

    def __init__(self) -> None:
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition("\n")
            if line:
                self._log.error("%s", line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._buffer:
            self._log.error("%s", self._buffer)
            self._buffer = ""


class _Input(io.RawIOBase):
    """``wsgi.input``: the request body, fetched from the loop chunk by chunk."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._stream: AsyncIterator[bytes] = request.stream()
        self._loop = loop
        self._buffer = b""
        self._eof = False
        #: An error the engine gave while reading (body too large...), for the handler.
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Fetch the next chunk into the buffer; False at the end of the body."""
        if self._eof:
            return False
        future = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
        try:
            chunk = future.result()
        except BaseException as exc:
            self._eof = True
            self.error = exc
            raise
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    async def _next(self) -> bytes:
        return await anext(self._stream, _EMPTY)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            data, self._buffer = self._buffer, b""
            return data
        while len(self._buffer) < size and self._fill():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readinto(self, target: Any) -> int:
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                end += 1
                break
            if 0 <= limit <= len(self._buffer) or not self._fill():
                end = len(self._buffer)
                break
        if 0 <= limit < end:
            end = limit
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> _Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class _Exchange:
    """One request's WSGI call, shared by the loop and the worker thread."""

    __slots__ = (
        "loop",
        "outcome",
        "status",
        "headers",
        "headers_sent",
        "chunk",
        "chunk_ready",
        "taken",
        "closed",
        "finished",
        "error",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # The worker resolves this once: ("full", body) or ("stream", first chunk).
        self.outcome: asyncio.Future[tuple[str, bytes]] = loop.create_future()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.headers_sent = False
        # Streaming: the worker parks one chunk; the loop takes it.
        self.chunk: bytes | None = None
        self.chunk_ready: asyncio.Future[None] | None = None
        self.taken = threading.Event()
        self.closed = False  # the loop side is gone: the worker stops
        self.finished = False  # the worker sent the last chunk
        self.error: BaseException | None = None

    # -- worker side ------------------------------------------------------

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.headers is not None:
            raise RuntimeError("start_response called a second time without exc_info")
        if not isinstance(status, str):
            raise TypeError(f"WSGI status must be a str, not {type(status).__name__}")
        code, _, _ = status.partition(" ")
        if len(code) != 3 or not code.isdigit() or int(code) < 200:
            raise ValueError(f"invalid WSGI status {status!r}")
        raw = []
        for name, value in headers:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"WSGI header names and values must be str: {(name, value)!r}")
            # Optional whitespace around a value is not part of it (RFC 9110 5.5);
            # Django's Set-Cookie values start with a space.
            raw.append(encode_header(name, value.strip(" \t")))
        self.status = int(code)
        self.headers = raw
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy `write()` callable: one more chunk, sent before returning."""
        if self.headers is None:
            raise RuntimeError("write() called before start_response()")
        if data:
            self._send_chunk(bytes(data))

    def _deliver(self, kind: str, data: bytes) -> None:
        self.headers_sent = True
        self.loop.call_soon_threadsafe(_resolve, self.outcome, (kind, data))

    def _send_chunk(self, data: bytes) -> None:
        if not self.headers_sent:
            self._deliver("stream", data)
            return
        if self.closed:
            raise ClientDisconnected("client disconnected")
        self.taken.clear()
        self.loop.call_soon_threadsafe(self._park, data)
        self.taken.wait()
        if self.closed:
            raise ClientDisconnected("client disconnected")

    def _end(self) -> None:
        if not self.closed:
            self.loop.call_soon_threadsafe(self._park, None)

    def run(self, app: WSGIApp, environ: Environ) -> None:
        """The worker thread's whole job for one request."""
        if self.closed:
            return  # the request was given up while it waited for a thread
        try:
            result = app(environ, self.start_response)
            try:
                if _is_list(result) and self.headers is not None and not self.headers_sent:
                    self._deliver("full", b"".join(result))
                    return
                if self.headers is None and not _is_list(result):
                    # Generators call start_response on their first next().
                    result = _Prefetched(result)
                length = _content_length(self.headers)
                parts: list[bytes] = []
                size = 0
                for chunk in result:
                    if not chunk:
                        continue
                    if self.headers is None:
                        raise RuntimeError("WSGI app returned a body before start_response()")
                    if self.headers_sent:
                        self._send_chunk(chunk)
                        continue
                    parts.append(chunk)
                    size += len(chunk)
                    if length is not None and size >= length:
                        break  # all the promised body is here: no need to ask for more
                    # Unknown length, or more to come: this goes out as a stream.
                    self._deliver("stream", chunk)
                    parts = []
                if self.headers is None:
                    raise RuntimeError("WSGI app returned without calling start_response()")
                if not self.headers_sent:
                    self._deliver("full", b"".join(parts))
                else:
                    self._end()
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:
            if self.headers_sent:
                if not self.closed:
                    self.error = exc
                    self.loop.call_soon_threadsafe(self._park, None)
            else:
                self.loop.call_soon_threadsafe(_fail, self.outcome, exc)
            if not isinstance(exc, Exception):
                raise

    # -- loop side --------------------------------------------------------

    def _park(self, data: bytes | None) -> None:
        if data is None:
            self.finished = True
        else:
            self.chunk = data
        waiter = self.chunk_ready
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        self.taken.set()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _is_list(result: Iterable[bytes]) -> bool:
    return type(result) is list or type(result) is tuple


def _content_length(headers: list[tuple[bytes, bytes]] | None) -> int | None:
    for name, value in headers or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _Prefetched:
    """An iterable whose first item is fetched now (PEP 3333: the app may call
    start_response only when its first item is asked for)."""

    __slots__ = ("_iterator", "_first", "_result")

    def __init__(self, result: Iterable[bytes]) -> None:
        self._result = result
        self._iterator = iter(result)
        self._first: list[bytes] = []
        for item in self._iterator:
            self._first.append(item)
            if item:
                break

    def __iter__(self) -> Any:
        yield from self._first
        yield from self._iterator

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


class _Body:
    """A streamed WSGI body: each `__anext__` releases the worker for one more chunk."""

    __slots__ = ("_exchange", "_first", "_ack_due")

    def __init__(self, exchange: _Exchange, first: bytes) -> None:
        self._exchange = exchange
        self._first: bytes | None = first
        # A parked chunk was handed to the engine; this call means it is drained.
        self._ack_due = False

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        first = self._first
        if first is not None:
            self._first = None
            return first
        exchange = self._exchange
        if self._ack_due:
            self._ack_due = False
            exchange.taken.set()  # the worker may produce the next chunk
        while True:
            chunk = exchange.chunk
            if chunk is not None:
                exchange.chunk = None
                self._ack_due = True
                return chunk
            if exchange.finished:
                if exchange.error is not None:
                    raise exchange.error
                raise StopAsyncIteration
            waiter = exchange.chunk_ready = exchange.loop.create_future()
            try:
                await waiter
            finally:
                exchange.chunk_ready = None

    async def aclose(self) -> None:
        self._exchange.close()


class WSGIHandler:
    """Serve a WSGI application: ``aserve.Server(WSGIHandler(app, threads=10))``.

    ``threads`` bounds the worker threads, hence how many requests the app
    handles at once (more wait their turn).

    ``SCRIPT_NAME`` is `request.root_path` -- the server's root path and the
    prefix of every `App.mount` the request came through -- so
    ``app.mount("/blog", WSGIHandler(flask_app))`` needs nothing more. The
    optional ``root_path`` is one more prefix after that: when the path below
    the mount starts with it, it moves from ``PATH_INFO`` to ``SCRIPT_NAME``;
    when it does not (a proxy in front stripped it), it is added to
    ``SCRIPT_NAME`` all the same. It is never counted twice.
    """

    __slots__ = ("app", "threads", "root_path", "_executor", "_errors")

    def __init__(self, app: WSGIApp, threads: int = DEFAULT_THREADS, root_path: str = "") -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ConfigError(f"threads must be a positive integer, not {threads!r}")
        self.app = app
        self.threads = threads
        self.root_path = root_path.rstrip("/")
        self._executor = self._new_executor()
        self._errors = _ErrorStream()

    def _new_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix="aserve-wsgi"
        )

    async def shutdown(self) -> None:
        # Every connection is closed by now; a worker still running a request
        # whose client left stops at its next chunk. A fresh pool (it starts
        # no thread until used) lets the handler serve again under a new server.
        executor, self._executor = self._executor, self._new_executor()
        executor.shutdown(wait=False, cancel_futures=True)

    def build_environ(self, request: Request, body: Any) -> Environ:
        if request.root_path or self.root_path:
            try:
                root, _, raw_path, _ = request.split_root(self.root_path)
            except BadRequest:
                # Not UTF-8 once decoded: PEP 3333 can carry such a path all the same.
                root, raw_path = _split_undecodable(request, self.root_path)
            # Bytes-as-unicode (PEP 3333), as PATH_INFO is.
            script_name = root.encode("utf-8").decode("latin-1")
        else:
            script_name = ""
            raw_path = request.raw_path
        path_info = (
            unquote_to_bytes(raw_path).decode("latin-1")
            if b"%" in raw_path
            else raw_path.decode("latin-1")
        )
        environ: Environ = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": script_name,
            "PATH_INFO": path_info,
            "QUERY_STRING": request.query_string.decode("latin-1"),
            "SERVER_PROTOCOL": "HTTP/" + request.http_version,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": request.scheme,
            "wsgi.input": body,
            "wsgi.errors": self._errors,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }
        if request.scheme == "https":
            tls = request.tls
            if tls is not None:
                environ.update(tls.wsgi_environ())
        client = request.client
        if client is not None:
            environ["REMOTE_ADDR"] = client[0]
            environ["REMOTE_PORT"] = str(client[1])
        host = None
        for raw_name, raw_value in request.headers.raw:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
                continue
            if name == "content-length":
                environ["CONTENT_LENGTH"] = value
                continue
            if "_" in name:
                continue
            if name == "host":
                host = value
            key = "HTTP_" + name.upper().replace("-", "_")
            previous = environ.get(key)
            if previous is None:
                environ[key] = value
            else:
                environ[key] = previous + ("; " if key == "HTTP_COOKIE" else ",") + value
        server = request.server
        if server is not None:
            server_name, server_port = server[0], str(server[1])
        else:  # a Unix socket: the Host header is all there is
            server_name, server_port = _split_host(host, request.scheme)
        environ["SERVER_NAME"] = server_name
        environ["SERVER_PORT"] = server_port
        return environ

    async def __call__(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        headers = request.headers
        has_body = "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
        body: Any = _Input(request, loop) if has_body else io.BytesIO(b"")
        environ = self.build_environ(request, body)
        exchange = _Exchange(loop)
        self._executor.submit(exchange.run, self.app, environ)
        try:
            kind, data = await exchange.outcome
        except BaseException as exc:
            exchange.close()
            if has_body and isinstance(body.error, HTTPException):
                raise body.error from None  # too large, malformed: the engine's answer
            if isinstance(exc, HTTPException) or not isinstance(exc, Exception):
                raise
            if request.client is not None and await request.is_disconnected():
                raise ClientDisconnected("client disconnected") from exc
            raise
        if has_body and isinstance(body.error, HTTPException):
            exchange.close()
            raise body.error
        status = exchange.status
        raw_headers = exchange.headers
        assert raw_headers is not None
        if kind == "full":
            if (
                status not in _NO_BODY_STATUS
                and request.method != "HEAD"
                and _content_length(raw_headers) is None
                and not any(name == b"transfer-encoding" for name, _ in raw_headers)
            ):
                raw_headers.append((b"content-length", b"%d" % len(data)))
            return Response.from_parts(status, raw_headers, data)
        return StreamingResponse.from_stream(status, raw_headers, _Body(exchange, data))


def _split_undecodable(request: Request, extra: str) -> tuple[str, bytes]:
    """The root path and the raw rest of a path that is not UTF-8: the root
    path counts as in it only where it was sent as it is (not percent-encoded)."""
    root = request.root_path + extra
    raw = request.raw_path
    prefix = root.encode("utf-8")
    if raw.startswith(prefix) and raw[len(prefix) : len(prefix) + 1] in (b"", b"/"):
        return root, raw[len(prefix) :]
    return root, raw


def _split_host(host: str | None, scheme: str) -> tuple[str, str]:
    default_port = "443" if scheme == "https" else "80"
    if not host:
        return "localhost", default_port
    if host.startswith("["):  # an IPv6 literal
        end = host.find("]")
        name, rest = host[: end + 1], host[end + 1 :]
        return name, rest[1:] if rest.startswith(":") else default_port
    name, _, port = host.partition(":")
    return name, port or default_port
