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

Cost on the hot path, measured against a bare handler: an exact path is two
dict lookups (path, then method) and one await; no task, no per-request
closure. With no middleware the chain *is* `_route`. Patterned paths add one
regex match (see `aserve.routing`). Everything else -- 404, 405, OPTIONS,
mounts, error handlers -- is off that path.

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

from .datastructures import State
from .errors import ClientDisconnected, HTTPException
from .forms import FormData, UploadFile
from .request import Request
from .response import PlainTextResponse, Response, StreamingResponse
from .routing import FOUND, MOUNTED, NOT_ALLOWED, Mount, NoMatchFound, Route, Router

__all__ = ["App", "Mount", "NoMatchFound", "Route"]

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

    def mount(self, prefix: str, handler: Any, *, name: str | None = None) -> None:
        """Serve every path under `prefix` with `handler` (an App, StaticFiles...).

        Routes are tried first; then mounts, longest prefix first. The handler
        sees the same request with `root_path` extended by `prefix`; it routes
        on `request.route_path`. Its `startup`/`shutdown`, if any, run with
        this app's. ``url_path_for("name:route")`` reaches into a named mount.
        """
        if not callable(handler):
            raise TypeError(f"mounted handler must be callable, not {type(handler).__name__}")
        self.router.mount(Mount(prefix, handler, name=name))

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
            request.root_path = root + target.prefix
            try:
                mounted: Response = await target.handler(request)
                return mounted
            finally:
                request.root_path = root
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
        return PlainTextResponse(detail, status=500)

    def __repr__(self) -> str:
        return f"<App with {len(self.router.routes)} routes>"


def http_error_response(exc: HTTPException) -> Response:
    """The plain-text answer to an `HTTPException`, as the engine would give it."""
    status = exc.status
    body = exc.detail if exc.detail.endswith("\n") else exc.detail + "\n"
    if status < 200 or status in (204, 304):
        body = ""
    return PlainTextResponse(body, status=status, headers=exc.headers)


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
