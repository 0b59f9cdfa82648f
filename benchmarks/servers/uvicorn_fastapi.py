"""uvicorn running the FastAPI app: ``python uvicorn_fastapi.py PORT {h11,httptools}``.

uvloop event loop, one process, access log off, log level warning.
"""

from __future__ import annotations

import sys
from typing import Any

import settings
import uvicorn
from fastapi_app import app


def main() -> None:
    http = sys.argv[2] if len(sys.argv) > 2 else "h11"
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
