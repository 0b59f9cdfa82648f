"""aiohttp.web serving the scenario endpoints (see scenario.py), uvloop, access log off."""

from __future__ import annotations

import asyncio

import scenario
from aiohttp import web
from aiohttp_hello import run

SIZE = scenario.body_size()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, World!")


async def io(request: web.Request) -> web.Response:
    await asyncio.sleep(scenario.IO_WAIT_S)
    return web.Response(text="Hello, World!")


async def work(request: web.Request) -> web.Response:
    await asyncio.sleep(scenario.IO_WAIT_S)
    scenario.burn()
    return web.Response(text="Hello, World!")


async def download(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = SIZE
    await response.prepare(request)
    for chunk in scenario.chunks(SIZE):
        await response.write(chunk)
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    count = 0
    async for chunk in request.content.iter_any():
        count += len(chunk)
    return web.Response(text=str(count))


def main() -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/io", io)
    app.router.add_get("/work", work)
    app.router.add_get("/download", download)
    app.router.add_post("/upload", upload)
    run(app)


if __name__ == "__main__":
    main()
