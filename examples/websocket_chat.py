"""A chat room over WebSockets: what one member says, every member sees.

python examples/websocket_chat.py      # open http://127.0.0.1:8000/ in two browser tabs

Each member is one WebSocket (``/chat?name=ann``); joins and departures are
announced, a message is JSON ``{"from": ..., "text": ...}``. A member whose
socket is too slow to take a message is dropped rather than let it hold up
the room (its send waits for the socket: that is the backpressure).
"""

from __future__ import annotations

import asyncio
import json

import aserve

app = aserve.App()
members: dict[str, aserve.WebSocket] = {}

PAGE = """<!doctype html>
<title>Chat</title>
<ul id="log"></ul>
<form id="say"><input id="text" autocomplete="off" autofocus><button>Send</button></form>
<script>
  const name = prompt("Your name?") || "guest";
  const ws = new WebSocket(`ws://${location.host}/chat?name=${encodeURIComponent(name)}`);
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    const item = document.createElement("li");
    item.textContent = `${message.from}: ${message.text}`;
    document.getElementById("log").appendChild(item);
  };
  document.getElementById("say").onsubmit = (event) => {
    event.preventDefault();
    const input = document.getElementById("text");
    ws.send(input.value);
    input.value = "";
  };
</script>
"""


@app.get("/")
async def page(request: aserve.Request) -> aserve.Response:
    return aserve.HTMLResponse(PAGE)


async def broadcast(sender: str, text: str) -> None:
    message = json.dumps({"from": sender, "text": text})

    async def deliver(name: str, ws: aserve.WebSocket) -> None:
        try:
            async with asyncio.timeout(5):
                await ws.send_text(message)
        except (aserve.WebSocketDisconnect, TimeoutError):
            members.pop(name, None)

    await asyncio.gather(*(deliver(name, ws) for name, ws in list(members.items())))


@app.websocket("/chat")
async def chat(ws: aserve.WebSocket) -> None:
    name = ws.query_params.get("name", "").strip()[:32]
    if not name or name in members:
        await ws.close()  # before accept: the client gets 403
        return
    await ws.accept()
    members[name] = ws
    try:
        await broadcast("room", f"{name} joined")
        async for text in ws.iter_text():
            await broadcast(name, text[:1000])
    finally:
        members.pop(name, None)
        await broadcast("room", f"{name} left")


if __name__ == "__main__":
    aserve.run(app, port=8000)
