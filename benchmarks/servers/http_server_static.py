"""The standard library's file server, the baseline: ``python http_server_static.py PORT``.

Exactly what ``python -m http.server --bind 127.0.0.1 --directory FOLDER PORT``
runs (FOLDER from static_files.py): a `ThreadingHTTPServer`, one thread per
connection, with `SimpleHTTPRequestHandler`, which speaks HTTP/1.0 and closes
the connection after every response, so each request pays for a new TCP
connection. Request logging (one stderr line per request) is silenced, as the
other servers' access logs are.
"""

from __future__ import annotations

import functools
import http.server
from typing import Any

import settings
import static_files


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    handler = functools.partial(QuietHandler, directory=static_files.root())
    server = http.server.ThreadingHTTPServer((settings.HOST, settings.port()), handler)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
