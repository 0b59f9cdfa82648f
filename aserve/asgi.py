"""ASGI 3 applications (HTTP and lifespan) seen as aserve handlers.

`ASGIHandler(app)` is an ordinary handler: the engine calls it with a
`Request` and sends the `Response` it returns. This module owns the
translation between the two worlds and nothing else: no sockets, no h11.

Running the app in the exchange's own task
------------------------------------------
The app is not given a task of its own. Its coroutine is stepped by `_Run`, a
small driver that the exchange task awaits: every future the app waits on is
waited on by the exchange task on its behalf (cancellation is passed on the way
a Task passes it on: the awaited future is cancelled first). That lets the
handler stop driving the app at any point and resume it later, still in the
same task, so that:

- an app that sends ``http.response.start`` and one ``http.response.body``
  without ``more_body`` (most JSON endpoints) costs no task, no queue and no
  future: the handler returns a plain `Response` with a `content-length`;
- an app that streams (``more_body=True``) is paused inside its `send()`; the
  handler returns a streamed response whose body iterator resumes the app for
  the next chunk only after the engine has written and drained the previous
  one. `send()` returning *is* the write backpressure;
- work the app does after its response is complete (Starlette's background
  tasks) runs when the engine closes the body iterator, after the last byte is
  out, still in the exchange task, so anyio cancel scopes opened around it
  exit in the task that entered them.

Apps that send from another task (Django's ASGI handler, Server-Sent Events
libraries that use task groups) are handled too: such a `send()` parks its
message in a one-message slot, wakes the driver (which stops waiting on the
app's future without cancelling it) and waits until the engine has taken the
chunk. One future per chunk, only on that path.

Errors, per the ASGI spec
-------------------------
- app raises before its response is complete -> the exception reaches the
  engine: logged, 500 (nothing was written yet, even after
  ``http.response.start``: the head goes out with the first body chunk);
- app raises after a chunk went out -> raised from the body iterator: the
  engine closes the connection, so the client sees a truncated body;
- app raises after sending a complete response (Starlette's error middleware
  does this to get the traceback logged) -> logged, the response is sent;
- app returns without a response -> logged, 500; without finishing a streamed
  one -> the connection is closed;
- a malformed message (unknown type, bad status, header with CR/LF, message
  out of order) raises `RuntimeError` inside the app's `send()`: the app sees
  it and, if it lets it through, the rules above give a 500.

`receive()` gives ``http.request`` messages streamed from `request.stream()`
(the engine's read backpressure applies: nothing is read ahead of the app),
then, once the body is complete, waits for the client to go away (the
engine's `request.on_disconnect` callback; a client that closes its sending
side counts, as with other servers) or for the response to be complete, and
gives ``http.disconnect``. `send()` after the client left raises
`aserve.ClientDisconnected`, an `OSError`, as spec version 2.4 asks.

Root path
---------
The scope follows the spec as asgiref 3 and Starlette read it: ``path`` is
the *full* path, ``root_path`` included, and the app strips ``root_path``
itself (Starlette's routing does; FastAPI's ``/docs`` builds the
``openapi.json`` URL from it). ``root_path`` is `request.root_path` (the
server's root path, then every `App.mount` prefix), then the handler's own
``root_path`` argument; ``raw_path`` is the path as sent, with whatever part
of the root path a proxy stripped put back in front. A request without any
root path costs nothing more: its path and raw path go in as they are.

Extensions: ``http.response.pathsend`` (the file goes out with
`os.sendfile` through `FileSegment`). Trailers are not offered: the engine
sends no trailer fields.

Lifespan
--------
`startup()` runs the app with a ``lifespan`` scope in a task of its own for
the life of the server; `shutdown()` ends it. ``lifespan="auto"`` tolerates an
app that raises before completing start-up (it does not speak lifespan);
``"on"`` makes that an error; ``"off"`` never calls it. The scope's ``state``
dict is shallow-copied into every request scope.

Interface detection
-------------------
`detect_interface()` and `wrap()` tell an aserve handler, an ASGI 3 app, an
ASGI 2 double-callable and a WSGI app apart, for the command line. They look
at the signature only, never call anything, and ask nothing of the user for
the usual shapes. In order:

- ``__aserve_handler__ = True`` on the object or its class: native.
- A class: ``__init__(scope)`` and async instances -> ASGI 2; ``__init__(environ,
  start_response)`` and ``__iter__`` -> WSGI (PEP 3333 allows a class); a class
  whose instances are the app -> an error that says to give an instance.
- Async (a coroutine function, an object with ``async def __call__``, a
  partial of either): one parameter -> native, ``async def h(request)``; three,
  or ``*args`` -> ASGI 3.
- Plain (sync): two parameters -> WSGI, ``def app(environ, start_response)``
  (a function or an object's ``__call__``). One parameter is the one ambiguous
  shape: ``def app(scope)`` returning the instance is ASGI 2, ``def
  handler(request)`` returning a Response is a sync native handler. Its
  parameter decides: annotated ``Request`` -> native; annotated ``Scope``,
  ``dict``, ``Mapping`` or ``MutableMapping`` -> ASGI 2; otherwise named
  ``scope`` -> ASGI 2 (every ASGI 2 app in the wild names it so), any other
  name -> native.
- Anything else is refused with a one-line `ConfigError`; ``--interface``
  forces an interface instead.

Parameters with a default do not count (``def h(request, extra=None)`` takes
one), unless all have one.

``wrap(obj, "native")`` runs a plain ``def handler(request)`` in a worker
thread of the loop's default executor, exactly as `App` runs its plain-def
routes (`aserve.app.ThreadedHandler`): the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import re
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, MutableMapping
from typing import Any, Final, Literal
from urllib.parse import quote

from .errors import ClientDisconnected, ConfigError, HTTPException
from .headers import HEADER_NAME_RE
from .request import Request
from .response import FileSegment, Response, StreamingResponse
from .websocket import websocket_acceptor

__all__ = ["ASGIHandler", "detect_interface", "wrap"]

error_log = logging.getLogger("aserve.error")
lifecycle = logging.getLogger("aserve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
LifespanMode = Literal["auto", "on", "off"]
Interface = Literal["native", "asgi3", "asgi2", "wsgi"]

ASGI_VERSION: Final = {"version": "3.0", "spec_version": "2.4"}
_EXTENSIONS: Final[dict[str, dict[str, Any]]] = {"http.response.pathsend": {}}

# A value must not carry CR, LF or NUL (surrounding blanks are the app's business).
_BAD_VALUE_RE: Final = re.compile(rb"[\x00\r\n]")

_NO_BODY_STATUS: Final = frozenset({204, 304})
# Characters a root path keeps as they are in ``raw_path``.
_PATH_SAFE: Final = "/:@!$&'()*+,;=~"
_DISCONNECT: Final = {"type": "http.disconnect"}

# What the driver reports when the app stops running for the moment.
_DONE, _PAUSED, _INTERRUPTED, _SUSPENDED = range(4)
# Where a request is in its life.
_HANDLER, _STREAMING, _FINISHING = range(3)


class _PauseSignal:
    """Yielded through the app's await chain to hand control back to the driver."""

    __slots__ = ()


