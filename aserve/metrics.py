"""Prometheus metrics of one server process, on ``metrics_path``.

`Metrics` is an observer (see docs/observability.md): told of every finished
exchange, it counts requests by method and status class, a histogram of their
durations, and the bytes sent and received. At a scrape it adds what the
server keeps anyway: open connections, requests in flight, connections
accepted, and refusals by reason. `render` writes the Prometheus text
exposition format, version 0.0.4, with names and units by Prometheus
conventions (``_total`` counters, ``_seconds``, ``_bytes``).

The scrape is answered before the application (`MetricsEndpoint`), so an app's
own routes never see it. One process only: with several workers each has its
own numbers, so the command refuses ``--metrics-path`` with ``--workers`` for
now (the shared-memory design for workers is in docs/observability.md).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .request import Request
from .response import Response

if TYPE_CHECKING:
    from .server import ServerState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Request duration buckets, in seconds (Prometheus' defaults).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REFUSAL_REASONS = (
    "max_connections",
    "max_concurrency",
    "header_timeout",
    "body_timeout",
    "send_timeout",
    "handler_timeout",
    "bad_request",
    "too_large",
)


class Metrics:
    """Counts of the finished exchanges of one server."""

    __slots__ = ("requests", "buckets", "duration_sum", "sent", "received", "outcomes")

    def __init__(self) -> None:
        self.requests: dict[tuple[bytes, int], int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last is +Inf
        self.duration_sum = 0.0
        self.sent = 0
        self.received = 0
        self.outcomes: dict[str, int] = {}

    def exchange_done(self, done: Any) -> None:
        # Per request: the method as sent and the status class as numbers;
        # names are made at the scrape.
        request = done.request
        key = (request._method, done.status // 100)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        duration = done.duration
        self.buckets[bisect.bisect_left(BUCKETS, duration)] += 1
        self.duration_sum += duration
        self.sent += done.bytes_sent
        body = request._body_stream
        if body is not None:
            self.received += body.received
        if done.outcome != "ok":
            self.outcomes[done.outcome] = self.outcomes.get(done.outcome, 0) + 1

    def render(self, state: ServerState) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")

        family("aserve_requests_total", "counter", "Requests answered, by method and status class.")
        by_label: dict[tuple[str, str], int] = {}
        for (raw, status_class), count in self.requests.items():
            method = raw.decode("ascii", "replace")
            key = (method if method in _METHODS else "other", f"{status_class}xx")
            by_label[key] = by_label.get(key, 0) + count
        for (name, status), count in sorted(by_label.items()):
            lines.append(f'aserve_requests_total{{method="{name}",status="{status}"}} {count}')
        family(
            "aserve_request_duration_seconds",
            "histogram",
            "From the request head to the last byte of the response.",
        )
        running = 0
        for bound, count in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'aserve_request_duration_seconds_bucket{{le="{le}"}} {running}')
        lines.append(f"aserve_request_duration_seconds_sum {self.duration_sum!r}")
        lines.append(f"aserve_request_duration_seconds_count {running}")
        family(
            "aserve_response_bytes_total", "counter", "Bytes written for responses, heads included."
        )
        lines.append(f"aserve_response_bytes_total {self.sent}")
        family("aserve_request_body_bytes_total", "counter", "Request body bytes received.")
        lines.append(f"aserve_request_body_bytes_total {self.received}")
        family(
            "aserve_exchanges_cut_total",
            "counter",
            "Exchanges that did not end normally, by how they ended.",
        )
        for outcome, count in sorted(self.outcomes.items()):
            lines.append(f'aserve_exchanges_cut_total{{outcome="{outcome}"}} {count}')
        family("aserve_connections_open", "gauge", "Connections open now.")
        lines.append(f"aserve_connections_open {len(state.connections)}")
        family("aserve_connections_total", "counter", "Connections accepted.")
        lines.append(f"aserve_connections_total {state.opened}")
        family("aserve_requests_in_flight", "gauge", "Requests being handled now.")
        lines.append(f"aserve_requests_in_flight {state.active}")
        family("aserve_refused_total", "counter", "Connections and requests refused, by reason.")
        for reason in REFUSAL_REASONS:
            lines.append(f'aserve_refused_total{{reason="{reason}"}} {state.refusals[reason]}')
        family("aserve_start_time_seconds", "gauge", "When the server started (Unix time).")
        lines.append(f"aserve_start_time_seconds {state.started!r}")
        return "\n".join(lines) + "\n"


class MetricsEndpoint:
    """The application, with ``path`` answered first with the metrics."""

    __slots__ = ("handler", "path", "metrics", "state")

    def __init__(
        self, handler: Callable[[Request], Awaitable[Response]], path: str, metrics: Metrics
    ) -> None:
        self.handler = handler
        self.path = path.encode("ascii")
        self.metrics = metrics
        self.state: ServerState | None = None

    async def __call__(self, request: Request) -> Response:
        if request.raw_path == self.path and self.state is not None:
            if request.method not in ("GET", "HEAD"):
                return Response("Method Not Allowed\n", 405, {"allow": "GET, HEAD"})
            started = time.perf_counter()
            body = self.metrics.render(self.state)
            body += f"# rendered in {(time.perf_counter() - started) * 1000:.3f} ms\n"
            return Response(body, media_type=CONTENT_TYPE, headers={"cache-control": "no-store"})
        return await self.handler(request)
