"""The apps in examples/ start and do what their docstrings say."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from websockets.exceptions import InvalidStatus

import aserve
from aserve.testing import TestClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_json_api() -> None:
    module = load("json_api")
    async with TestClient(module.app) as client:
        created = await client.post("/todos", json={"title": "write docs"})
        assert created.status_code == 201
        todo = created.json()
        assert created.headers["location"] == f"/todos/{todo['id']}"
        assert (await client.get(f"/todos/{todo['id']}")).json()["title"] == "write docs"
        patched = await client.patch(f"/todos/{todo['id']}", json={"done": True})
        assert patched.json()["done"] is True
        assert len((await client.get("/todos?done=true")).json()) == 1
        assert (await client.get("/todos?done=false")).json() == []
        bad = await client.post("/todos", json={"title": 5})
        assert (bad.status_code, bad.json()) == (422, {"error": "A todo needs a string 'title'"})
        malformed = await client.post("/todos", content=b"{oops")
        assert malformed.status_code == 400
        assert "Malformed JSON" in malformed.json()["error"]
        assert (await client.delete(f"/todos/{todo['id']}")).status_code == 204
        missing = await client.get(f"/todos/{todo['id']}")
        assert (missing.status_code, missing.json()) == (404, {"error": f"No todo {todo['id']}"})


async def test_upload_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load("upload_form")
    monkeypatch.setattr(module, "UPLOAD_DIR", tmp_path)
    async with TestClient(module.app) as client:
        page = await client.get("/")
        assert 'enctype="multipart/form-data"' in page.text
        response = await client.post(
            "/upload",
            data={"note": "<b>hi</b>"},
            files=[
                ("files", ("../../etc/passwd", b"not really", "text/plain")),
                ("files", ("photo.jpg", b"\xff\xd8" * 100_000, "image/jpeg")),
            ],
        )
    assert response.status_code == 201
    assert "&lt;b&gt;hi&lt;/b&gt;" in response.text
    assert "passwd: 10 bytes" in response.text
    assert (tmp_path / "passwd").read_bytes() == b"not really"
    assert (tmp_path / "photo.jpg").stat().st_size == 200_000


async def test_sse_clock() -> None:
    module = load("sse_clock")
    async with TestClient(module.app) as client:
        async with client.stream("GET", "/clock?interval=0.01&count=3") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        bad = await client.get("/clock?interval=soon")
    events = body.decode().strip().split("\n\n")
    assert len(events) == 3
    assert events[0].startswith('event: tick\nid: 1\ndata: {"time":')
    assert bad.status_code == 400


async def test_websocket_chat() -> None:
    module = load("websocket_chat")
    async with TestClient(module.app) as client:
        async with client.websocket_connect("/chat?name=ann") as ann:
            assert json.loads(await ann.recv()) == {"from": "room", "text": "ann joined"}
            async with client.websocket_connect("/chat?name=bob") as bob:
                assert json.loads(await bob.recv())["text"] == "bob joined"
                assert json.loads(await ann.recv())["text"] == "bob joined"
                await ann.send("hello bob")
                for member in (ann, bob):
                    assert json.loads(await member.recv()) == {"from": "ann", "text": "hello bob"}
                with pytest.raises(InvalidStatus):  # a name already in the room: 403
                    async with client.websocket_connect("/chat?name=bob"):
                        pass
            assert json.loads(await ann.recv()) == {"from": "room", "text": "bob left"}
        page = await client.get("/")
        assert "new WebSocket" in page.text


def test_examples_export_an_app() -> None:
    for path in sorted(EXAMPLES.glob("*.py")):
        assert isinstance(load(path.stem).app, aserve.App), path
