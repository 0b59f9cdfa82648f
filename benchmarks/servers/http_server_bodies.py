"""``python -m http.server`` serving the download of the ``bodies`` group.

What ``python -m http.server --bind 127.0.0.1 --directory FOLDER PORT`` runs
(``ThreadingHTTPServer`` and ``SimpleHTTPRequestHandler``, which copies a file
to the socket 64 KiB at a time), on a folder holding one file, ``download``,
of ``scenario.body_size()`` bytes, written once into the temporary directory.
It answers ``GET /`` with that folder's listing (the check that it is up) and
has no upload: ``SimpleHTTPRequestHandler`` answers POST with 501.
"""

from __future__ import annotations

import functools
import http.server
import os
import tempfile
from typing import Any

import scenario
import settings


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def folder() -> str:
    """A folder with ``download``, ``body_size()`` bytes of the chunks the others stream."""
    size = scenario.body_size()
    path = os.path.join(tempfile.gettempdir(), f"aserve-bench-bodies-{size}")
    os.makedirs(path, exist_ok=True)
    target = os.path.join(path, "download")
    if not os.path.exists(target) or os.path.getsize(target) != size:
        with open(target + ".tmp", "wb") as f:
            for chunk in scenario.chunks(size):
                f.write(chunk)
        os.replace(target + ".tmp", target)
    return path


def main() -> None:
    handler = functools.partial(QuietHandler, directory=folder())
    server = http.server.ThreadingHTTPServer((settings.HOST, settings.port()), handler)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
