"""The metrics board without a server: counts published into slots of shared
memory, summed by any reader, folded when a process goes, and the numbers the
status page derives (requests per second, the last minute's percentiles)."""

from __future__ import annotations

import bisect
import collections
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from aserve.metrics import (
    BOUNDS,
    BUCKETS,
    RING_SECONDS,
    Board,
    Counts,
    L,
    Publisher,
    percentile,
    render,
)
from aserve.status import data

parser = pytest.importorskip(
    "prometheus_client.parser",
    reason="prometheus_client reads the metrics back: pip install "
    "prometheus-client (in the test extras)",
)

T0 = 1_800_000_000.0  # a whole minute (a multiple of 60 s), far from now


@dataclass
class Body:
    received: int


@dataclass
class Req:
    _method: bytes = b"GET"
    _body_stream: Body | None = None


@dataclass
class Done:
    status: int = 200
    duration: float = 0.002
    bytes_sent: int = 100
    outcome: str = "ok"
    request: Req = field(default_factory=Req)


@dataclass
class Conn:
    phase: str

    def phase_name(self) -> str:
        return self.phase


@dataclass
class State:
    started: float = T0
    opened: int = 0
    requests: int = 0
    served_connections: int = 0
    active: int = 0
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)
    connections: list[Conn] = field(default_factory=list)


def slot_of(board: Board) -> int:
    index = board.take()
    assert index is not None
    return index


def served(counts: Counts, state: State, n: int, **done: Any) -> None:
    for _ in range(n):
        counts.exchange_done(Done(**done))
    state.requests += n


def test_two_processes_are_summed_and_a_gone_one_is_folded() -> None:
    board = Board(4)
    try:
        first, second = board.take(), board.take()
        assert first is not None and second is not None
        a, b = Counts(), Counts()
        sa, sb = State(opened=2, served_connections=2), State(opened=1, served_connections=1)
        pa, pb = Publisher(a, board, first), Publisher(b, board, second)
        served(a, sa, 10)
        served(b, sb, 5, status=500, duration=0.3, request=Req(b"POST", Body(7)))
        sa.connections = [Conn("idle"), Conn("handling")]
        sa.active = 1
        sb.refusals["header_timeout"] = 3
        pa.publish(sa, T0 + 1)  # type: ignore[arg-type]
        pb.publish(sb, T0 + 1)  # type: ignore[arg-type]
        snap = board.read(T0 + 1.5)
        assert snap.requests_by_label() == {("GET", "2xx"): 10, ("POST", "5xx"): 5}
        assert snap.value(L.received) == 35
        assert snap.value(L.sent) == 1500
        assert snap.value(L.connections) == 3
        assert snap.value(L.reused) == 12  # 15 requests on 3 connections
        assert snap.refusals()["header_timeout"] == 3
        assert snap.open == 2 and snap.phases["idle"] == 1 and snap.in_flight == 1
        assert len(snap.workers) == 2
        # The second process goes: its counters stay, its gauges go.
        sb.connections = [Conn("idle")] * 4
        pb.publish(sb, T0 + 1.2)  # type: ignore[arg-type]
        board.release(second)
        board.restarted("exited")
        snap = board.read(T0 + 1.5)
        assert snap.requests_by_label() == {("GET", "2xx"): 10, ("POST", "5xx"): 5}
        assert snap.refusals()["header_timeout"] == 3
        assert snap.open == 2 and len(snap.workers) == 1
        assert snap.restarts["exited"] == 1
        # Its slot is free again, and a new process there starts from zero.
        again = board.take()
        assert again == second
        c = Counts()
        Publisher(c, board, again).publish(State(), T0 + 1.4)  # type: ignore[arg-type]
        assert board.read(T0 + 1.5).requests == 15
    finally:
        board.close()


def test_the_prometheus_text_reads_back_with_exact_default_buckets() -> None:
    board = Board(1)
    try:
        counts, state = Counts(), State()
        for duration in (0.001, 0.004, 0.005, 0.0051, 0.2, 0.25, 3.0, 11.0, 100.0):
            served(counts, state, 1, duration=duration)
        served(counts, state, 1, request=Req(b"BREW"), outcome="client-gone", status=0)
        Publisher(counts, board, slot_of(board)).publish(state, T0)  # type: ignore[arg-type]
        text = render(board.read(T0))
    finally:
        board.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }
    bucket = "aserve_request_duration_seconds_bucket"
    assert samples[(bucket, (("le", "0.005"),))] == 3  # le is "less than or equal"
    assert samples[(bucket, (("le", "0.25"),))] == 6
    assert samples[(bucket, (("le", "10.0"),))] == 7
    assert samples[(bucket, (("le", "+Inf"),))] == 9
    assert len([k for k in samples if k[0] == bucket]) == len(BUCKETS) + 1
    assert samples[("aserve_request_duration_seconds_sum", ())] == pytest.approx(114.4652)
    # No response: not an answered request, but a cut exchange.
    assert samples[("aserve_exchanges_cut_total", (("outcome", "client-gone"),))] == 1
    assert ("aserve_requests_total", (("method", "other"), ("status", "2xx"))) not in samples


