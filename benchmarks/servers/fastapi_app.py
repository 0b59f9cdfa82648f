"""The FastAPI app shared by the aserve and uvicorn FastAPI runs: one JSON endpoint.

``GET /`` answers ``{"message": "Hello, World!"}`` (application/json) through
FastAPI's routing, dependency resolution and response serialisation.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/")
async def hello() -> dict[str, str]:
    return {"message": "Hello, World!"}
