"""Starlette's StaticFiles under uvicorn: ``python starlette_static.py PORT {h11,httptools}``.

Serves the benchmark folder (see static_files.py) mounted at ``/``; uvloop
event loop, one process, access log off, log level warning. h11 by default,
the parser aserve uses (see runners.py).
"""

from __future__ import annotations

import static_files
from runners import run_uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

if __name__ == "__main__":
    run_uvicorn(Starlette(routes=[Mount("/", StaticFiles(directory=static_files.root()))]))
