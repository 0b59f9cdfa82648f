"""uvicorn running the FastAPI app: ``python uvicorn_fastapi.py PORT {h11,httptools}``.

uvloop event loop, one process, access log off, log level warning (see runners.py).
"""

from __future__ import annotations

from fastapi_app import app
from runners import run_uvicorn

if __name__ == "__main__":
    run_uvicorn(app)
