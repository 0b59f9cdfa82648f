"""aserve running the Flask app of `flask_app.py` through `aserve.wsgi.WSGIHandler`.

``python aserve_wsgi_flask.py PORT [THREADS]``: a pool of THREADS worker
threads (default 4) in one process; uvloop, access log off.
"""

from __future__ import annotations

import sys
from typing import Any

import settings
from flask_app import app

import aserve
from aserve.wsgi import WSGIHandler


def main() -> None:
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    options: dict[str, Any] = {}
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        options["keep_alive_timeout"] = timeout
    aserve.run(
        WSGIHandler(app, threads=threads),
        host=settings.HOST,
        port=settings.port(),
        access_log=False,
        **options,
    )


if __name__ == "__main__":
    main()
