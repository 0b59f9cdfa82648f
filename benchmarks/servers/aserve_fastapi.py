"""aserve running the FastAPI app of `fastapi_app.py` through `aserve.asgi.ASGIHandler`.

uvloop (aserve picks it when installed), lifespan on, access log off.
"""

from __future__ import annotations

from typing import Any

import settings
from fastapi_app import app

import aserve
from aserve.asgi import ASGIHandler


def main() -> None:
    options: dict[str, Any] = {}
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        options["keep_alive_timeout"] = timeout
    aserve.run(
        ASGIHandler(app, lifespan="on"),
        host=settings.HOST,
        port=settings.port(),
        access_log=False,
        **options,
    )


if __name__ == "__main__":
    main()
