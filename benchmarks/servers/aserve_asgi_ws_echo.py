"""aserve running the raw ASGI WebSocket echo app (asgi_ws_echo.py) through ASGIHandler."""

from __future__ import annotations

from asgi_ws_echo import app
from runners import run_aserve

from aserve.asgi import ASGIHandler

if __name__ == "__main__":
    run_aserve(ASGIHandler(app, lifespan="on"))