_PAUSE_SIGNAL: Final = _PauseSignal()
_INTERRUPT: Final = object()


class _Pause:
    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        yield _PAUSE_SIGNAL


_pause: Final = _Pause()


# Header names already checked, mapped to their lowercase form: apps send the
# same few names on every response, and a dict lookup is cheaper than the regex.
_NAMES: dict[bytes, bytes] = {}
_NAMES_MAX: Final = 1024


def _check_headers(headers: Any) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """The app's ``headers`` as wire pairs, names lowercased, and the value of
    its content-length (b"" if it has transfer-encoding instead). Refuse
    anything that could split the response."""
    raw: list[tuple[bytes, bytes]] = []
    length = None
    names = _NAMES
    for pair in headers:
        name, value = pair
        lower = names.get(name)
        if lower is None:
            if not isinstance(name, bytes) or HEADER_NAME_RE.fullmatch(name) is None:
                raise RuntimeError(f"invalid ASGI response header {pair!r}")
            lower = name.lower()
            if len(names) < _NAMES_MAX:
                names[name] = lower
        if not isinstance(value, bytes) or _BAD_VALUE_RE.search(value) is not None:
            raise RuntimeError(f"invalid ASGI response header {pair!r}")
        if lower == b"content-length":
            length = value = value.strip(b" \t")
        elif lower == b"transfer-encoding":
            length = b""
        raw.append((lower, value))
    return raw, length


