"""How the server modules run aserve and uvicorn, so each module only builds its app.

Both listen on ``settings.HOST`` and ``settings.port()``, log no requests
(unless ``--access-log`` is among the arguments: then each writes its own
access lines to its output, the ``accesslog`` group), and
take ``KEEP_ALIVE_TIMEOUT`` from the environment when it is set, and serve HTTPS
when ``SSL_CERTFILE`` and ``SSL_KEYFILE`` are (see settings.py). uvloop is the
event loop for both (aserve picks it when it is installed; it is in
benchmarks/requirements.txt).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import settings


def run_aserve(handler: Any, **overrides: Any) -> None:
    """``aserve.run(handler)``: a native handler, an App, or an ASGI/WSGI adapter,
    with ``overrides`` (Config fields) on top of what the environment sets."""
    import aserve

    options: dict[str, Any] = {}
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        options["keep_alive_timeout"] = timeout
    tls = settings.tls_files()
    if tls is not None:
        options["ssl_certfile"], options["ssl_keyfile"] = tls
    if "--metrics" in sys.argv[2:]:
        options["metrics_path"] = "/metrics"
    max_connections = settings.max_connections()
    if max_connections is not None:
        options["max_connections"] = max_connections
    max_concurrency = settings.max_concurrency()
    if max_concurrency is not None:
        options["max_concurrency"] = max_concurrency
    options.update(overrides)
    access_log = settings.access_log()
    if access_log:
        # One line per request to the server's output, as uvicorn writes its own.
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    aserve.run(handler, host=settings.HOST, port=settings.port(), access_log=access_log, **options)


def run_uvicorn(app: Any, workers: int = 1) -> None:
    """uvicorn serving an ASGI app, on the parser named by ``argv[2]``.

    ``python MODULE.py PORT {h11,httptools}`` (h11 when not given, the parser
    aserve uses); uvloop event loop, access log off, log level warning. One
    worker serves in this process; more are uvicorn's own worker processes,
    which import ``app`` (then a ``"module:attribute"`` string) from this folder.
    With TLS, uvicorn hands its SSLContext to the loop: uvloop's TLS.
    """
    import uvicorn

    http = sys.argv[2] if len(sys.argv) > 2 and not sys.argv[2].startswith("-") else "h11"
    access_log = settings.access_log()
    options: dict[str, Any] = {}
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        options["timeout_keep_alive"] = int(timeout)
    tls = settings.tls_files()
    if tls is not None:
        options["ssl_certfile"], options["ssl_keyfile"] = tls
    if workers > 1:
        options.update(workers=workers, app_dir=os.path.dirname(os.path.abspath(__file__)))
    uvicorn.run(
        app,
        host=settings.HOST,
        port=settings.port(),
        http=http,
        loop="uvloop",
        access_log=access_log,
        # uvicorn writes its access lines at INFO: "warning" would drop them.
        log_level="info" if access_log else "warning",
        **options,
    )


def run_uvicorn_ws(app: Any) -> None:
    """uvicorn serving WebSockets with the implementation named by ``argv[2]``
    (``--ws``: ``wsproto`` or ``websockets``), h11 for the handshake, uvloop,
    access log off, log level warning; every WebSocket setting at uvicorn's
    default, as aserve's are at theirs (16 MiB, 32 messages, pings every 20 s,
    permessage-deflate offered: the load client asks for none)."""
    import uvicorn

    ws = sys.argv[2] if len(sys.argv) > 2 else "wsproto"
    uvicorn.run(
        app,
        host=settings.HOST,
        port=settings.port(),
        http="h11",
        ws=ws,
        loop="uvloop",
        access_log=False,
        log_level="warning",
    )
