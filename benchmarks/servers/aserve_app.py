"""An aserve App with 50 routes, answering JSON on ``GET /``; access log off.

Beside ``aserve_json.py`` (a bare handler with the same reply) it measures what
the App adds per request: routing among 50 routes (exact and patterned). The
route served is registered last, so a router that got slower route by route
would show it. ``starlette_app.py`` is the same app on Starlette.
"""

from __future__ import annotations

from runners import run_aserve

import aserve

app = aserve.App()


async def item(request: aserve.Request) -> aserve.Response:
    return aserve.JSONResponse({"id": request.path_params.get("item_id")})


for i in range(25):
    app.add_route(f"/static/{i}", item, name=f"static_{i}")
    app.add_route(f"/items{i}/{{item_id:int}}", item, ["GET", "POST"], name=f"items_{i}")


@app.get("/")
async def hello(request: aserve.Request) -> aserve.Response:
    return aserve.JSONResponse({"message": "Hello, World!"})


if __name__ == "__main__":
    run_aserve(app)
