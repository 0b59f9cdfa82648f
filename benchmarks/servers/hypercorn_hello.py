"""hypercorn running the raw ASGI app in this process (no worker subprocess).

uvloop worker class when uvloop is installed, else asyncio; access log off.
HTTPS with $SSL_CERTFILE and $SSL_KEYFILE when they are set (the loop's TLS).
"""

from __future__ import annotations

import importlib.util

import settings
from hypercorn.config import Config
from hypercorn.run import run


def main(application_path: str = "asgi_app:app") -> None:
    config = Config()
    config.application_path = application_path
    config.bind = [f"{settings.HOST}:{settings.port()}"]
    config.workers = 0  # serve in this process, so its PID is the one measured
    config.worker_class = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    config.accesslog = None
    config.errorlog = None
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        config.keep_alive_timeout = timeout
    tls = settings.tls_files()
    if tls is not None:
        config.certfile, config.keyfile = tls
    run(config)


if __name__ == "__main__":
    main()
