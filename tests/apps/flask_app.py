"""A Flask app: a page, JSON, a form upload, a streamed body, an error and a 404."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)

#: Set to True by the streaming view's generator when it is closed.
closed: list[bool] = []


@app.get("/")
def home() -> str:
    return "Hello from Flask"


@app.get("/items/<int:item_id>")
def item(item_id: int) -> Any:
    return jsonify(id=item_id, q=request.args.get("q"))


@app.post("/upload")
def upload() -> Any:
    upload = request.files["file"]
    data = upload.read()
    return jsonify(name=request.form["name"], filename=upload.filename, size=len(data))


@app.post("/echo")
def echo() -> Any:
    size = 0
    while chunk := request.stream.read(65536):
        size += len(chunk)
    return jsonify(size=size)


@app.get("/stream")
def stream() -> Response:
    count = request.args.get("count", 5, type=int)

    def lines() -> Iterator[str]:
        try:
            for i in range(count):
                yield f"line {i}\n"
        finally:
            closed.append(True)

    return Response(stream_with_context(lines()), mimetype="text/plain")


@app.get("/fail")
def fail() -> str:
    raise RuntimeError("the Flask view failed")


@app.get("/environ")
def environ() -> Any:
    keys = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT")
    return jsonify({key: request.environ.get(key) for key in keys})
