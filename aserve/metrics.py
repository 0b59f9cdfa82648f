"""Prometheus metrics, summed over every process of a server.

The design is in docs/observability.md; in short:

- `Counts` is an observer: told of every finished exchange, it adds to a
  plain list of ints in its own process (requests by method and status class,
  a fine histogram of durations, bytes, how exchanges were cut).
- `Publisher` copies that list, with what the server keeps anyway (open
  connections by phase, requests in flight, connections accepted, refusals by
  reason), into the process's slot of a `Board` once a second and before every
  scrape. The copy is one slice assignment of int64s.
- A `Board` is an anonymous shared ``mmap``: a header (a sequence number for
  folds, worker restarts by reason, the number of workers wanted), a
  *retired* area, then one slot per process. With workers the supervisor makes
  it before it forks, hands each new process a free slot, and folds a reaped
  process's slot into the retired area, so counters never go back.
- `Board.read` sums the live slots and the retired area into a `Snapshot`;
  `render` writes it in the Prometheus text exposition format, version 0.0.4,
  with names and units by Prometheus conventions, and the status page
  (aserve/status.py) reads the same snapshot.

`MetricsEndpoint` answers the metrics and status paths before the application,
so an app's own routes never see them.

This module does no IO but the scrape's answer; the supervisor owns forks and
the server owns its clock.
"""

from __future__ import annotations

import bisect
import math
import mmap
import os
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .request import Request
from .response import Response

if TYPE_CHECKING:
    from .server import ServerState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Request duration buckets in seconds, as Prometheus shows them (its defaults).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The histogram kept: about 25% apart from 100 us to a minute, and every
#: Prometheus bucket bound among them, so those buckets are exact sums and
#: percentiles are read to within a bucket's width.
BOUNDS: tuple[float, ...] = tuple(
    sorted({round(1e-4 * 1.25**k, 7) for k in range(60)} | set(BUCKETS))
)
_NBUCKETS = len(BOUNDS) + 1  # the last counts what is above every bound

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other")
_METHOD_INDEX = {name.encode("ascii"): i for i, name in enumerate(METHODS[:-1])}
_OTHER_METHOD = len(METHODS) - 1
#: Status classes 1xx to 5xx; index 0 is never counted (no response).
_CLASSES = 6
OUTCOMES = ("client-gone", "handler-timeout", "body-timeout", "bad-request", "cancelled", "other")
_OUTCOME_INDEX = {name: i for i, name in enumerate(OUTCOMES)}
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
#: What an open connection is doing (see HTTPProtocol.phase_name; "websocket"
#: is an open WebSocket session, WebSocketProtocol.phase_name).
PHASES = ("handshake", "idle", "reading", "handling", "writing", "closing", "websocket")
#: WebSocket sessions' counters, summed when a session ends (Counts.websocket_done).
WS_COUNTERS = ("sessions", "messages_in", "messages_out", "bytes_in", "bytes_out")
_PHASE_INDEX = {name: i for i, name in enumerate(PHASES)}
RESTART_REASONS = ("exited", "timeout", "max_requests", "reload")

#: The per-second ring of request counts, and the histogram snapshots taken
#: every SNAPSHOT_EVERY_S seconds (enough of them to reach a minute back).
RING_SECONDS = 60
_RING = RING_SECONDS + 2  # the minute, the second under way, and one to spare
SNAPSHOT_EVERY_S = 10
_SNAPSHOTS = RING_SECONDS // SNAPSHOT_EVERY_S + 1


