"""aserve echoing WebSocket messages on /ws with its native API (``App.websocket``)."""

from __future__ import annotations

from runners import run_aserve

import aserve

app = aserve.App()


@app.websocket("/ws")
async def echo(ws: aserve.WebSocket) -> None:
    await ws.accept()
    async for message in ws:
        await ws.send(message)


if __name__ == "__main__":
    run_aserve(app)
