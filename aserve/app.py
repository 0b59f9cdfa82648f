"""App: routes, mounts, middleware, error handlers and start-up/shutdown hooks.

An `App` is a handler like any other (``await app(request) -> Response``), so
the server needs to know nothing about it; its `startup`/`shutdown` methods are
the hooks the server awaits. One request goes through, outermost first::

    App.__call__        catches what nothing else did: a registered handler for
                        Exception or 500, else a plain 500 (traceback only with
                        debug=True); logged on `aserve.error`
      middleware...     `async def mw(request, call_next)`, in registration order
        App._route      route lookup; HTTPException and registered exception
                        types become responses here, so middleware sees them
          handler       `async def` awaited; plain `def` run in a worker thread

Mounts: the mounted handler sees the request with `root_path` extended by the
prefix (an ASGI or WSGI adapter passes it on as ``root_path`` / ``SCRIPT_NAME``).
Its answer comes back through `_route`, so this App's middleware sees it, and
when it is a plain error answer -- a mounted App's `ErrorResponse` (an error
none of *its* handlers took), a mounted StaticFiles' 403/404/405/5xx -- this
App's error handlers answer it instead (`exception_handler` says which).

Plain ``def`` handlers run in a worker thread wherever they are given: routes
and error handlers (`_as_async`), mounts and the server's handler
(`as_async_handler`, `ThreadedHandler`). Both use `asyncio.to_thread`.

Cost on the hot path, measured against a bare handler: an exact path is two
dict lookups (path, then method) and one await; no task, no per-request
closure. With no middleware the chain *is* `_route`. Patterned paths add one
regex match (see `aserve.routing`). Everything else -- 404, 405, OPTIONS,
mounts, error handlers -- is off that path; a mount adds a status comparison,
and a look at its answer only when that is 400 or more.

This module must not import the engine (`protocol`, `exchange`, `flow`,
`server`): an App runs under any caller that awaits it, including tests.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TypeVar, overload

from .asgi import detect_interface
from .datastructures import State
from .errors import ClientDisconnected, ConfigError, HTTPException
from .forms import FormData, UploadFile
from .httpserver import is_handler_class
from .request import Request
from .response import PlainTextResponse, Response, StreamingResponse
from .routing import FOUND, MOUNTED, NOT_ALLOWED, Mount, NoMatchFound, Route, Router
from .static import StaticFiles
from .websocket import WebSocket, WebSocketRoute

__all__ = [
    "App",
    "ErrorResponse",
    "Mount",
    "NoMatchFound",
    "Route",
    "ThreadedHandler",
    "as_async_handler",
]

error_log = logging.getLogger("aserve.error")

CallNext = Callable[[Request], Awaitable[Response]]
Middleware = Callable[[Request, CallNext], Awaitable[Response]]
ErrorHandler = Callable[[Request, Any], Awaitable[Response]]
Lifespan = Callable[["App"], AbstractAsyncContextManager[Mapping[str, Any] | None]]

F = TypeVar("F", bound=Callable[..., Any])


class App:
    """A router with middleware, error handlers and lifecycle hooks.

    ::

        app = aserve.App()

        @app.get("/items/{item_id:int}")
        async def get_item(request):
            return aserve.JSONResponse({"id": request.path_params["item_id"]})
    """

    def __init__(
        self,
        *,
        debug: bool = False,
        routes: Iterable[Route | Mount] = (),
        middleware: Iterable[Middleware] = (),
        exception_handlers: Mapping[int | type[BaseException], ErrorHandler] | None = None,
        on_startup: Iterable[Callable[[], Any]] = (),
        on_shutdown: Iterable[Callable[[], Any]] = (),
        lifespan: Lifespan | None = None,
    ) -> None:
        self.debug = debug
        self.router = Router()
        #: Application-wide state (a lifespan may fill it by yielding a mapping).
        self.state = State()
        self._static = self.router.static
        self._middleware: list[Middleware] = []
        self._entry: CallNext = self._route
        self._status_handlers: dict[int, ErrorHandler] = {}
        self._type_handlers: dict[type[BaseException], ErrorHandler] = {}
        self._startup_hooks: list[Callable[[], Any]] = list(on_startup)
        self._shutdown_hooks: list[Callable[[], Any]] = list(on_shutdown)
        self._lifespan = lifespan
        self._exit_stack: AsyncExitStack | None = None
        for entry in routes:
            if isinstance(entry, Mount):
                entry.handler = as_async_handler(entry.handler)
                self.router.mount(entry)
            else:
                entry.endpoint = _as_async(entry.endpoint)
                self.router.add(entry)
        for mw in middleware:
            self.middleware(mw)
        for key, handler in (exception_handlers or {}).items():
            self.add_exception_handler(key, handler)

    # -- routes -----------------------------------------------------------

    def add_route(
        self,
        path: str,
        endpoint: Callable[[Request], Any],
        methods: Iterable[str] | None = None,
        *,
        name: str | None = None,
    ) -> Route:
        """Serve `methods` (default GET) on `path` with `endpoint`; see `route`."""
        if name is None:
            name = getattr(endpoint, "__name__", None)
        route = Route(path, _as_async(endpoint), methods or ("GET",), name=name)
        self.router.add(route)
        return route

    def route(
        self, path: str, methods: Iterable[str] | None = None, *, name: str | None = None
    ) -> Callable[[F], F]:
        """Decorator: serve `methods` (default ``["GET"]``) on `path`.

        The handler is ``async def h(request) -> Response``, or a plain ``def``
        that then runs in a worker thread. `name` (default: the function's
        name) is what `url_path_for` finds it by.
        """

        def decorate(endpoint: F) -> F:
            self.add_route(path, endpoint, methods, name=name)
            return endpoint

        return decorate

    def get(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        return self.route(path, ["GET"], name=name)

    def post(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        return self.route(path, ["POST"], name=name)

    def put(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        return self.route(path, ["PUT"], name=name)

    def patch(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        return self.route(path, ["PATCH"], name=name)

    def delete(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        return self.route(path, ["DELETE"], name=name)

    def websocket(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        """Decorator: serve WebSockets on `path` with ``async def h(websocket)``
        (an `aserve.WebSocket`; see aserve/websocket.py).

        A plain GET to the path gets 426 unless an HTTP route serves it too
        (``@app.get`` on the same path answers everything but the upgrades).
        """

        def decorate(handler: F) -> F:
            self.add_websocket_route(path, handler, name=name)
            return handler

        return decorate

    def add_websocket_route(
        self, path: str, handler: Callable[[WebSocket], Any], *, name: str | None = None
    ) -> Route:
        """Serve WebSockets on `path` with `handler`; see `websocket`."""
        if not is_async_callable(handler):
            raise TypeError(f"a WebSocket handler must be an async def, not {handler!r}")
        route = WebSocketRoute(path, handler, name=name)
        self.router.add(route)
        return route

    def mount(self, prefix: str, handler: Any, *, name: str | None = None) -> None:
        """Serve every path under `prefix` with `handler`: an App, StaticFiles,
        an ASGI or WSGI app in `ASGIHandler` / `WSGIHandler`, any handler (a
        plain ``def`` runs in a worker thread).

        Routes are tried first; then mounts, longest prefix first. The handler
        sees the same request with `root_path` extended by `prefix`; it routes
        on `request.route_path`, and an ASGI or WSGI app sees the prefix as its
        ``root_path`` / ``SCRIPT_NAME``. Its `startup`/`shutdown`, if any, run
        with this app's. ``url_path_for("name:route")`` reaches into a named
        mount. This app's error handlers also answer the mounted handler's own
        plain error answers (see `exception_handler`).

        A bare ASGI or WSGI app, or a bare ``http.server`` handler class, is
        refused with a `TypeError` saying which wrapper it needs.
        """
        self.router.mount(Mount(prefix, as_async_handler(handler), name=name))

    def url_path_for(self, name: str, /, **params: Any) -> str:
        """The path of the route called `name`, with `params` filled in.

        Raises `NoMatchFound` when no route of that name takes those parameters.
        """
        return self.router.url_path_for(name, params)

    # -- middleware and errors ---------------------------------------------

    @overload
    def middleware(self, mw: Middleware) -> Middleware: ...
    @overload
    def middleware(self, mw: str) -> Callable[[Middleware], Middleware]: ...

    def middleware(self, mw: Middleware | str) -> Middleware | Callable[[Middleware], Middleware]:
        """Add ``async def mw(request, call_next) -> Response``; first added is outermost.

        Usable as a call, ``app.middleware(CORSMiddleware(...))``, or as a
        decorator, ``@app.middleware`` (``@app.middleware("http")`` too).
        """
        if isinstance(mw, str):
            if mw != "http":
                raise ValueError(f"unknown middleware kind {mw!r}")
            return self.middleware
        if not callable(mw):
            raise TypeError(f"middleware must be callable, not {type(mw).__name__}")
        self._middleware.append(mw)
        entry: CallNext = self._route
        for layer in reversed(self._middleware):
            entry = _bind(layer, entry)
        self._entry = entry
        return mw

    def add_exception_handler(self, key: int | type[BaseException], handler: ErrorHandler) -> None:
        handler = _as_async(handler)
        if isinstance(key, int):
            self._status_handlers[key] = handler
        elif isinstance(key, type) and issubclass(key, BaseException):
            self._type_handlers[key] = handler
        else:
            raise TypeError("exception_handler takes a status code or an exception class")

    def exception_handler(self, key: int | type[BaseException]) -> Callable[[F], F]:
        """Decorator: answer `key` (a status, or an exception class and its
        subclasses) with ``async def handler(request, exc) -> Response``.

        A status catches `HTTPException` of that status, including the 404 and
        405 of routing; ``500`` or ``Exception`` catches every other error.

        They answer every error answer this App gives, and those of what is
        mounted in it that are plain error answers rather than pages of their
        own: a mounted `App`'s answers to errors none of *its* handlers took
        (its 404, 405, 500...), a mounted `StaticFiles`' 403, 404, 405 and 5xx
        (``exc`` is then an `HTTPException` of that status, with ``Allow`` for
        a 405), and `HTTPException` raised by any mounted handler. Not what a
        handler returns as its own response, whatever its status, nor an
        ASGI or WSGI app's answers: such an app owns its error pages.
        """

        def decorate(handler: F) -> F:
            self.add_exception_handler(key, handler)
            return handler

        return decorate

    # -- lifecycle ----------------------------------------------------------

    def on_startup(self, hook: F) -> F:
        """Decorator: run `hook` (async or not) when the server starts, before it listens."""
        self._startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: F) -> F:
        """Decorator: run `hook` when the server has stopped."""
        self._shutdown_hooks.append(hook)
        return hook

    async def startup(self) -> None:
        """Run the start-up hooks, enter the lifespan, start mounted handlers.

        Called by the server. If any step fails, what already started is
        stopped again and the error propagates (the server does not start).
        """
        stack = AsyncExitStack()
        try:
            for hook in self._startup_hooks:
                await _call_hook(hook)
            if self._lifespan is not None:
                state = await stack.enter_async_context(self._lifespan(self))
                if state:
                    self.state.update(state)
            for mount in self.router.mounts:
                if self.debug and isinstance(mount.handler, App):
                    mount.handler.debug = True  # debug reaches the mounted Apps too
                start = getattr(mount.handler, "startup", None)
                stop = getattr(mount.handler, "shutdown", None)
                if start is not None:
                    await start()
                if stop is not None:
                    stack.push_async_callback(stop)
        except BaseException:
            await stack.aclose()
            raise
        self._exit_stack = stack

    async def shutdown(self) -> None:
        """Stop mounted handlers, leave the lifespan, run the shutdown hooks."""
        stack, self._exit_stack = self._exit_stack, None
        try:
            if stack is not None:
                await stack.aclose()
        finally:
            for hook in self._shutdown_hooks:
                await _call_hook(hook)

    # -- serving ------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        request.app = self
        try:
            return await self._entry(request)
        except HTTPException as exc:  # raised by a middleware
            return await self._http_error(request, exc)
        except ClientDisconnected:
            raise  # nobody to answer; the server knows what to do
        except Exception as exc:
            return await self._server_error(request, exc)

    async def _route(self, request: Request) -> Response:
        try:
            path = request.route_path if request.root_path else request.path
            methods = self._static.get(path)
            if methods is not None:
                endpoint = methods.get(request.method)
                if endpoint is not None:
                    response = await endpoint(request)
                else:
                    response = await self._resolve(request, path)
            else:
                response = await self._resolve(request, path)
        except HTTPException as exc:
            response = await self._http_error(request, exc)
        except Exception as exc:
            handler = self._find_handler(exc, inner=True) if self._type_handlers else None
            if handler is None:
                if request._form is not None:
                    _close_files(request._form)
                raise
            response = await handler(request, exc)
        if request._form is not None:
            # Uploaded files live until the response no longer needs them.
            _close_form_after(request._form, response)
        return response

    async def _resolve(self, request: Request, path: str) -> Response:
        method = request.method
        kind, target, params, methods = self.router.resolve(method, path)
        if kind == FOUND:
            if params:
                request.path_params = params
            response: Response = await target(request)
            return response
        if kind == MOUNTED:
            root = request.root_path
            if not root and request._root_missing is None:
                # The request came without a root path, so nothing of it was
                # stripped, and mounts strip nothing: route_path need not check.
                request._root_missing = ""
            request.root_path = root + target.prefix
            try:
                mounted: Response = await target.handler(request)
            finally:
                request.root_path = root
            if mounted.status_code >= 400:
                return await self._mounted_error(request, target.handler, mounted)
            return mounted
        if method == "OPTIONS" and methods is not None:
            return Response(b"", headers={"allow": methods.allow})
        if kind == NOT_ALLOWED and methods is not None:
            raise HTTPException(405, headers={"Allow": methods.allow})
        raise HTTPException(404)

    def _find_handler(self, exc: BaseException, *, inner: bool) -> ErrorHandler | None:
        handlers = self._type_handlers
        for cls in type(exc).__mro__:
            if inner and (cls is Exception or cls is BaseException):
                return None  # those belong to the outermost layer, after middleware
            handler = handlers.get(cls)
            if handler is not None:
                return handler
        return None

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        handler = self._status_handlers.get(exc.status)
        if handler is None and self._type_handlers:
            handler = self._find_handler(exc, inner=True)
        if handler is not None:
            return await handler(request, exc)
        return http_error_response(exc)

    async def _mounted_error(self, request: Request, mounted: Any, response: Response) -> Response:
        """A mounted handler's error `response`, or this App's own answer when
        it is a plain error answer and a handler here takes it."""
        if isinstance(response, ErrorResponse):
            error = response.error
        elif isinstance(mounted, StaticFiles) and _is_plain_error(response.status_code):
            # Marked, so that an App this one is mounted in knows it too.
            error = _static_error(response)
            response = ErrorResponse.of(response, error)
        else:
            return response
        if not (self._status_handlers or self._type_handlers):
            return response
        if isinstance(error, HTTPException):
            handler = self._status_handlers.get(error.status)
            if handler is None and self._type_handlers:
                handler = self._find_handler(error, inner=True)
            if handler is None:
                return response
            request.app = self
            return await handler(request, error)
        # An error a mounted App answered with a plain 500 (and logged).
        handler = self._find_handler(error, inner=False) or self._status_handlers.get(500)
        if handler is None:
            return response
        request.app = self
        try:
            return await handler(request, error)
        except Exception as handler_exc:
            error_log.error("the 500 error handler failed too", exc_info=handler_exc)
            return response

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        error_log.error(
            "handler failed on %s %s",
            request.method,
            request.target.decode("latin-1"),
            exc_info=exc,
        )
        handler = self._find_handler(exc, inner=False) or self._status_handlers.get(500)
        if handler is not None:
            try:
                return await handler(request, exc)
            except Exception as handler_exc:
                error_log.error("the 500 error handler failed too", exc_info=handler_exc)
        detail = "Internal Server Error\n"
        if self.debug:
            detail += "\n" + "".join(traceback.format_exception(exc))
        return ErrorResponse(detail, status=500, error=exc)

    def __repr__(self) -> str:
        return f"<App with {len(self.router.routes)} routes>"


class ErrorResponse(PlainTextResponse):
    """The plain answer an App gives to an error none of its handlers took,
    with that error: an App it is mounted in may answer with a handler of its
    own instead (`App.exception_handler`)."""

    __slots__ = ("error",)

    def __init__(
        self,
        content: Any = b"",
        status: int = 500,
        headers: Mapping[str, str] | None = None,
        *,
        error: BaseException,
    ) -> None:
        super().__init__(content, status=status, headers=headers)
        #: The `HTTPException` (or, for a 500, the exception) answered.
        self.error = error

    @classmethod
    def of(cls, response: Response, error: BaseException) -> ErrorResponse:
        """`response` as it is (status, headers, body), marked as the answer to `error`."""
        marked = cls.__new__(cls)
        marked.status_code = response.status_code
        marked.raw_headers = response.raw_headers
        marked.body = response.body
        marked.error = error
        return marked


def http_error_response(exc: HTTPException) -> ErrorResponse:
    """The plain-text answer to an `HTTPException`, as the engine would give it."""
    status = exc.status
    body = exc.detail if exc.detail.endswith("\n") else exc.detail + "\n"
    if status < 200 or status in (204, 304):
        body = ""
    return ErrorResponse(body, status=status, headers=exc.headers, error=exc)


def _is_plain_error(status: int) -> bool:
    # StaticFiles' 412 and 416 answer conditional and range requests: their
    # headers are the answer, so they stay.
    return status in (403, 404, 405) or status >= 500


def _static_error(response: Response) -> HTTPException:
    """The `HTTPException` a StaticFiles error answer stands for."""
    headers = {  # named as App's own 405 names its Allow
        name.decode("latin-1").title(): value.decode("latin-1")
        for name, value in response.raw_headers
        if name not in (b"content-type", b"content-length")
    }
    detail = response.body.decode("utf-8", "replace").rstrip("\n")
    return HTTPException(response.status_code, detail or None, headers or None)


def _bind(layer: Middleware, call_next: CallNext) -> CallNext:
    async def call(request: Request) -> Response:
        return await layer(request, call_next)

    return call


def is_async_callable(obj: Any) -> bool:
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - a callable object's method
    return inspect.iscoroutinefunction(call)


def _as_async(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """`function` itself when it is async; else a wrapper running it in a worker thread."""
    if not callable(function):
        raise TypeError(f"handler must be callable, not {type(function).__name__}")
    if is_async_callable(function):
        return function

    @functools.wraps(function)
    async def in_thread(*args: Any) -> Any:
        return await asyncio.to_thread(function, *args)

    return in_thread


class ThreadedHandler:
    """A plain ``def handler(request) -> Response`` as an async handler: each
    call runs in a worker thread of the loop's default executor, as `App`
    runs its plain-def routes, so the event loop never blocks on it.

    Other attributes (``startup``, ``shutdown``...) are the wrapped handler's.
    """

    __slots__ = ("handler",)

    def __init__(self, handler: Callable[[Request], Any]) -> None:
        self.handler = handler

    async def __call__(self, request: Request) -> Response:
        result = await asyncio.to_thread(self.handler, request)
        if inspect.isawaitable(result):  # a plain def that hands back a coroutine
            result = await result
        response: Response = result
        return response

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "handler":
            raise AttributeError(name)
        return getattr(self.handler, name)

    def __repr__(self) -> str:
        return f"ThreadedHandler({self.handler!r})"


def as_async_handler(handler: Any) -> Callable[[Request], Awaitable[Response]]:
    """`handler` as ``async (request) -> Response``, for wherever a bare
    handler is accepted (`App.mount`, `aserve.Server`). Call it once, when the
    handler is given, never per request.

    An async handler comes back unchanged. A plain ``def handler(request)``
    comes back as a `ThreadedHandler`. What could never answer a request is
    refused with a one-line `TypeError` that says what to write instead: a
    bare ASGI or WSGI app (by the rules of `aserve.asgi.detect_interface`), an
    ``http.server`` handler class (or a ``functools.partial`` of one), another
    class, a callable that cannot take one argument.
    """
    if not callable(handler):
        raise TypeError(f"a handler must be callable, not {type(handler).__name__}")
    # Checked first: detection knows no such classes, and a partial of one takes
    # ``*args`` so would pass for a plain handler and only fail per request.
    if is_handler_class(handler):
        raise TypeError(_handler_class_advice(handler))
    given: Callable[[Request], Awaitable[Response]] = handler
    try:
        kind = detect_interface(handler)
    except ConfigError as exc:
        if inspect.isclass(handler) or not _takes_one_argument(handler):
            raise TypeError(str(exc)) from None
        kind = "native"  # a shape detection cannot place (``*args``) that takes a request
    if kind == "asgi3" and _takes_one_argument(handler):
        kind = "native"  # ``async def h(*args)``: a wrapper that passes the request on
    if kind == "native":
        return given if is_async_callable(handler) else ThreadedHandler(handler)
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    if kind == "wsgi":
        raise TypeError(
            f"{name} is a WSGI app, not an aserve handler: "
            "give aserve.wsgi.WSGIHandler(app) instead"
        )
    if kind == "asgi2":
        raise TypeError(
            f"{name} is an ASGI 2 app (it takes a scope), not an aserve handler: "
            "give aserve.asgi.wrap(app) instead"
        )
    raise TypeError(
        f"{name} is an ASGI app, not an aserve handler: give aserve.asgi.ASGIHandler(app) instead"
    )


def _handler_class_advice(handler: Any) -> str:
    cls = handler
    while isinstance(cls, functools.partial):
        cls = cls.func
    name = cls.__qualname__
    shown = f"functools.partial({name}, ...)" if cls is not handler else name
    return (
        f"{shown} is an http.server handler class, not an aserve handler: "
        f"give aserve.httpserver.HTTPServerHandler({shown}) instead"
    )


def _takes_one_argument(func: Any) -> bool:
    try:
        inspect.signature(func).bind(None)
    except TypeError:
        return False
    except ValueError:  # no signature to read: take it at its word
        return True
    return True


async def _call_hook(hook: Callable[[], Any]) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result


def _close_form_after(form: FormData, response: Response) -> None:
    """Close a form's uploaded files once `response` no longer needs them."""
    if isinstance(response, StreamingResponse):
        response.body_iterator = _closing(response.body_iterator, form)
    else:
        _close_files(form)  # a response in hand is complete


def _close_files(form: FormData) -> None:
    # Closing a spooled file releases memory or an already-unlinked descriptor:
    # quick enough to do on the loop.
    for _, value in form.multi_items():
        if isinstance(value, UploadFile):
            value.file.close()


async def _closing(iterator: AsyncIterator[Any], form: FormData) -> AsyncIterator[Any]:
    try:
        async for chunk in iterator:
            yield chunk
    finally:
        aclose = getattr(iterator, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
        finally:
            await form.close()
