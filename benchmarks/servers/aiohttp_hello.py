"""aiohttp.web with one GET / route, uvloop event loop, access log off."""

from __future__ import annotations

import asyncio
from typing import Any

import settings
from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, World!")


def run(app: web.Application) -> None:
    """Serve ``app`` on uvloop (when installed), access log off."""
    try:
        import uvloop
    except ImportError:  # uvloop is in benchmarks/requirements.txt
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    options: dict[str, Any] = {}
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        options["keepalive_timeout"] = timeout
    web.run_app(
        app,
        host=settings.HOST,
        port=settings.port(),
        access_log=None,
        print=None,
        loop=loop,
        **options,
    )


def main() -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    run(app)


if __name__ == "__main__":
    main()
