"""The Lua script run.py hands wrk (``-s``): latency percentiles, and pipelining.

wrk prints its latency distribution at 50/75/90/99% only and its socket
errors in one line. The script's ``done()`` hook writes one more line,
``wrk-report {...}``, a JSON object with the percentiles up to 99.9% and the
error counts by kind, all from wrk's own histogram (microseconds), which
``parse_report`` reads back.

With a pipeline depth above 1 the script also defines ``request()``, which
returns ``depth`` requests as one buffer. wrk then writes them together on a
connection and waits for all their responses before sending the next batch
(it counts the requests in the buffer once, at start-up, with its HTTP
parser). Every response counts as a request in its totals. Its latency
figures are wrong then: it records one latency per batch, and its correction
for coordinated omission, which assumes one request per sample, puts the
samples it adds below the histogram's minimum, where its percentile code never
looks (run.py reports no latency for pipelined runs). The requests are built
here, in Python, with the Host and the case's headers written out, because
wrk adds nothing to a buffer that a script returns.

Lua's long strings would turn each CR LF into a bare LF, so the requests go
into an ordinary quoted string with every byte that is not printable ASCII
escaped (``lua_string``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

REPORT_PREFIX = "wrk-report "

#: Percentiles read from wrk's histogram, as (JSON key, percentile).
PERCENTILES = (("p50_us", 50.0), ("p90_us", 90.0), ("p99_us", 99.0), ("p999_us", 99.9))

_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "%s{\\"requests\\": %d, \\"duration_us\\": %d, \\"bytes\\": %d, "
    .. "\\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, \\"status\\": %d, \\"timeout\\": %d, "
    .. "PERCENTILES\\"max_us\\": %d, \\"mean_us\\": %.1f}\\n",
    "REPORT_PREFIX", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    PERCENTILE_CALLSlatency.max, latency.mean))
end
"""


def request_bytes(
    path: str, host: str, headers: Iterable[tuple[str, str]] = (), method: str = "GET"
) -> bytes:
    """One HTTP/1.1 request without a body, as wrk would write it."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def lua_string(data: bytes) -> str:
    """``data`` as a double-quoted Lua string literal that yields exactly these bytes."""
    out = ['"']
    for byte in data:
        char = chr(byte)
        if char == "\r":
            out.append("\\r")
        elif char == "\n":
            out.append("\\n")
        elif char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    out.append('"')
    return "".join(out)


def script(pipelined: bytes | None = None) -> str:
    """The whole script: the report hook, and ``request()`` returning ``pipelined``
    (several requests in one buffer) when given."""
    keys = "".join(f'\\"{key}\\": %d, ' for key, _ in PERCENTILES)
    calls = "".join(f"latency:percentile({p}), " for _, p in PERCENTILES)
    text = "-- written by benchmarks/wrkscript.py for one wrk run\n"
    if pipelined is not None:
        text += f"local pipelined = {lua_string(pipelined)}\n"
        text += "function request()\n  return pipelined\nend\n"
    done = _DONE.replace("PERCENTILES", keys).replace("PERCENTILE_CALLS", calls)
    return text + done.replace("REPORT_PREFIX", REPORT_PREFIX)


def pipeline_script(
    path: str, host: str, depth: int, headers: Iterable[tuple[str, str]] = ()
) -> str:
    """A script whose every write is ``depth`` requests for ``path``."""
    if depth < 1:
        raise ValueError(f"pipeline depth must be at least 1, not {depth}")
    return script(request_bytes(path, host, headers) * depth)


def parse_report(output: str) -> dict[str, Any] | None:
    """The ``wrk-report`` object from wrk's output, or None when there is none."""
    for line in output.splitlines():
        if line.startswith(REPORT_PREFIX):
            value = json.loads(line[len(REPORT_PREFIX) :])
            return value if isinstance(value, dict) else None
    return None
