"""aserve serving ``Hello, World!`` as text/plain on GET /, access log off."""

from __future__ import annotations

from runners import run_aserve

import aserve


async def hello(request: aserve.Request) -> aserve.Response:
    return aserve.PlainTextResponse("Hello, World!")


if __name__ == "__main__":
    run_aserve(hello)
