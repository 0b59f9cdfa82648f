"""The app of ``aserve_app.py`` on Starlette: 50 routes, JSON on ``GET /``.

``app`` is the ASGI application; run as a script,
``python starlette_app.py PORT {h11,httptools}``, it is served by uvicorn (h11
by default, uvloop, one process, access log off; see runners.py), like the
other ASGI peers.
"""

from __future__ import annotations

from runners import run_uvicorn
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


if __name__ == "__main__":
    run_uvicorn(app)
