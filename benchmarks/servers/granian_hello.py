"""granian (a Rust HTTP server) running the raw ASGI app: ``python granian_hello.py PORT``.

One worker process, HTTP/1 only, no WebSockets, uvloop, its own logging at
warning and no access log; otherwise granian's defaults (one Rust runtime
thread). granian always serves from a worker process it spawns, so the
measured process tree is this process (its supervisor) and that worker.

granian's ``backpressure`` (requests handled at once per worker, the listen
backlog, 1,024, by default) also bounds the connections it keeps: past it,
idle keep-alive connections are closed. ``$MAX_CONNECTIONS`` (set by the
10,000-connection cases, see settings.py) raises it to that many.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import settings
from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops
from granian.log import LogLevels


def main(target: str = "asgi_app:app") -> None:
    options: dict[str, Any] = {}
    max_connections = settings.max_connections()
    if max_connections is not None:
        options["backpressure"] = max_connections
    Granian(
        target,
        address=settings.HOST,
        port=settings.port(),
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        log_level=LogLevels.warning,
        log_access=False,
        working_dir=Path(__file__).resolve().parent,
        **options,
    ).serve()


if __name__ == "__main__":
    main()
