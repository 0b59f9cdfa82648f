"""waitress serving the Flask app: one process, ``THREADS`` threads (default 4).

``python waitress_flask.py PORT [THREADS]``; access log off (waitress has none).
"""

from __future__ import annotations

import sys
from typing import Any

import settings
import waitress
from flask_app import app


def main() -> None:
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    options: dict[str, Any] = {}
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        options["channel_timeout"] = int(timeout)
    waitress.serve(
        app,
        host=settings.HOST,
        port=settings.port(),
        threads=threads,
        backlog=2048,
        connection_limit=4096,
        _quiet=True,
        **options,
    )


if __name__ == "__main__":
    main()