class _Run:
    """One ASGI request/response cycle and the driver of its app coroutine."""

    __slots__ = (
        "request",
        "coro",
        "loop",
        "task",
        "phase",
        "done",
        "status",
        "headers",
        "body",
        "complete",
        "chunk",
        "more",
        "file",
        "slot",
        "waiting",
        "wake",
        "throw",
        "disconnected",
        "disconnect_waiter",
        "body_iter",
        "body_done",
        "paused",
        "length",
    )

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.coro: Any = None
        self.loop = loop
        # The exchange task: the app runs in it; any other task's send() is foreign.
        self.task = asyncio.current_task(loop)
        self.phase = _HANDLER
        self.done = False
        self.status = 0  # 0 until http.response.start
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""  # the whole body, once complete without streaming
        self.complete = False
        self.chunk: bytes | FileSegment | None = None  # sent in-task, not yet taken
        self.more = False
        self.file: int | None = None  # the fd of a pathsend
        # A chunk sent from another task: (chunk, more_body, future set once it is taken).
        self.slot: tuple[bytes | FileSegment, bool, asyncio.Future[None]] | None = None
        self.waiting: Any = None  # the future the app waits on
        self.wake: asyncio.Future[Any] | None = None
        self.throw: BaseException | None = None
        self.disconnected = False
        self.disconnect_waiter: asyncio.Future[None] | None = None
        self.body_iter: AsyncIterator[bytes] | None = None
        self.body_done = False
        self.paused = False  # stopped inside send(), in this task
        self.length: bytes | None = None  # the app's content-length, b"" for chunked

    # -- the driver -------------------------------------------------------

    def __await__(self) -> Generator[Any, None, int]:
        """Run the app until it is done, pauses in `send()`, is interrupted by a
        send from another task, or waits on something after its response is
        complete. Exceptions from the app propagate."""
        coro = self.coro
        error, self.throw = self.throw, None
        self.paused = False
        while True:
            waiting = self.waiting
            if waiting is not None:
                if not waiting.done():
                    if self.slot is not None or (self.complete and self.phase == _HANDLER):
                        return _INTERRUPTED
                    wake = self.wake = self.loop.create_future()
                    waiting.add_done_callback(self._wake_up)
                    try:
                        woken = yield from wake
                    except asyncio.CancelledError as exc:
                        self.wake = None
                        waiting.remove_done_callback(self._wake_up)
                        if self.phase == _STREAMING and self.request_gone():
                            # The engine stops a streamed body whose client left by
                            # cancelling the task: that is a disconnect, not a
                            # cancellation of the app, which goes on until it notices.
                            if self.task is not None:
                                self.task.uncancel()
                            self.lost()
                            raise ClientDisconnected("client disconnected") from None
                        if waiting.cancel(exc.args[0] if exc.args else None):
                            continue  # as a Task does: wait for the cancelled future to finish
                        self.waiting = None
                        error = exc
                    else:
                        self.wake = None
                        if woken is _INTERRUPT:
                            waiting.remove_done_callback(self._wake_up)
                            return _INTERRUPTED
                        self.waiting = None
                else:
                    self.waiting = None
            try:
                if error is None:
                    yielded = coro.send(None)
                else:
                    yielded = coro.throw(error)
                    error = None
            except StopIteration:
                self.done = True
                return _DONE
            except BaseException:
                self.done = True
                raise
            if yielded is _PAUSE_SIGNAL:
                self.paused = True
                return _PAUSED
            if yielded is None:  # a bare yield (asyncio.sleep(0)): let others run once
                try:
                    yield None
                except BaseException as exc:
                    error = exc
                continue
            yielded._asyncio_future_blocking = False
            self.waiting = yielded
            if self.complete and self.phase != _FINISHING:
                return _SUSPENDED

    def _wake_up(self, _: Any) -> None:
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _interrupt(self) -> None:
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(_INTERRUPT)

    def request_gone(self) -> bool:
        return self.disconnected or self.request.disconnected

    def lost(self) -> None:
        """The client is gone: wake whoever waits for it, fail a parked send."""
        self.disconnected = True
        waiter = self.disconnect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        slot, self.slot = self.slot, None
        if slot is not None and not slot[2].done():
            slot[2].set_exception(ClientDisconnected("client disconnected"))

    # -- receive ----------------------------------------------------------

    async def receive(self) -> Message:
        if not self.body_done:
            body_iter = self.body_iter
            if body_iter is None:
                body_iter = self.body_iter = self.request.stream()
            try:
                chunk = await anext(body_iter, b"")
            except ClientDisconnected:
                self.body_done = True
                self.disconnected = True
                return dict(_DISCONNECT)
            if chunk:
                return {"type": "http.request", "body": chunk, "more_body": True}
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.disconnected or self.complete or self.request_gone():
            self.disconnected = True
            return dict(_DISCONNECT)
        waiter = self.disconnect_waiter
        if waiter is None or waiter.done():
            waiter = self.disconnect_waiter = self.loop.create_future()
            self.request.on_disconnect(self._wake_disconnect_waiter)
        await waiter
        self.disconnected = True
        return dict(_DISCONNECT)

    def _wake_disconnect_waiter(self) -> None:
        waiter = self.disconnect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- send -------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.status:
                raise RuntimeError("ASGI 'http.response.body' sent before 'http.response.start'")
            if self.complete:
                raise RuntimeError("ASGI 'http.response.body' sent after the response completed")
            body = message.get("body", b"")
            if not isinstance(body, bytes):
                if not isinstance(body, bytearray | memoryview):
                    raise RuntimeError(f"ASGI body must be bytes, not {type(body).__name__}")
                body = bytes(body)
            more = bool(message.get("more_body", False))
            await self._body(body, more)
        elif kind == "http.response.start":
            if self.status:
                raise RuntimeError("ASGI 'http.response.start' sent twice")
            status = message["status"]
            if type(status) is not int or not 200 <= status <= 999:
                raise RuntimeError(f"invalid ASGI response status {status!r}")
            self.headers, self.length = _check_headers(message.get("headers", ()))
            self.status = status
        elif kind == "http.response.pathsend":
            if not self.status or self.complete or self.more:
                raise RuntimeError("ASGI 'http.response.pathsend' out of order")
            path = message["path"]
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self.file = fd
            size = os.fstat(fd).st_size
            if self.length is None:
                self.headers.append((b"content-length", b"%d" % size))
            await self._body(FileSegment(fd, 0, size), False)
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for an HTTP request")

    async def _body(self, chunk: bytes | FileSegment, more: bool) -> None:
        if self.disconnected:
            raise ClientDisconnected("client disconnected")
        if self.phase == _HANDLER and not self.more and not more and type(chunk) is bytes:
            # The whole body at once: a response in hand. (A wake future exists
            # only while the driver waits, i.e. when another task sends this.)
            self.body = chunk
            self.complete = True
            self._wake_disconnect_waiter()  # as the spec has it: the exchange is over
            if self.wake is not None:
                self._interrupt()
            return
        if self.phase == _FINISHING:
            raise ClientDisconnected("client disconnected")
        self.more = more
        if not more:
            self.complete = True
            self._wake_disconnect_waiter()
        if asyncio.current_task(self.loop) is self.task:
            self.chunk = chunk
            await _pause
            return
        while self.slot is not None:  # another task's chunk is still waiting
            await asyncio.shield(self.slot[2])
        taken: asyncio.Future[None] = self.loop.create_future()
        self.slot = (chunk, more, taken)
        self._interrupt()
        await taken

    # -- results ----------------------------------------------------------

    def response(self, outcome: int) -> Response:
        """What the handler returns once the driver has stopped in the handler phase."""
        status = self.status
        if self.complete and self.chunk is None and self.slot is None:
            headers = self.headers
            body = self.body
            if status not in _NO_BODY_STATUS and self.request.method != "HEAD":
                length = self.length
                if length is None:
                    headers.append((b"content-length", b"%d" % len(body)))
                elif length and length != b"%d" % len(body):
                    raise RuntimeError(
                        f"ASGI response content-length {length.decode('latin-1')} "
                        f"but {len(body)} body bytes"
                    )
            if outcome == _DONE:
                return Response.from_parts(status, headers, body)
            # The app still has work to do after its response (background
            # tasks): finish it when the engine closes the body.
            self.phase = _STREAMING
            return StreamingResponse.from_stream(status, headers, _Body(self, body))
        if not status:
            if self.done:
                raise RuntimeError("ASGI app returned without sending a response")
            raise RuntimeError("ASGI app sent a body before 'http.response.start'")
        if self.done and not self.complete and self.chunk is None and self.slot is None:
            raise RuntimeError("ASGI app returned without completing its response")
        self.phase = _STREAMING
        return StreamingResponse.from_stream(status, self.headers, _Body(self, None))

    async def finish(self) -> None:
        """Run what is left of the app after its response (or after the client left)."""
        self.phase = _FINISHING
        try:
            if not self.complete:
                self.lost()
                if self.paused:
                    # Its chunk never went out: the app's send() raises.
                    self.throw = ClientDisconnected("client disconnected")
            self.chunk = None
            while not self.done:
                await self  # send() raises from here on, so only _DONE ends this
        except Exception as exc:
            if not (isinstance(exc, ClientDisconnected) and self.disconnected):
                error_log.error("ASGI app failed after its response was sent", exc_info=exc)
        finally:
            self.close_file()
            waiter = self.disconnect_waiter
            if waiter is not None and not waiter.done():
                waiter.cancel()

    def close_file(self) -> None:
        if self.file is not None:
            os.close(self.file)
            self.file = None


