"""A FastAPI app: path and query parameters, a JSON body checked by pydantic,
a form upload, a streamed body, a background task and lifespan state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import BackgroundTasks, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

events: list[str] = []
release: asyncio.Event | None = None


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    events.append("startup")
    yield {"db": {"answer": 42}}
    events.append("shutdown")


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/")
async def home() -> dict[str, str]:
    return {"message": "Hello from FastAPI"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item) -> dict[str, Any]:
    return {"created": item.model_dump(), "total": item.price * 2}


@app.post("/upload")
async def upload(
    name: Annotated[str, Form()], file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    data = await file.read()
    return {"name": name, "filename": file.filename, "size": len(data)}


@app.get("/stream")
async def stream(count: int = 5) -> StreamingResponse:
    async def numbers() -> AsyncIterator[bytes]:
        for i in range(count):
            yield b"chunk %d\n" % i

    return StreamingResponse(numbers(), media_type="text/plain")


@app.post("/background")
async def background(tasks: BackgroundTasks) -> dict[str, str]:
    async def work() -> None:
        if release is not None:
            await release.wait()
        events.append("background done")

    tasks.add_task(work)
    return {"status": "accepted"}


@app.get("/state")
async def state(request: Request) -> dict[str, Any]:
    return {"answer": request.state.db["answer"]}


@app.get("/sync")
def sync_view() -> dict[str, str]:
    # FastAPI runs plain functions in its thread pool.
    return {"sync": "ok"}
