"""The live status page: the metrics `Snapshot` as one HTML page, or as JSON.

``status_path`` (``--status-path /status``) answers a page that needs nothing
from outside: its style inline, the chart of requests per second over the
last minute an inline SVG, and a ``<meta http-equiv="refresh">`` so that it
refreshes itself (``?refresh=N`` seconds, 5 by default, 0 for never).
``?format=json`` gives the same numbers to a program (`data`).

Only this module knows the page; it reads a snapshot and writes text, no IO.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from .metrics import RING_SECONDS, L, Snapshot, percentile
from .request import Request
from .response import Response

DEFAULT_REFRESH_S = 5


def respond(request: Request, snapshot: Snapshot) -> Response:
    query = request.query
    headers = {"cache-control": "no-store"}
    if query.get("format") == "json":
        body = json.dumps(data(snapshot), separators=(",", ":")) + "\n"
        return Response(body, media_type="application/json", headers=headers)
    try:
        refresh = max(0, min(3600, int(query.get("refresh", DEFAULT_REFRESH_S))))
    except ValueError:
        refresh = DEFAULT_REFRESH_S
    return Response(page(snapshot, refresh), media_type="text/html; charset=utf-8", headers=headers)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def data(snapshot: Snapshot) -> dict[str, Any]:
    """Everything the page shows, as plain data."""
    now = snapshot.now
    classes = snapshot.by_class()
    recent = snapshot.recent
    per_second = snapshot.per_second
    return {
        "time": _iso(now),
        "started": _iso(snapshot.started),
        "uptime_s": round(now - snapshot.started, 3),
        "workers": {
            "wanted": snapshot.workers_wanted,
            "serving": [
                {
                    "pid": worker.pid,
                    "uptime_s": round(now - worker.born, 3),
                    "requests": worker.requests,
                    "connections_open": worker.open,
                    "in_flight": worker.in_flight,
                    "seen_s_ago": round(max(0.0, now - worker.published), 3),
                }
                for worker in sorted(snapshot.workers, key=lambda w: w.born)
            ],
            "restarts": snapshot.restarts,
        },
        "connections": {
            "open": snapshot.open,
            "by_phase": snapshot.phases,
            "accepted": snapshot.value(L.connections),
            "keepalive_requests": snapshot.value(L.reused),
        },
        "requests": {
            "total": snapshot.requests,
            "in_flight": snapshot.in_flight,
            "by_status": classes,
            "per_second": per_second,
            "rate_1m": round(sum(per_second) / RING_SECONDS, 3),
        },
        "latency_ms": {
            "window_s": RING_SECONDS,
            "requests": sum(recent),
            "p50": _ms(percentile(recent, 0.50)),
            "p90": _ms(percentile(recent, 0.90)),
            "p99": _ms(percentile(recent, 0.99)),
        },
        "errors": {
            "4xx": classes["4xx"],
            "5xx": classes["5xx"],
            "cut": snapshot.outcomes(),
        },
        "refused": snapshot.refusals(),
        "bytes": {"sent": snapshot.value(L.sent), "received": snapshot.value(L.received)},
        "websockets": snapshot.websockets(),
    }


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {seconds}s"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        text = f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    else:
        text = f"{value:,}"
    return text + unit


def chart(per_second: list[int], width: int = 600, height: int = 120) -> str:
    """Requests per second over the last minute, as an SVG bar chart."""
    top = max(per_second) if any(per_second) else 1
    bar = width / len(per_second)
    bars = []
    for i, count in enumerate(per_second):
        if count:
            h = max(1.0, count / top * (height - 20))
            bars.append(
                f'<rect x="{i * bar + 0.5:.1f}" y="{height - h:.1f}" width="{bar - 1:.1f}" '
                f'height="{h:.1f}"><title>{count} req/s, {len(per_second) - i}s ago</title></rect>'
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="requests per second">'
        f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" class="axis"/>'
        f'<text x="4" y="12" class="label">{top:,} req/s</text>'
        f'<text x="{width - 4}" y="12" class="label" text-anchor="end">now</text>'
        f'<g class="bars">{"".join(bars)}</g></svg>'
    )


_SUB = ' class="sub"'


def _table(rows: list[tuple[str, str]]) -> str:
    """Rows of a name and a value; a name that starts with a space is a sub-row."""
    cells = "".join(
        f"<tr><th{_SUB if name.startswith(' ') else ''}>{html.escape(name.strip())}"
        f"</th><td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return f"<table>{cells}</table>"


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:60em;padding:0 1em;
color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.05em;margin:1.2em 0 .4em}
.sub{color:#666}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(17em,1fr));gap:1em}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin-bottom:1em}
h2:first-child{margin-top:0}th.sub{padding-left:1em}
table{border-collapse:collapse;width:100%}th{text-align:left;font-weight:normal;color:#555}
td{text-align:right;font-variant-numeric:tabular-nums}th,td{padding:.15em 0}
svg{width:100%;height:auto}.bars rect{fill:#3b7dd8}.axis{stroke:#999}
.label{font-size:11px;fill:#555}
.workers td,.workers th{text-align:right;padding:.15em .5em}
.workers th:first-child,.workers td:first-child{text-align:left}.bad{color:#b00020}
"""


