"""A Starlette app: routes, JSON, a form upload, a streamed body, a background
task, lifespan state, and a `BaseHTTPMiddleware` (which runs the app behind it
in an anyio task group) in front of it all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

#: What the lifespan and the background tasks did, for the tests to look at.
events: list[str] = []
#: Set by a test to hold a background task until it says so.
release: asyncio.Event | None = None
#: Set by the streaming route when the client went away mid-stream.
stream_closed: asyncio.Event | None = None


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    events.append("startup")
    yield {"greeting": "hello from lifespan"}
    events.append("shutdown")


async def home(request: Request) -> Response:
    return PlainTextResponse("Hello from Starlette")


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["item_id"], "q": request.query_params.get("q")})


async def upload(request: Request) -> Response:
    async with request.form() as form:
        upload = form["file"]
        assert not isinstance(upload, str)
        data = await upload.read()
        return JSONResponse({"name": form["name"], "filename": upload.filename, "size": len(data)})


async def echo(request: Request) -> Response:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"size": size})


async def stream(request: Request) -> Response:
    count = int(request.query_params.get("count", "5"))

    async def numbers() -> AsyncIterator[str]:
        try:
            for i in range(count):
                yield f"line {i}\n"
                await asyncio.sleep(0)
        finally:
            if stream_closed is not None:
                stream_closed.set()

    return StreamingResponse(numbers(), media_type="text/plain")


async def background(request: Request) -> Response:
    async def work() -> None:
        if release is not None:
            await release.wait()
        events.append("background done")

    return PlainTextResponse("accepted", background=BackgroundTask(work))


async def state(request: Request) -> Response:
    return PlainTextResponse(request.state.greeting)


async def file(request: Request) -> Response:
    return FileResponse(request.query_params["path"], media_type="application/octet-stream")


async def fail(request: Request) -> Response:
    raise RuntimeError("the view failed")


class AddHeader(BaseHTTPMiddleware):
    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers["x-middleware"] = "yes"
        return response


app = Starlette(
    routes=[
        Route("/", home),
        Route("/items/{item_id:int}", item),
        Route("/upload", upload, methods=["POST"]),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/background", background),
        Route("/state", state),
        Route("/file", file),
        Route("/fail", fail),
    ],
    middleware=[Middleware(AddHeader)],
    lifespan=lifespan,
)
