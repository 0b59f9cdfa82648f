"""aserve running the Flask app of `flask_app.py` through `aserve.wsgi.WSGIHandler`.

``python aserve_wsgi_flask.py PORT [THREADS]``: a pool of THREADS worker
threads (default 4) in one process; uvloop, access log off.
"""

from __future__ import annotations

import sys

from flask_app import app
from runners import run_aserve

from aserve.wsgi import WSGIHandler

if __name__ == "__main__":
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    run_aserve(WSGIHandler(app, threads=threads))