def page(snapshot: Snapshot, refresh: int = DEFAULT_REFRESH_S) -> str:
    d = data(snapshot)
    requests, latency, connections = d["requests"], d["latency_ms"], d["connections"]
    workers = d["workers"]
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    worker_rows = "".join(
        f"<tr><td>{w['pid']}</td><td>{_duration(w['uptime_s'])}</td><td>{w['requests']:,}</td>"
        f"<td>{w['connections_open']:,}</td><td>{w['in_flight']:,}</td></tr>"
        for w in workers["serving"]
    )
    restarts = ", ".join(f"{name} {count}" for name, count in workers["restarts"].items() if count)
    sections = [
        (
            "Requests",
            [
                ("requests per second (last minute)", _number(float(requests["rate_1m"]))),
                ("answered since start", _number(requests["total"])),
                ("in flight", _number(requests["in_flight"])),
                *((f"status {k}", _number(v)) for k, v in requests["by_status"].items()),
            ],
        ),
        (
            "Latency (last minute)",
            [
                ("p50", _number(latency["p50"], " ms")),
                ("p90", _number(latency["p90"], " ms")),
                ("p99", _number(latency["p99"], " ms")),
                ("requests measured", _number(latency["requests"])),
            ],
        ),
        (
            "Connections",
            [
                ("open", _number(connections["open"])),
                *((f" {k}", _number(v)) for k, v in connections["by_phase"].items()),
                ("accepted since start", _number(connections["accepted"])),
                ("requests on kept-alive connections", _number(connections["keepalive_requests"])),
            ],
        ),
        (
            "Errors",
            [
                ("4xx answers", _number(d["errors"]["4xx"])),
                ("5xx answers", _number(d["errors"]["5xx"])),
                *((f"cut: {k}", _number(v)) for k, v in d["errors"]["cut"].items()),
            ],
        ),
        ("Refused", [(k.replace("_", " "), _number(v)) for k, v in d["refused"].items()]),
        (
            "WebSockets",
            [
                ("open", _number(d["websockets"]["open"])),
                ("sessions ended", _number(d["websockets"]["sessions"])),
                ("messages in", _number(d["websockets"]["messages_in"])),
                ("messages out", _number(d["websockets"]["messages_out"])),
            ],
        ),
    ]
    boxes = "".join(
        f"<section><h2>{html.escape(title)}</h2>{_table(rows)}</section>"
        for title, rows in sections
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{meta}<title>aserve status</title><style>{_STYLE}</style></head><body>"
        "<h1>aserve status</h1>"
        f'<p class="sub">up {_duration(d["uptime_s"])} since {d["started"]} · '
        f"{len(workers['serving'])} of {workers['wanted']} worker(s) serving"
        f"{' · restarts: ' + html.escape(restarts) if restarts else ''} · "
        f'{d["time"]} · <a href="?format=json">JSON</a></p>'
        f"<section><h2>Requests per second, last minute</h2>{chart(requests['per_second'])}"
        "</section>"
        f'<div class="grid">{boxes}</div>'
        '<h2>Workers</h2><section><table class="workers"><tr><th>pid</th><th>up</th>'
        "<th>requests</th><th>connections</th><th>in flight</th></tr>"
        f"{worker_rows}</table></section>"
        "</body></html>\n"
    )
