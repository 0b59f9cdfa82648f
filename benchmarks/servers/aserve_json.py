"""aserve serving ``{"message": "Hello, World!"}`` from a plain handler, access log off.

The reference for ``aserve_app.py``: the same JSON reply with no App, so the
difference between the two is what the App (routing among 50 routes) adds.
"""

from __future__ import annotations

from runners import run_aserve

import aserve


async def hello(request: aserve.Request) -> aserve.Response:
    return aserve.JSONResponse({"message": "Hello, World!"})


if __name__ == "__main__":
    run_aserve(hello)