def test_requests_per_second_over_the_last_minute() -> None:
    board = Board(2)
    try:
        counts, state = Counts(), State()
        publisher = Publisher(counts, board, slot_of(board))
        for second in range(90):
            served(counts, state, second // 2)
            publisher.publish(state, T0 + second + 0.5)  # type: ignore[arg-type]  # a scrape
            served(counts, state, second - second // 2)
            publisher.publish(state, T0 + second + 1.001)  # type: ignore[arg-type]  # the clock
        snap = board.read(T0 + 90.2)
    finally:
        board.close()
    # Seconds 30..89 are the last whole minute, oldest first.
    assert snap.per_second == list(range(30, 90))
    assert data(snap)["requests"]["rate_1m"] == pytest.approx(sum(range(30, 90)) / RING_SECONDS)


def test_the_last_minutes_latency_leaves_older_requests_out() -> None:
    board = Board(1)
    try:
        counts, state = Counts(), State()
        publisher = Publisher(counts, board, slot_of(board))
        # A slow first minute, then a fast one.
        for second in range(130):
            duration = 2.0 if second < 60 else 0.001
            served(counts, state, 10, duration=duration)
            publisher.publish(state, T0 + second + 0.5)  # type: ignore[arg-type]
        snap = board.read(T0 + 130.5)
    finally:
        board.close()
    recent = data(snap)["latency_ms"]
    # Since the snapshot taken at the 10-second boundary a minute back (T0 + 70).
    assert recent["requests"] == 590
    assert recent["p99"] < 2
    assert percentile(snap.histogram, 0.99) == pytest.approx(2.0, rel=0.25)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_percentiles_are_read_to_within_a_bucket(q: float) -> None:
    histogram = [0] * (len(BOUNDS) + 1)
    durations = [0.0001 * 1.07**k for k in range(150)]  # 0.1 ms to about 2.5 s
    for duration in durations:
        histogram[bisect.bisect_left(BOUNDS, duration)] += 1
    exact = sorted(durations)[int(q * len(durations)) - 1]
    found = percentile(histogram, q)
    assert found is not None and found == pytest.approx(exact, rel=0.3)
    assert percentile([0] * len(histogram), q) is None


def test_a_reader_waits_while_a_fold_is_under_way() -> None:
    board = Board(1)
    try:
        board.view[0] += 1  # a fold has begun (the supervisor's sequence number is odd)
        done = threading.Event()

        def finish() -> None:
            time.sleep(0.05)
            board.view[0] += 1
            done.set()

        threading.Thread(target=finish).start()
        board.read()
        assert done.is_set()
    finally:
        board.close()


def test_the_board_is_shared_with_a_forked_process() -> None:
    board = Board(2)
    try:
        index = board.take()
        assert index is not None
        pid = os.fork()
        if pid == 0:  # the child publishes, as a worker does
            counts, state = Counts(), State()
            served(counts, state, 42)
            Publisher(counts, board, index).publish(state, T0)  # type: ignore[arg-type]
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        assert board.read(T0).requests == 42
        board.release(index)
        assert board.read(T0).requests == 42
    finally:
        board.close()


def test_slots_are_handed_out_compactly_and_reads_stop_at_the_last_used() -> None:
    board = Board(256)
    try:
        taken = [slot_of(board) for _ in range(3)]
        assert taken == [0, 1, 2]
        board.release(1)
        assert slot_of(board) == 1  # a freed slot first: reads stay short
        counts, state = Counts(), State()
        served(counts, state, 5)
        Publisher(counts, board, 2).publish(state, T0)  # type: ignore[arg-type]
        snap = board.read(T0)
        assert snap.requests == 5 and len(snap.workers) == 1
        assert board.view[0] % 2 == 0  # no fold left half done
    finally:
        board.close()
