"""Access-log lines, one per response, on the ``aserve.access`` logger.

A format is compiled once into a function of the finished exchange:

- ``combined``: the Combined Log Format plus the duration,
  ``127.0.0.1 - - [30/Nov/2026:10:00:00 +0000] "GET /x HTTP/1.1" 200 13 "-" "curl/8.5" 0.7ms``,
  with `` client-gone`` or `` handler-timeout`` (and the like) at the end of a
  line whose exchange did not end normally;
- ``json``: one JSON object a line (`time`, `client`, `method`, `path`,
  `query`, `http_version`, `status`, `bytes`, `duration_ms`, `user_agent`,
  `referer`, `request_id` when the request-id middleware set one, `outcome`);
- anything else: a template with named fields, ``{client} {method} {path}
  {status} {duration_ms}``; an unknown name is a `ConfigError` at start-up.

`bytes` is what was written for the response, head included (Apache's %O),
and `duration_ms` runs from the request head to the last byte written. The
engine calls `AccessLog.exchange_done` only when access logging is on (the
observer hook of docs/observability.md); the line is made only when the
logger is enabled for INFO.

A WebSocket session is one line of its own when it ends (`websocket_done`):
status 101, `bytes` all it wrote (the 101 included), `duration_ms` the whole
session, then its messages and bytes each way and its close code --
`` websocket in=3/1200 out=3/1200 close=1000`` at the end of a ``combined``
line, a ``websocket`` object in ``json``, ``{ws_messages_in}``,
``{ws_bytes_in}``, ``{ws_messages_out}``, ``{ws_bytes_out}`` and
``{ws_close_code}`` in a template ("-" on the lines of HTTP exchanges).
"""

from __future__ import annotations

import json
import logging
import string
import time
from collections.abc import Callable
from typing import Any, Protocol

from .errors import ConfigError
from .request import Request

access_log = logging.getLogger("aserve.access")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Finished(Protocol):
    """What the access log reads of a finished exchange (or WebSocket session)."""

    request: Request
    status: int
    outcome: str

    @property
    def bytes_sent(self) -> int: ...
    @property
    def duration(self) -> float: ...


class FinishedSession(Finished, Protocol):
    """What it reads of a WebSocket session that ended (aserve/wsprotocol.py)."""

    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    close_code: int | None


def _clf_time(now: float) -> str:
    t = time.gmtime(now)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


_second = -1
_second_text = ""


def _clf_now() -> str:
    """The time in CLF, made once a second."""
    global _second, _second_text
    now = int(time.time())
    if now != _second:
        _second, _second_text = now, _clf_time(now)
    return _second_text


def _header(request: Request, name: bytes) -> str:
    """One header's value as sent, "-" when absent (a scan of the raw pairs:
    cheaper than making the request's Headers for two lookups)."""
    for key, value in request._raw_headers:
        if key == name:
            return value.decode("latin-1")
    return "-"


def _fields(done: Finished) -> dict[str, Any]:
    request = done.request
    client = request.client
    state = request._state
    request_id = getattr(state, "request_id", None) if state is not None else None
    now = time.time()
    return {
        "time": _clf_time(now),
        "iso_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now % 1 * 1000):03d}Z",
        "client": client[0] if client else "-",
        "client_port": client[1] if client else 0,
        "method": request.method,
        "path": request.raw_path.decode("latin-1"),
        "query": request.query_string.decode("latin-1"),
        "target": request.target.decode("latin-1"),
        "http_version": request.http_version,
        "status": done.status,
        "bytes": done.bytes_sent,
        "duration_ms": round(done.duration * 1000, 3),
        "user_agent": _header(request, b"user-agent"),
        "referer": _header(request, b"referer"),
        "request_id": request_id or "-",
        "outcome": done.outcome,
    }


def _quote(value: str) -> str:
    if '"' not in value and "\\" not in value:
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _combined(done: Finished) -> str:
    request = done.request
    client = request.client
    line = (
        f"{client[0] if client else '-'} - - [{_clf_now()}] "
        f'"{request.method} {_quote(request.target.decode("latin-1"))} '
        f'HTTP/{request.http_version}" {done.status} {done.bytes_sent} '
        f'"{_quote(_header(request, b"referer"))}" '
        f'"{_quote(_header(request, b"user-agent"))}" {done.duration * 1000:.1f}ms'
    )
    if done.outcome != "ok":
        line += " " + done.outcome
    return line


