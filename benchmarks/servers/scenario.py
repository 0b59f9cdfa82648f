"""What the scenario endpoints do, shared by every server module that serves them.

Each scenario server (``*_scenarios.py``, and ``asgi_scenarios.py`` for the
ASGI servers) answers the same paths with the same work, so that only the
server differs:

- ``GET /``: ``Hello, World!`` (text/plain), the check that the server is up.
- ``GET /io``: waits ``IO_WAIT_S`` (10 ms) with ``asyncio.sleep``, simulated
  I/O (a database, another service), then ``Hello, World!``.
- ``GET /work``: the same wait, then about a millisecond of pure-Python CPU
  work (``burn()``), then ``Hello, World!``: a handler whose requests are
  worth refusing when the server cannot keep up (the ``overload`` group).
- ``GET /download``: ``body_size()`` bytes (256 MiB unless ``$BODY_SIZE``
  says otherwise) of ``application/octet-stream`` with a Content-Length,
  produced ``CHUNK`` (64 KiB) at a time by a generator, never held whole.
- ``POST /upload``: reads the body as it arrives, chunk by chunk, keeping
  only a count; answers that count as text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

HELLO = b"Hello, World!"
IO_WAIT_S = 0.010
CHUNK_SIZE = 64 * 1024
#: One chunk of the download, the same object every time.
CHUNK = bytes(range(256)) * (CHUNK_SIZE // 256)
DEFAULT_BODY_SIZE = 256 * 1024 * 1024
#: Iterations of ``burn()``: about 1 ms on the development VM (CPython 3.11, 2.3 ms
#: for 40,000 when measured; its speed drifts by 30-50%).
WORK_LOOPS = 20_000


def body_size() -> int:
    """Bytes of the download: $BODY_SIZE, else 256 MiB."""
    return int(os.environ.get("BODY_SIZE") or DEFAULT_BODY_SIZE)


def chunks(size: int) -> Iterator[bytes]:
    """``size`` bytes as CHUNK-sized pieces (the last one shorter)."""
    full, rest = divmod(size, CHUNK_SIZE)
    for _ in range(full):
        yield CHUNK
    if rest:
        yield CHUNK[:rest]


def burn() -> int:
    """About a millisecond of CPU in the interpreter, holding the event loop."""
    total = 0
    for i in range(WORK_LOOPS):
        total += i
    return total