class _Layout:
    """Offsets of a slot's int64s, in the order they are laid out."""

    def __init__(self) -> None:
        at = 0

        def take(count: int) -> int:
            nonlocal at
            start, at = at, at + count
            return start

        self.pid = take(1)
        self.born_ms = take(1)  # when the process's server started, Unix ms
        self.published_ms = take(1)
        # Counters: from here to counters_end, folded into the retired area.
        self.requests = take(len(METHODS) * _CLASSES)
        self.histogram = take(_NBUCKETS)
        self.duration_ns = take(1)
        self.sent = take(1)
        self.received = take(1)
        self.outcomes = take(len(OUTCOMES))
        self.connections = take(1)  # accepted
        self.reused = take(1)  # requests on a connection that had served one
        self.refusals = take(len(REFUSAL_REASONS))
        self.websockets = take(len(WS_COUNTERS))
        self.counters_end = at
        # Gauges: counted for live processes only.
        self.open = take(1)
        self.in_flight = take(1)
        self.phases = take(len(PHASES))
        # (second, requests that second) pairs, and (time, histogram) snapshots.
        self.ring = take(2 * _RING)
        self.snapshots = take(_SNAPSHOTS * (1 + _NBUCKETS))
        self.size = at


L = _Layout()
_ITEM = 8  # bytes of an int64

# The board's header, before the retired area and the slots.
_SEQ = 0
_RESTARTS = 1
_WORKERS = _RESTARTS + len(RESTART_REASONS)
_USED = _WORKERS + 1  # slots ever handed out: a read copies no further
_HEADER = _USED + 1


