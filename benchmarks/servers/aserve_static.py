"""aserve's StaticFiles serving the benchmark folder (see static_files.py), access log off.

``python aserve_static.py PORT``; the same as ``aserve -d FOLDER --port PORT``
without the listing. uvloop when installed; sendfile for the 1 MiB file, one
write with the head for the 4 KiB one.
"""

from __future__ import annotations

from typing import Any

import settings
import static_files

import aserve


def main() -> None:
    options: dict[str, Any] = {}
    timeout = settings.keep_alive_timeout()
    if timeout is not None:
        options["keep_alive_timeout"] = timeout
    handler = aserve.StaticFiles(static_files.root())
    aserve.run(handler, host=settings.HOST, port=settings.port(), access_log=False, **options)


if __name__ == "__main__":
    main()
