"""aserve running the FastAPI app of `fastapi_app.py` through `aserve.asgi.ASGIHandler`.

uvloop (aserve picks it when installed), lifespan on, access log off.
"""

from __future__ import annotations

from fastapi_app import app
from runners import run_aserve

from aserve.asgi import ASGIHandler

if __name__ == "__main__":
    run_aserve(ASGIHandler(app, lifespan="on"))
