"""A clock over server-sent events: the server pushes the time every second.

python examples/sse_clock.py           # open http://127.0.0.1:8000/ in a browser
curl -N localhost:8000/clock           # or watch the raw stream
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aserve

app = aserve.App()

PAGE = """<!doctype html>
<title>Clock</title>
<h1 id="now">...</h1>
<script>
  new EventSource("/clock").addEventListener("tick", (e) => {
    document.getElementById("now").textContent = JSON.parse(e.data).time;
  });
</script>
"""


@app.get("/")
async def page(request: aserve.Request) -> aserve.Response:
    return aserve.HTMLResponse(PAGE)


@app.get("/clock")
async def clock(request: aserve.Request) -> aserve.Response:
    try:
        interval = max(0.01, float(request.query.get("interval", "1")))
        count = int(request.query.get("count", "0")) or None  # 0: forever
    except ValueError:
        raise aserve.HTTPException(400, "interval and count must be numbers") from None

    async def ticks() -> AsyncIterator[aserve.ServerSentEvent]:
        n = 0
        while count is None or n < count:
            n += 1
            now = time.strftime("%H:%M:%S")
            yield aserve.ServerSentEvent({"time": now}, event="tick", id=str(n))
            await asyncio.sleep(interval)

    return aserve.EventSourceResponse(ticks(), ping_interval=15)


if __name__ == "__main__":
    aserve.run(app, port=8000)
