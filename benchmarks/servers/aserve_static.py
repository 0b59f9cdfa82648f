"""aserve's StaticFiles serving the benchmark folder (see static_files.py), access log off.

``python aserve_static.py PORT``; the same as ``aserve -d FOLDER --port PORT``
without the listing. uvloop when installed; sendfile for the 1 MiB file, one
write with the head for the 4 KiB one.
"""

from __future__ import annotations

import static_files
from runners import run_aserve

import aserve

if __name__ == "__main__":
    run_aserve(aserve.StaticFiles(static_files.root()))
