"""uvicorn serving the raw ASGI app: ``python uvicorn_workers.py PORT h11 N``.

``uvicorn asgi_app:app --http h11 --workers N`` with uvloop, access log off,
log level warning (see runners.py). With N above 1 this process is uvicorn's
supervisor: it binds the socket and starts N worker processes (multiprocessing,
spawned) that share it; with N = 1 uvicorn serves in this process.
"""

from __future__ import annotations

import sys

from runners import run_uvicorn

if __name__ == "__main__":
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    run_uvicorn("asgi_app:app", workers=workers)
