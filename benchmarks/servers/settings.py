"""Command-line settings shared by the server modules.

Every server module is started as ``python servers/NAME.py PORT``; the port may
also come from the ``PORT`` environment variable. ``KEEP_ALIVE_TIMEOUT``
(seconds), when set, overrides the server's idle keep-alive timeout: the memory
benchmark sets it so that idle connections stay open while it measures.
``SSL_CERTFILE`` and ``SSL_KEYFILE`` (PEM files), when set, make the server
serve HTTPS with that certificate: run.py sets them for the ``tls`` group.
``MAX_CONNECTIONS``, when set, is aserve's ``max_connections`` and granian's
``backpressure`` (the ``scale`` and ``idle-memory`` groups hold 10,000
connections: aserve's default limit, and ten times the connections granian
keeps by default, so they raise both); ``--max-concurrency=N`` among the
arguments is aserve's ``max_concurrency`` (the ``overload`` group).
"""

from __future__ import annotations

import os
import sys

HOST = "127.0.0.1"


def port() -> int:
    """The port to listen on: first argument, else $PORT, else 8000."""
    if len(sys.argv) > 1:
        return int(sys.argv[1])
    return int(os.environ.get("PORT", "8000"))


def keep_alive_timeout() -> float | None:
    """$KEEP_ALIVE_TIMEOUT in seconds, or None to keep the server's default."""
    value = os.environ.get("KEEP_ALIVE_TIMEOUT")
    return float(value) if value else None


def tls_files() -> tuple[str, str] | None:
    """($SSL_CERTFILE, $SSL_KEYFILE) to serve HTTPS with, or None for plain HTTP."""
    certfile = os.environ.get("SSL_CERTFILE")
    keyfile = os.environ.get("SSL_KEYFILE")
    if not certfile:
        return None
    if not keyfile:
        raise SystemExit("SSL_CERTFILE is set but SSL_KEYFILE is not")
    return certfile, keyfile


def access_log() -> bool:
    """Whether ``--access-log`` is among the arguments (the ``accesslog`` group)."""
    return "--access-log" in sys.argv[2:]


def max_connections() -> int | None:
    """$MAX_CONNECTIONS, or None to keep the server's default."""
    value = os.environ.get("MAX_CONNECTIONS")
    return int(value) if value else None


def max_concurrency() -> int | None:
    """N from ``--max-concurrency=N`` among the arguments, or None."""
    for arg in sys.argv[2:]:
        if arg.startswith("--max-concurrency="):
            return int(arg.partition("=")[2])
    return None