class Counts:
    """The observer: counts of this process's finished exchanges, in a list
    laid out as a board slot (only the counters part is written here)."""

    __slots__ = ("values", "duration_sum")

    def __init__(self) -> None:
        self.values = [0] * L.size
        self.duration_sum = 0.0

    def exchange_done(self, done: Any) -> None:
        # Per request: a few list increments and one bisect; names are made
        # at the scrape.
        values = self.values
        request = done.request
        status = done.status
        if 100 <= status < 600:
            method = _METHOD_INDEX.get(request._method, _OTHER_METHOD)
            values[L.requests + method * _CLASSES + status // 100] += 1
            duration = done.duration
            values[L.histogram + bisect.bisect_left(BOUNDS, duration)] += 1
            self.duration_sum += duration
        values[L.sent] += done.bytes_sent
        body = request._body_stream
        if body is not None:
            values[L.received] += body.received
        outcome = done.outcome
        if outcome != "ok":
            values[L.outcomes + _OUTCOME_INDEX.get(outcome, len(OUTCOMES) - 1)] += 1

    def websocket_done(self, done: Any) -> None:
        """A WebSocket session ended: its messages and bytes (not a request:
        its length says nothing of latency)."""
        values = self.values
        at = L.websockets
        values[at] += 1
        values[at + 1] += done.messages_in
        values[at + 2] += done.messages_out
        values[at + 3] += done.bytes_in
        values[at + 4] += done.bytes_out


class Board:
    """Slots of int64s in shared memory, one per process, plus the retired
    area and a header. Made before the fork; every process maps the same pages."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, (_HEADER + (slots + 1) * L.size) * _ITEM)
        self.view = memoryview(self._map).cast("q")
        self._free = list(range(slots - 1, -1, -1))

    def _base(self, slot: int) -> int:
        """Where `slot` starts; slot -1 is the retired area."""
        return _HEADER + (slot + 1) * L.size

    def slot(self, index: int) -> memoryview:
        base = self._base(index)
        return self.view[base : base + L.size]

    # -- the supervisor's side ------------------------------------------------

    def take(self) -> int | None:
        """A free slot for a new process, or None when all are taken. Freed
        slots are handed out again first, so reads stay short."""
        if not self._free:
            return None
        index = self._free.pop()
        if index >= self.view[_USED]:
            self.view[_USED] = index + 1
        return index

    def release(self, index: int) -> None:
        """The process in `index` is gone: fold its counters into the retired
        area, and free the slot."""
        view = self.view
        view[_SEQ] += 1  # odd: a fold is under way
        try:
            slot = self.slot(index)
            retired = self.slot(-1)
            for i in range(L.requests, L.counters_end):
                retired[i] += slot[i]
            _merge_stamped(retired, slot)
            slot[:] = array("q", bytes(L.size * _ITEM))
        finally:
            view[_SEQ] += 1
        self._free.append(index)

    def restarted(self, reason: str) -> None:
        self.view[_RESTARTS + RESTART_REASONS.index(reason)] += 1

    def set_workers(self, count: int) -> None:
        self.view[_WORKERS] = count

    # -- any process --------------------------------------------------------

    def read(self, now: float | None = None) -> Snapshot:
        """Everything summed; retried while the supervisor is folding a slot."""
        view = self.view
        now = time.time() if now is None else now
        for _ in range(100):
            seq = view[_SEQ]
            if seq % 2 == 0:
                # Only the slots ever used: the pages past them are never touched.
                used = min(view[_USED], self.slots)
                words = array("q", view[: self._base(used)])
                if view[_SEQ] == seq:
                    return _summarize(words, used, now)
            time.sleep(0.0005)
        used = min(view[_USED], self.slots)
        return _summarize(array("q", view[: self._base(used)]), used, now)

    def close(self) -> None:
        self.view.release()
        self._map.close()


def _merge_stamped(into: Any, source: Any) -> None:
    """Add `source`'s per-second ring and histogram snapshots into `into`,
    entry by entry where their time stamps match (a newer stamp replaces)."""
    for i in range(L.ring, L.ring + 2 * _RING, 2):
        stamp = source[i]
        if stamp == 0:
            continue
        if into[i] == stamp:
            into[i + 1] += source[i + 1]
        elif into[i] < stamp:
            into[i] = stamp
            into[i + 1] = source[i + 1]
    width = 1 + _NBUCKETS
    for at in range(L.snapshots, L.snapshots + _SNAPSHOTS * width, width):
        stamp = source[at]
        if stamp == 0:
            continue
        if into[at] == stamp:
            for i in range(at + 1, at + width):
                into[i] += source[i]
        elif into[at] < stamp:
            into[at : at + width] = source[at : at + width]


@dataclass(slots=True)
class Worker:
    pid: int
    born: float
    requests: int
    open: int
    in_flight: int
    published: float


@dataclass(slots=True)
class Snapshot:
    """The numbers of every process of a server, summed, at one moment."""

    now: float
    counters: list[int]
    open: int
    in_flight: int
    phases: dict[str, int]
    workers: list[Worker]
    workers_wanted: int
    restarts: dict[str, int]
    #: Requests in each of the last RING_SECONDS whole seconds, oldest first.
    per_second: list[int]
    #: The histogram of the exchanges of about the last minute.
    recent: list[int]
    started: float = field(default=0.0)

    def requests_by_label(self) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        for m, method in enumerate(METHODS):
            for status_class in range(1, _CLASSES):
                count = self.counters[L.requests + m * _CLASSES + status_class]
                if count:
                    found[(method, f"{status_class}xx")] = count
        return found

    def by_class(self) -> dict[str, int]:
        classes = {f"{c}xx": 0 for c in range(1, _CLASSES)}
        for (_, status), count in self.requests_by_label().items():
            classes[status] += count
        return classes

    @property
    def histogram(self) -> list[int]:
        return self.counters[L.histogram : L.histogram + _NBUCKETS]

    @property
    def requests(self) -> int:
        return sum(self.histogram)

    def value(self, offset: int) -> int:
        return self.counters[offset]

    def outcomes(self) -> dict[str, int]:
        return {name: self.counters[L.outcomes + i] for i, name in enumerate(OUTCOMES)}

    def refusals(self) -> dict[str, int]:
        return {name: self.counters[L.refusals + i] for i, name in enumerate(REFUSAL_REASONS)}

    def websockets(self) -> dict[str, int]:
        """Open sessions now, and the counters of those that ended."""
        found = {name: self.counters[L.websockets + i] for i, name in enumerate(WS_COUNTERS)}
        return {"open": self.phases.get("websocket", 0), **found}


def _summarize(words: array[int], slots: int, now: float) -> Snapshot:
    size = L.size
    retired = _HEADER
    counters = list(words[retired : retired + L.counters_end])
    stamped = list(words[retired : retired + size])
    open_ = in_flight = 0
    phases = [0] * len(PHASES)
    workers: list[Worker] = []
    started = math.inf
    for index in range(slots):
        base = _HEADER + (index + 1) * size
        pid = words[base + L.pid]
        if pid == 0:
            continue
        slot = words[base : base + size]
        for i in range(L.requests, L.counters_end):
            counters[i] += slot[i]
        _merge_stamped(stamped, slot)
        open_ += slot[L.open]
        in_flight += slot[L.in_flight]
        for i in range(len(PHASES)):
            phases[i] += slot[L.phases + i]
        born = slot[L.born_ms] / 1000
        started = min(started, born)
        served = sum(slot[L.histogram : L.histogram + _NBUCKETS])
        workers.append(
            Worker(pid, born, served, slot[L.open], slot[L.in_flight], slot[L.published_ms] / 1000)
        )
    # Requests per second over the last minute, from the merged ring.
    second = int(now)
    per_second = [0] * RING_SECONDS
    for i in range(L.ring, L.ring + 2 * _RING, 2):
        age = second - 1 - stamped[i]
        if stamped[i] and 0 <= age < RING_SECONDS:
            per_second[RING_SECONDS - 1 - age] += stamped[i + 1]
    # The last minute's histogram: now less the snapshot of a minute ago.
    width = 1 + _NBUCKETS
    boundary = (second // SNAPSHOT_EVERY_S) * SNAPSHOT_EVERY_S - RING_SECONDS
    total = counters[L.histogram : L.histogram + _NBUCKETS]
    recent = list(total)
    for at in range(L.snapshots, L.snapshots + _SNAPSHOTS * width, width):
        if stamped[at] == boundary:
            recent = [a - b for a, b in zip(total, stamped[at + 1 : at + width], strict=True)]
    return Snapshot(
        now=now,
        counters=counters,
        open=open_,
        in_flight=in_flight,
        phases=dict(zip(PHASES, phases, strict=True)),
        workers=workers,
        workers_wanted=words[_WORKERS] or len(workers),
        restarts={name: words[_RESTARTS + i] for i, name in enumerate(RESTART_REASONS)},
        per_second=per_second,
        recent=recent,
        started=started if workers else now,
    )


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The `q` quantile (0..1) of a BOUNDS histogram, interpolated within its
    bucket; None when it is empty."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            low = BOUNDS[i - 1] if i > 0 else 0.0
            high = BOUNDS[i] if i < len(BOUNDS) else BOUNDS[-1]
            return low + (high - low) * max(0.0, rank - seen) / count
        seen += count
    return BOUNDS[-1]


class Publisher:
    """Copies one process's numbers into its board slot."""

    __slots__ = (
        "counts",
        "board",
        "index",
        "_last_second",
        "_second_base",
        "_snapshot_at",
    )

    def __init__(self, counts: Counts, board: Board, index: int) -> None:
        self.counts = counts
        self.board = board
        self.index = index
        self._last_second = 0
        # Answered requests when this second began.
        self._second_base = 0
        self._snapshot_at = 0

    def publish(self, state: ServerState, now: float | None = None) -> None:
        now = time.time() if now is None else now
        values = self.counts.values
        values[L.pid] = os.getpid()
        values[L.born_ms] = int(state.started * 1000)
        values[L.published_ms] = int(now * 1000)
        values[L.duration_ns] = int(self.counts.duration_sum * 1e9)
        values[L.connections] = state.opened
        values[L.reused] = state.requests - state.served_connections
        refusals = state.refusals
        for i, reason in enumerate(REFUSAL_REASONS):
            values[L.refusals + i] = refusals[reason]
        connections = state.connections
        values[L.open] = len(connections)
        values[L.in_flight] = state.active
        phases = [0] * len(PHASES)
        for protocol in connections:
            phases[_PHASE_INDEX[protocol.phase_name()]] += 1
        values[L.phases : L.phases + len(PHASES)] = phases
        answered = sum(values[L.histogram : L.histogram + _NBUCKETS])
        second = int(now)
        if second != self._last_second:
            # The clock publishes just after each second begins: what was
            # answered since the last publish belongs to the second that ended.
            last = self._last_second
            if last:
                at = L.ring + 2 * (last % _RING)
                values[at] = last
                values[at + 1] = answered - self._second_base
            self._last_second = second
            self._second_base = answered
        at = L.ring + 2 * (second % _RING)
        values[at] = second
        values[at + 1] = answered - self._second_base
        boundary = (second // SNAPSHOT_EVERY_S) * SNAPSHOT_EVERY_S
        if boundary != self._snapshot_at:
            self._snapshot_at = boundary
            width = 1 + _NBUCKETS
            at = L.snapshots + width * ((boundary // SNAPSHOT_EVERY_S) % _SNAPSHOTS)
            values[at] = boundary
            if state.started >= boundary:  # nothing was answered at the boundary
                values[at + 1 : at + width] = [0] * _NBUCKETS
            else:
                values[at + 1 : at + width] = values[L.histogram : L.histogram + _NBUCKETS]
        self.board.slot(self.index)[:] = array("q", values)


def render(snapshot: Snapshot) -> str:
    """The Prometheus text exposition format, version 0.0.4."""
    lines: list[str] = []
    add = lines.append

    def family(name: str, kind: str, text: str) -> None:
        add(f"# HELP {name} {text}")
        add(f"# TYPE {name} {kind}")

    family("aserve_requests_total", "counter", "Requests answered, by method and status class.")
    for (method, status), count in sorted(snapshot.requests_by_label().items()):
        add(f'aserve_requests_total{{method="{method}",status="{status}"}} {count}')
    family(
        "aserve_request_duration_seconds",
        "histogram",
        "From the request head to the last byte of the response.",
    )
    histogram = snapshot.histogram
    running = 0
    for bound, count in zip(BOUNDS, histogram, strict=False):
        running += count
        if bound in BUCKETS:
            add(f'aserve_request_duration_seconds_bucket{{le="{bound!r}"}} {running}')
    running += histogram[-1]
    add(f'aserve_request_duration_seconds_bucket{{le="+Inf"}} {running}')
    add(f"aserve_request_duration_seconds_sum {snapshot.value(L.duration_ns) / 1e9!r}")
    add(f"aserve_request_duration_seconds_count {running}")
    family("aserve_response_bytes_total", "counter", "Bytes written for responses, heads included.")
    add(f"aserve_response_bytes_total {snapshot.value(L.sent)}")
    family("aserve_request_body_bytes_total", "counter", "Request body bytes received.")
    add(f"aserve_request_body_bytes_total {snapshot.value(L.received)}")
    family("aserve_exchanges_cut_total", "counter", "Exchanges that did not end normally, by how.")
    for outcome, count in snapshot.outcomes().items():
        add(f'aserve_exchanges_cut_total{{outcome="{outcome}"}} {count}')
    family("aserve_connections_open", "gauge", "Connections open now, by what they are doing.")
    for phase, count in snapshot.phases.items():
        add(f'aserve_connections_open{{phase="{phase}"}} {count}')
    family("aserve_connections_total", "counter", "Connections accepted.")
    add(f"aserve_connections_total {snapshot.value(L.connections)}")
    family(
        "aserve_keepalive_requests_total",
        "counter",
        "Requests that came on a connection that had already served one.",
    )
    add(f"aserve_keepalive_requests_total {snapshot.value(L.reused)}")
    websockets = snapshot.websockets()
    family("aserve_websockets_open", "gauge", "WebSocket sessions open now.")
    add(f"aserve_websockets_open {websockets['open']}")
    family("aserve_websocket_sessions_total", "counter", "WebSocket sessions that ended.")
    add(f"aserve_websocket_sessions_total {websockets['sessions']}")
    family(
        "aserve_websocket_messages_total",
        "counter",
        "Messages of WebSocket sessions that ended, by direction.",
    )
    add(f'aserve_websocket_messages_total{{direction="in"}} {websockets["messages_in"]}')
    add(f'aserve_websocket_messages_total{{direction="out"}} {websockets["messages_out"]}')
    family(
        "aserve_websocket_bytes_total",
        "counter",
        "Frame bytes of WebSocket sessions that ended, by direction.",
    )
    add(f'aserve_websocket_bytes_total{{direction="in"}} {websockets["bytes_in"]}')
    add(f'aserve_websocket_bytes_total{{direction="out"}} {websockets["bytes_out"]}')
    family("aserve_requests_in_flight", "gauge", "Requests being handled now.")
    add(f"aserve_requests_in_flight {snapshot.in_flight}")
    family("aserve_refused_total", "counter", "Connections and requests refused, by reason.")
    for reason, count in snapshot.refusals().items():
        add(f'aserve_refused_total{{reason="{reason}"}} {count}')
    family("aserve_workers", "gauge", "Worker processes serving now.")
    add(f"aserve_workers {len(snapshot.workers)}")
    family("aserve_worker_restarts_total", "counter", "Workers replaced, by why.")
    for reason, count in snapshot.restarts.items():
        add(f'aserve_worker_restarts_total{{reason="{reason}"}} {count}')
    family("aserve_start_time_seconds", "gauge", "When the server started (Unix time).")
    add(f"aserve_start_time_seconds {snapshot.started!r}")
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class Share:
    """What a worker gets from its supervisor: the board, its slot there, and
    the metrics listener (``metrics_port``) bound before the fork."""

    board: Board
    index: int | None
    metrics_socket: Any = None


class Monitor:
    """The metrics of one server process: its counts, its publisher, and the
    board it reads (its own, or the supervisor's)."""

    def __init__(self, share: Share | None = None) -> None:
        self.counts = Counts()
        if share is None:
            board = Board(1)
            share = Share(board, board.take())
            self.own_board = True
        else:
            self.own_board = False
        self.board = share.board
        self.publisher = (
            Publisher(self.counts, share.board, share.index) if share.index is not None else None
        )
        self.state: ServerState | None = None

    def publish(self) -> None:
        if self.publisher is not None and self.state is not None:
            self.publisher.publish(self.state)

    def snapshot(self) -> Snapshot:
        self.publish()
        return self.board.read()

    def close(self) -> None:
        if self.own_board:
            self.board.close()


class MetricsEndpoint:
    """The application, with the metrics and status paths answered first.
    With `handler` None (the metrics listener) anything else is a 404."""

    __slots__ = ("handler", "metrics_path", "status_path", "monitor", "_paths")

    def __init__(
        self,
        handler: Callable[[Request], Awaitable[Response]] | None,
        monitor: Monitor,
        metrics_path: str | None,
        status_path: str | None,
    ) -> None:
        self.handler = handler
        self.monitor = monitor
        self.metrics_path = metrics_path.encode("ascii") if metrics_path else None
        self.status_path = status_path.encode("ascii") if status_path else None
        self._paths = frozenset(p for p in (self.metrics_path, self.status_path) if p)

    def __call__(self, request: Request) -> Awaitable[Response]:
        # A plain function that hands back the application's own coroutine:
        # no coroutine frame of ours on every request.
        target = request._target
        ours = self._paths
        if (
            self.handler is None
            or target in ours
            or (b"?" in target and target.partition(b"?")[0] in ours)
        ):
            return self._answer(request)
        return self.handler(request)

    async def _answer(self, request: Request) -> Response:
        path = request.raw_path
        if path == self.metrics_path or path == self.status_path:
            if request.method not in ("GET", "HEAD"):
                return Response("Method Not Allowed\n", 405, {"allow": "GET, HEAD"})
            snapshot = self.monitor.snapshot()
            if path == self.metrics_path:
                return Response(
                    render(snapshot),
                    media_type=CONTENT_TYPE,
                    headers={"cache-control": "no-store"},
                )
            from . import status

            return status.respond(request, snapshot)
        if self.handler is None:
            return Response("Not Found\n", 404, media_type="text/plain; charset=utf-8")
        return await self.handler(request)
