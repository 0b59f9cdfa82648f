"""The app of ``aserve_app.py`` on Starlette: 50 routes, JSON on ``GET /``.

``app`` is the ASGI application; run as a script it is served by uvicorn
(h11, uvloop, one process, access log off), like the other ASGI peers.
"""

from __future__ import annotations

import sys
from typing import Any

import settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params.get("item_id")})


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"message": "Hello, World!"})


routes = []
for i in range(25):
    routes.append(Route(f"/static/{i}", item, name=f"static_{i}"))
    routes.append(
        Route(f"/items{i}/{{item_id:int}}", item, methods=["GET", "POST"], name=f"items_{i}")
    )
routes.append(Route("/", hello))

app = Starlette(routes=routes)


def main() -> None:
    import uvicorn

    http = sys.argv[2] if len(sys.argv) > 2 else "h11"
    options: dict[str, Any] = {}
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        options["timeout_keep_alive"] = int(timeout)
    uvicorn.run(
        app,
        host=settings.HOST,
        port=settings.port(),
        http=http,
        loop="uvloop",
        access_log=False,
        log_level="warning",
        **options,
    )


if __name__ == "__main__":
    main()
