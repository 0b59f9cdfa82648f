"""The Flask app shared by the WSGI runs: ``GET /`` answers ``Hello, World!`` as text/plain."""

from __future__ import annotations

from flask import Flask, Response

app = Flask(__name__)


@app.get("/")
def hello() -> Response:
    return Response("Hello, World!", mimetype="text/plain")
