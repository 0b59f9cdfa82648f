"""uvicorn serving the scenario endpoints: ``python uvicorn_scenarios.py PORT {h11,httptools}``.

The raw ASGI app of asgi_scenarios.py; uvloop, one process, access log off,
log level warning (see runners.py).
"""

from __future__ import annotations

from asgi_scenarios import app
from runners import run_uvicorn

if __name__ == "__main__":
    run_uvicorn(app)