class _Body:
    """The streamed body: each `__anext__` resumes the app until its next chunk."""

    __slots__ = ("_run", "_first", "_closed", "_taken")

    def __init__(self, run: _Run, first: bytes | None) -> None:
        self._run = run
        self._first = first
        self._closed = False
        # The future of a chunk sent from another task, resolved once the
        # engine asks for the next chunk, i.e. after it drained this one.
        self._taken: asyncio.Future[None] | None = None

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes | FileSegment:
        run = self._run
        taken = self._taken
        if taken is not None:
            self._taken = None
            if not taken.done():
                taken.set_result(None)
        first = self._first
        if first is not None:
            self._first = None
            if first:
                return first
        while True:
            chunk = run.chunk
            if chunk is not None:
                run.chunk = None
                if chunk:
                    return chunk
            slot = run.slot
            if slot is not None:
                run.slot = None
                if slot[0]:
                    self._taken = slot[2]
                    return slot[0]
                if not slot[2].done():
                    slot[2].set_result(None)
            if run.complete:
                raise StopAsyncIteration
            if run.done:
                raise RuntimeError("ASGI app returned without completing its response")
            outcome = await run
            if outcome == _SUSPENDED and run.chunk is None and run.slot is None:
                raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        run = self._run
        taken, self._taken = self._taken, None
        if taken is not None and not taken.done():
            if run.request_gone():
                taken.set_exception(ClientDisconnected("client disconnected"))
            else:
                taken.set_result(None)
        await run.finish()


