"""uvicorn running the raw ASGI app: ``python uvicorn_hello.py PORT {h11,httptools}``.

uvloop event loop, one process, access log off, log level warning (see runners.py).
"""

from __future__ import annotations

from asgi_app import app
from runners import run_uvicorn

if __name__ == "__main__":
    run_uvicorn(app)
