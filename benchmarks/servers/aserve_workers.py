"""The aserve command serving the hello handler: ``python aserve_workers.py PORT N [OPTION...]``.

Exactly ``aserve aserve_hello:hello --app-dir SERVERS --host 127.0.0.1 --port
PORT --workers N --log-level warning OPTION...`` (access log off by default),
run in this process. With N above 1 this process is the supervisor: it binds
the socket and forks N workers that inherit it, one accept queue shared by all
(with ``--reuse-port``: a socket per worker, the kernel spreading connections
over them), and each worker imports the handler itself. With N = 1 the command
serves in this process, as ``aserve.run()`` does.
"""

from __future__ import annotations

import os
import sys

import settings

from aserve.cli import main

if __name__ == "__main__":
    workers = sys.argv[2] if len(sys.argv) > 2 else "1"
    argv = [
        "aserve_hello:hello",
        "--app-dir",
        os.path.dirname(os.path.abspath(__file__)),
        "--host",
        settings.HOST,
        "--port",
        str(settings.port()),
        "--workers",
        workers,
        "--log-level",
        "warning",
        *sys.argv[3:],
    ]
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        argv += ["--keep-alive-timeout", str(timeout)]
    sys.exit(main(argv))