class ASGIHandler:
    """Serve an ASGI 3 application: ``aserve.Server(ASGIHandler(app))``.

    ``lifespan``: "auto" runs the app's lifespan protocol if it speaks it,
    "on" requires it, "off" skips it.

    The scope's ``root_path`` is `request.root_path` -- the server's root path
    and the prefix of every `App.mount` the request came through -- so
    ``app.mount("/api", ASGIHandler(fastapi_app))`` needs nothing more. The
    optional ``root_path`` argument is one more prefix after that: when the
    path below the mount starts with it, it is taken as part of the path; when
    it does not (a proxy in front stripped it), it is put back. It is never
    counted twice. See "Root path" in the module docstring.
    """

    __slots__ = (
        "app",
        "lifespan",
        "root_path",
        "state",
        "_lifespan_task",
        "_lifespan_queue",
        "_lifespan_events",
        "_lifespan_failure",
        "_lifespan_running",
    )

    def __init__(self, app: ASGIApp, lifespan: LifespanMode = "auto", root_path: str = "") -> None:
        if lifespan not in ("auto", "on", "off"):
            raise ConfigError(f"lifespan must be 'auto', 'on' or 'off', not {lifespan!r}")
        self.app = app
        self.lifespan = lifespan
        self.root_path = root_path.rstrip("/")
        self.state: dict[str, Any] = {}
        self._lifespan_task: asyncio.Task[None] | None = None
        self._lifespan_queue: asyncio.Queue[Message] | None = None
        self._lifespan_events: dict[str, asyncio.Future[None]] = {}
        self._lifespan_failure: str | None = None
        self._lifespan_running = False

    # -- HTTP -------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        for name, _ in request._raw_headers:
            # A scan of the names, cheaper than asking the connection (about
            # 1,800 instructions for five headers against 2,900; 0.35% of a
            # request through this adapter): most requests have no Upgrade.
            if name == b"upgrade":
                acceptor = websocket_acceptor(request)
                if acceptor is not None:  # a WebSocket, and the connection can switch
                    from .asgi_websocket import serve_websocket

                    return await serve_websocket(self, request, acceptor)
                break
        loop = asyncio.get_running_loop()
        run = _Run(request, loop)
        if request.root_path or self.root_path:
            root_path, path, raw_path = self._paths(request)
            query_string = request.query_string
        else:
            root_path = ""
            path = request.path
            raw_path, _, query_string = request._target.partition(b"?")
        raw_headers = request._raw_headers
        scope = {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": request.http_version,
            "method": request.method,
            "scheme": request.scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": query_string,
            "root_path": root_path,
            # The request's own list of pairs (what `request.headers.raw` is),
            # without making the Headers view for it.
            "headers": raw_headers if type(raw_headers) is list else list(raw_headers),
            "client": request.client,
            "server": request.server,
            "state": self.state.copy(),
            "extensions": _EXTENSIONS,
        }
        if request.scheme == "https":
            tls = request.tls
            if tls is not None:
                scope["extensions"] = {**_EXTENSIONS, "tls": tls.asgi_extension()}
        run.coro = self.app(scope, run.receive, run.send)
        try:
            outcome = await run
        except HTTPException:
            run.close_file()
            raise  # the engine's own request errors (body too large...): their status
        except Exception as exc:
            run.close_file()
            if run.complete and not run.more and run.chunk is None:
                # A complete response, then an error (Starlette's error middleware
                # re-raises after sending its 500, for the log): send the response.
                error_log.error("ASGI app raised after its response", exc_info=exc)
                return run.response(_DONE)
            if run.disconnected or run.request_gone():
                raise ClientDisconnected("client disconnected") from exc
            raise
        if run.done and not run.status and run.request_gone():
            raise ClientDisconnected("client disconnected")
        return run.response(outcome)

    def _paths(self, request: Request) -> tuple[str, str, bytes]:
        """``root_path``, ``path`` and ``raw_path`` of a request under a root
        path: the path is the full one, root path included, as the spec has it."""
        split = request.split_root(self.root_path)
        if split.intact:
            return split.root_path, request.path, request.raw_path
        root = split.root_path
        raw_root = quote(root, safe=_PATH_SAFE).encode("ascii")
        return root, root + split.rest, raw_root + split.raw_rest

    # -- lifespan ---------------------------------------------------------

    async def startup(self) -> None:
        """Run the app's lifespan start-up; raise if it fails (or is required
        and not supported)."""
        if self.lifespan == "off":
            return
        loop = asyncio.get_running_loop()
        self._lifespan_queue = asyncio.Queue()
        self._lifespan_events = {
            "startup": loop.create_future(),
            "shutdown": loop.create_future(),
        }
        self._lifespan_queue.put_nowait({"type": "lifespan.startup"})
        task = self._lifespan_task = loop.create_task(self._run_lifespan())
        try:
            await self._wait_lifespan("startup")
        except BaseException:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self._lifespan_task = None
            raise

    async def shutdown(self) -> None:
        task = self._lifespan_task
        if task is None or task.done() or self._lifespan_queue is None:
            return
        self._lifespan_queue.put_nowait({"type": "lifespan.shutdown"})
        try:
            await self._wait_lifespan("shutdown")
        except Exception as exc:
            # The server is stopping either way: say so, do not mask the stop.
            error_log.error("%s", exc)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _wait_lifespan(self, phase: str) -> None:
        event = self._lifespan_events[phase]
        task = self._lifespan_task
        assert task is not None
        await asyncio.wait([event, task], return_when=asyncio.FIRST_COMPLETED)
        if event.done():
            event.result()  # raises the failure, if any
            return
        # The lifespan task ended before answering.
        failure = self._lifespan_failure
        if failure is not None:
            if self.lifespan == "on" or self._lifespan_running:
                raise RuntimeError(f"ASGI lifespan {phase} failed: {failure}")
            lifecycle.info("ASGI app does not support lifespan (%s); continuing", failure)
        elif phase == "startup" and self.lifespan == "on":
            raise RuntimeError("ASGI app returned from lifespan without completing startup")

    async def _run_lifespan(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        try:
            await self.app(scope, self._lifespan_receive, self._lifespan_send)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._lifespan_failure = f"{type(exc).__name__}: {exc}"
            if self._lifespan_running or self.lifespan == "on":
                error_log.error("ASGI lifespan raised", exc_info=exc)

    async def _lifespan_receive(self) -> Message:
        assert self._lifespan_queue is not None
        return await self._lifespan_queue.get()

    async def _lifespan_send(self, message: Message) -> None:
        kind = message.get("type")
        phase, _, result = str(kind).removeprefix("lifespan.").partition(".")
        event = self._lifespan_events.get(phase)
        if not kind or event is None or result not in ("complete", "failed"):
            raise RuntimeError(f"unexpected ASGI lifespan message {message!r}")
        if event.done():
            raise RuntimeError(f"ASGI lifespan message {kind!r} sent twice")
        if phase == "startup":
            self._lifespan_running = True
        if result == "complete":
            event.set_result(None)
        else:
            detail = message.get("message", "") or "no message"
            error_log.error("ASGI lifespan %s failed: %s", phase, detail)
            event.set_exception(RuntimeError(f"ASGI lifespan {phase} failed: {detail}"))


# --------------------------------------------------------------------------- interfaces


class ASGI2Adapter:
    """An ASGI 2 app (``app(scope)`` returns ``instance(receive, send)``) as ASGI 3."""

    __slots__ = ("app",)

    def __init__(self, app: Callable[[Scope], Callable[[Receive, Send], Awaitable[None]]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope)(receive, send)


def _positional_count(func: Any) -> int | None:
    """How many positional arguments `func` takes (None: any number): those
    without a default, unless all have one (``def h(request, extra=None)``
    takes one, the request)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    count = required = 0
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
            if parameter.default is parameter.empty:
                required += 1
    return required or count


def _is_async(obj: Any) -> bool:
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - we want the method itself
    return call is not None and inspect.iscoroutinefunction(call)


# Annotations of a lone parameter that make it an ASGI 2 scope.
_SCOPE_ANNOTATIONS: Final = frozenset({"Scope", "dict", "Dict", "Mapping", "MutableMapping"})


def _takes_scope(func: Any) -> bool:
    """Whether the one parameter of the plain callable `func` is an ASGI scope
    rather than a request: its annotation says so, or, without a telling
    annotation, its name is ``scope``."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    if not parameters:
        return False
    first = parameters[0]
    annotation = _annotation_name(first.annotation)
    if annotation == "Request":
        return False
    if annotation in _SCOPE_ANNOTATIONS:
        return True
    return first.name == "scope"


def _annotation_name(annotation: Any) -> str:
    """The bare name of an annotation: ``"aserve.Request"`` -> ``"Request"``,
    ``dict[str, Any]`` -> ``"dict"``; any subclass of `Request` -> ``"Request"``."""
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation.strip("'\" ").partition("[")[0].rpartition(".")[2]
    if inspect.isclass(annotation) and issubclass(annotation, Request):
        return "Request"
    annotation = typing.get_origin(annotation) or annotation
    return str(getattr(annotation, "__name__", ""))


def detect_interface(obj: Any) -> Interface:
    """Which interface `obj` speaks: "native" (an aserve handler, async or
    plain), "asgi3", "asgi2" or "wsgi". The rules are in the module docstring.

    Raises `aserve.ConfigError` with a one-line reason when it is none of them.
    """
    if getattr(obj, "__aserve_handler__", False):
        return "native"
    if not callable(obj):
        raise ConfigError(f"{obj!r} is not callable, so it is no handler, ASGI or WSGI app")
    if inspect.isclass(obj):
        return _detect_class(obj)
    count = _positional_count(obj)
    if _is_async(obj):
        if count == 1:
            return "native"
        if count == 3 or count is None:
            return "asgi3"
        raise ConfigError(
            f"{_name(obj)} is async but takes {count} arguments: a handler takes (request), "
            "an ASGI app (scope, receive, send)"
        )
    if count == 2:
        return "wsgi"
    if count == 1:
        return "asgi2" if _takes_scope(obj) else "native"
    raise ConfigError(
        f"{_name(obj)} takes {'any number of' if count is None else count} arguments: "
        "it is no aserve handler, ASGI app or WSGI app (use --interface to force one)"
    )


def _detect_class(cls: type) -> Interface:
    count = _positional_count(cls)  # what its __init__ takes
    # The instances' __call__, if the class (not `type`) defines one.
    call = next((vars(k)["__call__"] for k in cls.__mro__ if "__call__" in vars(k)), None)
    # ASGI 2: instantiated with the scope, the instance is awaited with (receive, send).
    if count == 1 and call is not None and inspect.iscoroutinefunction(call):
        return "asgi2"
    # PEP 3333 allows a class: instantiated with (environ, start_response), iterated.
    if count == 2 and hasattr(cls, "__iter__"):
        return "wsgi"
    if count == 0 and call is not None:
        raise ConfigError(
            f"{cls.__qualname__} is a class whose instances are apps: "
            f"give an instance, {cls.__qualname__}()"
        )
    raise ConfigError(
        f"class {cls.__qualname__} is no ASGI 2 app (its __init__ must take the scope "
        "and its instances be async callables) nor a WSGI app class"
    )


def _name(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", None) or type(obj).__qualname__)


def wrap(
    obj: Any,
    interface: str = "auto",
    lifespan: LifespanMode = "auto",
    threads: int | None = None,
) -> Any:
    """`obj` as an aserve handler, speaking `interface` ("auto" detects it)."""
    if interface == "auto":
        interface = detect_interface(obj)
    if interface == "native":
        from .app import ThreadedHandler

        # A plain def (request) runs in a worker thread, as App runs its plain-def routes.
        return obj if _is_async(obj) else ThreadedHandler(obj)
    if interface == "asgi3":
        return ASGIHandler(obj, lifespan=lifespan)
    if interface == "asgi2":
        return ASGIHandler(ASGI2Adapter(obj), lifespan=lifespan)
    if interface == "wsgi":
        from .wsgi import WSGIHandler

        return WSGIHandler(obj) if threads is None else WSGIHandler(obj, threads=threads)
    raise ConfigError(f"interface must be auto, native, asgi3, asgi2 or wsgi, not {interface!r}")
