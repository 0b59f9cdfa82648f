"""The files the static benchmarks serve, shared by every static server module.

``root()`` makes (once) a folder in the system temporary directory holding
``4k.bin`` (4 KiB) and ``1m.bin`` (1 MiB) of fixed bytes, and returns its path;
every server serves that same folder, and the load generator asks for
``/4k.bin`` or ``/1m.bin``.
"""

from __future__ import annotations

import os
import tempfile

FILES = {"4k.bin": 4 * 1024, "1m.bin": 1024 * 1024}


def root() -> str:
    folder = os.path.join(tempfile.gettempdir(), "aserve-bench-static")
    os.makedirs(folder, exist_ok=True)
    pattern = bytes(range(256))
    for name, size in FILES.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            with open(path + ".tmp", "wb") as f:
                f.write(pattern * (size // len(pattern)))
            os.replace(path + ".tmp", path)
    return folder
