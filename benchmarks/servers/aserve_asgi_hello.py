"""aserve running the raw ASGI app of `asgi_app.py` through `aserve.asgi.ASGIHandler`.

The same app uvicorn and hypercorn serve, so the difference is the server.
uvloop (aserve picks it when installed), lifespan on, access log off.
"""

from __future__ import annotations

from asgi_app import app
from runners import run_aserve

from aserve.asgi import ASGIHandler

if __name__ == "__main__":
    run_aserve(ASGIHandler(app, lifespan="on"))
