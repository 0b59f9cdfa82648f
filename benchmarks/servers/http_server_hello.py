"""The standard library's HTTP server answering ``Hello, World!``: ``http_server_hello.py PORT``.

``python -m http.server`` serves files, not a fixed reply, so this is the
same machinery it runs (``ThreadingHTTPServer``, a thread per connection,
``BaseHTTPRequestHandler`` speaking HTTP/1.0: one request per connection)
with a ``do_GET`` that answers ``Hello, World!`` as text/plain. Request
logging is silenced, as the other servers' access logs are.
"""

from __future__ import annotations

import http.server
from typing import Any

import settings

BODY = b"Hello, World!"


class HelloHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    server = http.server.ThreadingHTTPServer((settings.HOST, settings.port()), HelloHandler)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