def _ws_fields(done: FinishedSession) -> dict[str, Any]:
    return {
        "ws_messages_in": done.messages_in,
        "ws_bytes_in": done.bytes_in,
        "ws_messages_out": done.messages_out,
        "ws_bytes_out": done.bytes_out,
        "ws_close_code": done.close_code if done.close_code is not None else "-",
    }


_NO_WS_FIELDS = dict.fromkeys(
    ("ws_messages_in", "ws_bytes_in", "ws_messages_out", "ws_bytes_out", "ws_close_code"), "-"
)


def _combined_ws(done: FinishedSession) -> str:
    return (
        f"{_combined(done)} websocket in={done.messages_in}/{done.bytes_in} "
        f"out={done.messages_out}/{done.bytes_out} close={done.close_code}"
    )


def _json_ws(done: FinishedSession) -> str:
    record = _json_record(done)
    record["websocket"] = {
        "messages_in": done.messages_in,
        "bytes_in": done.bytes_in,
        "messages_out": done.messages_out,
        "bytes_out": done.bytes_out,
        "close_code": done.close_code,
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _json(done: Finished) -> str:
    return json.dumps(_json_record(done), ensure_ascii=False, separators=(",", ":"))


def _json_record(done: Finished) -> dict[str, Any]:
    f = _fields(done)
    record = {
        "time": f["iso_time"],
        "client": f["client"],
        "method": f["method"],
        "path": f["path"],
        "query": f["query"],
        "http_version": f["http_version"],
        "status": f["status"],
        "bytes": f["bytes"],
        "duration_ms": f["duration_ms"],
        "user_agent": None if f["user_agent"] == "-" else f["user_agent"],
        "referer": None if f["referer"] == "-" else f["referer"],
        "outcome": f["outcome"],
    }
    if f["request_id"] != "-":
        record["request_id"] = f["request_id"]
    return record


#: The names a template may use.
FIELD_NAMES = (
    "time",
    "iso_time",
    "client",
    "client_port",
    "method",
    "path",
    "query",
    "target",
    "http_version",
    "status",
    "bytes",
    "duration_ms",
    "user_agent",
    "referer",
    "request_id",
    "outcome",
    *_NO_WS_FIELDS,
)


def compile_format(spec: str) -> Callable[[Finished], str]:
    """The line maker for ``combined``, ``json`` or a ``{field}`` template."""
    if spec == "combined":
        return _combined
    if spec == "json":
        return _json
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(spec) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"access_log_format {spec!r}: {exc}") from None
    if not names:
        raise ConfigError(
            f"access_log_format must be 'combined', 'json' or a template with "
            f"{{fields}}, not {spec!r}"
        )
    unknown = sorted(set(names) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(
            f"access_log_format: unknown field {unknown[0]!r} (known: {', '.join(FIELD_NAMES)})"
        )

    def template(done: Finished) -> str:
        return spec.format_map({**_fields(done), **_NO_WS_FIELDS})

    return template


def compile_websocket_format(spec: str) -> Callable[[FinishedSession], str]:
    """The line maker of WebSocket sessions for the same spec."""
    compile_format(spec)  # checked there
    if spec == "combined":
        return _combined_ws
    if spec == "json":
        return _json_ws

    def template(done: FinishedSession) -> str:
        return spec.format_map({**_fields(done), **_ws_fields(done)})

    return template


class AccessLog:
    """The observer that writes one line per finished exchange."""

    __slots__ = ("make_line", "make_websocket_line")

    def __init__(self, spec: str = "combined") -> None:
        self.make_line = compile_format(spec)
        self.make_websocket_line = compile_websocket_format(spec)

    def exchange_done(self, done: Finished) -> None:
        if access_log.isEnabledFor(logging.INFO):
            # The record made directly: logger.info would look up the caller's
            # frame and file for every line (a third of the cost).
            record = access_log.makeRecord(
                access_log.name, logging.INFO, __file__, 0, self.make_line(done), (), None
            )
            access_log.handle(record)

    def websocket_done(self, done: FinishedSession) -> None:
        """One line for a WebSocket session that ended."""
        if access_log.isEnabledFor(logging.INFO):
            record = access_log.makeRecord(
                access_log.name,
                logging.INFO,
                __file__,
                0,
                self.make_websocket_line(done),
                (),
                None,
            )
            access_log.handle(record)
