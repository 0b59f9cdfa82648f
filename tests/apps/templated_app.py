"""An App that renders Jinja2 templates: pages, links made with url_for, error
pages; used by tests/test_templating.py in-process and through the command."""

from __future__ import annotations

from pathlib import Path

import aserve
from aserve.templating import Templates

HERE = Path(__file__).resolve().parent

templates = Templates(
    HERE / "templates",
    context_processors=[lambda request: {"site_name": "The Shop"}],
)

app = aserve.App(debug=False)
app.mount("/static", aserve.StaticFiles(HERE / "templates"), name="static")
app.add_exception_handler(404, templates.error_handler("error.html"))
app.add_exception_handler(405, templates.error_handler("error.html"))
app.add_exception_handler(500, templates.error_handler("error.html"))

ITEMS = {1: {"id": 1, "name": "Lamp", "note": "<script>alert('x')</script> & more"}}


@app.get("/")
async def home(request: aserve.Request) -> aserve.Response:
    return aserve.PlainTextResponse("home")


@app.get("/items/{item_id:int}")
async def item(request: aserve.Request) -> aserve.Response:
    found = ITEMS.get(request.path_params["item_id"])
    if found is None:
        raise aserve.HTTPException(404, "No such item")
    return templates.response("item.html", {"request": request, "item": found})


@app.get("/created")
async def created(request: aserve.Request) -> aserve.Response:
    return templates.response("item.html", {"item": ITEMS[1]}, status=201, request=request)


@app.get("/feed.xml")
async def feed(request: aserve.Request) -> aserve.Response:
    return templates.response("feed.xml", {"request": request, "title": "News & <more>"})


@app.get("/boom")
async def boom(request: aserve.Request) -> aserve.Response:
    raise RuntimeError("secret internals")
