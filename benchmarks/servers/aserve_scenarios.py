"""aserve serving the scenario endpoints (see scenario.py) from one native handler.

``python aserve_scenarios.py PORT [--max-concurrency=N]``: access log off, no
limit on the request body (the 256 MiB uploads), otherwise aserve's defaults
(see runners.py for what the arguments and environment change).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import scenario
from runners import run_aserve

import aserve

SIZE = scenario.body_size()
DOWNLOAD_HEADERS = {"content-length": str(SIZE)}


async def _download() -> AsyncIterator[bytes]:
    for chunk in scenario.chunks(SIZE):
        yield chunk


async def handler(request: aserve.Request) -> aserve.Response:
    path = request.path
    if path == "/io":
        await asyncio.sleep(scenario.IO_WAIT_S)
    elif path == "/work":
        await asyncio.sleep(scenario.IO_WAIT_S)
        scenario.burn()
    elif path == "/download":
        return aserve.StreamingResponse(
            _download(), headers=DOWNLOAD_HEADERS, media_type="application/octet-stream"
        )
    elif path == "/upload":
        count = 0
        async for chunk in request.stream():
            count += len(chunk)
        return aserve.PlainTextResponse(str(count))
    return aserve.PlainTextResponse("Hello, World!")


if __name__ == "__main__":
    run_aserve(handler, max_body_size=None)
