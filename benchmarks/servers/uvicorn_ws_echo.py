"""uvicorn running the raw ASGI WebSocket echo app:
``python uvicorn_ws_echo.py PORT {wsproto,websockets}`` (uvicorn's --ws)."""

from __future__ import annotations

from asgi_ws_echo import app
from runners import run_uvicorn_ws

if __name__ == "__main__":
    run_uvicorn_ws(app)
