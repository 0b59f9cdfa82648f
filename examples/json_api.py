"""A small JSON API: a to-do list kept in memory.

python examples/json_api.py            # http://127.0.0.1:8000/todos
curl -X POST localhost:8000/todos -d '{"title": "write docs"}'
"""

from __future__ import annotations

import itertools
from typing import Any

import aserve

app = aserve.App()
todos: dict[int, dict[str, Any]] = {}
ids = itertools.count(1)


@app.get("/todos")
async def list_todos(request: aserve.Request) -> aserve.Response:
    done = request.query.get("done")
    items = list(todos.values())
    if done is not None:
        items = [t for t in items if t["done"] == (done == "true")]
    return aserve.JSONResponse(items)


@app.post("/todos")
async def create_todo(request: aserve.Request) -> aserve.Response:
    data = await request.json()
    if not isinstance(data, dict) or not isinstance(data.get("title"), str):
        raise aserve.HTTPException(422, "A todo needs a string 'title'")
    todo = {"id": next(ids), "title": data["title"], "done": False}
    todos[todo["id"]] = todo
    location = app.url_path_for("get_todo", todo_id=todo["id"])
    return aserve.JSONResponse(todo, status=201, headers={"location": location})


@app.get("/todos/{todo_id:int}")
async def get_todo(request: aserve.Request) -> aserve.Response:
    return aserve.JSONResponse(find(request.path_params["todo_id"]))


@app.patch("/todos/{todo_id:int}")
async def update_todo(request: aserve.Request) -> aserve.Response:
    todo = find(request.path_params["todo_id"])
    data = await request.json()
    if not isinstance(data, dict):
        raise aserve.HTTPException(422, "Expected a JSON object")
    if "done" in data:
        todo["done"] = bool(data["done"])
    if isinstance(data.get("title"), str):
        todo["title"] = data["title"]
    return aserve.JSONResponse(todo)


@app.delete("/todos/{todo_id:int}")
async def delete_todo(request: aserve.Request) -> aserve.Response:
    todos.pop(find(request.path_params["todo_id"])["id"])
    return aserve.Response(status=204)


@app.exception_handler(aserve.HTTPException)
async def json_errors(request: aserve.Request, exc: aserve.HTTPException) -> aserve.Response:
    return aserve.JSONResponse({"error": exc.detail}, status=exc.status, headers=exc.headers)


def find(todo_id: int) -> dict[str, Any]:
    try:
        return todos[todo_id]
    except KeyError:
        raise aserve.HTTPException(404, f"No todo {todo_id}") from None


if __name__ == "__main__":
    aserve.run(app, port=8000)
