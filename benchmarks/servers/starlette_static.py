"""Starlette's StaticFiles under uvicorn: ``python starlette_static.py PORT {h11,httptools}``.

Serves the benchmark folder (see static_files.py) mounted at ``/``; uvloop
event loop, one process, access log off, log level warning. h11 by default,
the parser aserve uses.
"""

from __future__ import annotations

import sys
from typing import Any

import settings
import static_files
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles


def main() -> None:
    http = sys.argv[2] if len(sys.argv) > 2 else "h11"
    app = Starlette(routes=[Mount("/", StaticFiles(directory=static_files.root()))])
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
