"""The benchmark harness's own logic (benchmarks/), without running a benchmark.

The wrk Lua script pipelines exactly the requests it says, as bytes a server
parses; wrk's output (with the script's report line) is read back right; the
open-loop generator frames responses, counts answers, and measures latency
from when a request was due rather than when it could be sent; the chart
script reads a result file's figures and names the servers that have none.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any, cast

import h11
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import groups  # noqa: E402
import openloop  # noqa: E402
import plot  # noqa: E402
import run  # noqa: E402
import wrkscript  # noqa: E402

# --- the Lua script ---------------------------------------------------------------------


def lua_literal_bytes(literal: str) -> bytes:
    """The bytes a double-quoted Lua string literal stands for (the escapes lua_string uses)."""
    assert literal[0] == literal[-1] == '"'
    out = bytearray()
    body = literal[1:-1]
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out += char.encode("latin-1")
            i += 1
            continue
        nxt = body[i + 1]
        if nxt.isdigit():
            out.append(int(body[i + 1 : i + 4]))
            i += 4
        else:
            out += {"r": b"\r", "n": b"\n", "\\": b"\\", '"': b'"'}[nxt]
            i += 2
    return bytes(out)


def count_requests(data: bytes) -> list[h11.Request]:
    """Feed ``data`` to an h11 server and answer each request; every request read."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    seen = []
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            seen.append(event)
        elif isinstance(event, h11.EndOfMessage):
            conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return seen


@pytest.mark.parametrize("depth", [1, 2, 16])
def test_pipeline_script_writes_depth_requests_per_batch(depth: int) -> None:
    text = wrkscript.pipeline_script("/", "127.0.0.1:8000", depth, (("Connection", "keep-alive"),))
    literal = re.search(r'local pipelined = (".*")\n', text)
    assert literal is not None
    requests = count_requests(lua_literal_bytes(literal.group(1)))
    assert len(requests) == depth
    assert all(r.target == b"/" and (b"host", b"127.0.0.1:8000") in r.headers for r in requests)
    assert "function request()" in text and "function done(" in text


def test_lua_string_escapes_every_byte_that_is_not_printable() -> None:
    data = bytes(range(256))
    literal = wrkscript.lua_string(data)
    assert lua_literal_bytes(literal) == data
    assert "\r" not in literal and "\n" not in literal  # a long string would eat them


def test_plain_script_has_only_the_report_hook() -> None:
    text = wrkscript.script()
    assert "function request" not in text
    assert text.count("latency:percentile(") == len(wrkscript.PERCENTILES)


WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:8000/
  1 threads and 64 connections
  Latency Distribution
     50%   10.00ms
     75%   12.00ms
     90%   14.00ms
     99%   20.00ms
  12000 requests in 2.00s, 1.65MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:   6000.00
Transfer/sec:      0.82MB
wrk-report {"requests": 12000, "duration_us": 2000000, "bytes": 1730000, "connect": 0, \
"read": 3, "write": 0, "status": 5, "timeout": 2, "p50_us": 10012, "p90_us": 14100, \
"p99_us": 20345, "p999_us": 31000, "max_us": 45000, "mean_us": 10500.0}
"""


def test_wrk_output_with_the_report_line_gives_percentiles_and_errors() -> None:
    parsed = run.parse_wrk(WRK_OUTPUT)
    assert parsed.requests_per_sec == 6000.0
    assert parsed.p50_ms == pytest.approx(10.012)
    assert parsed.p99_ms == pytest.approx(20.345)
    assert parsed.p999_ms == pytest.approx(31.0)
    # status errors are the non-2xx answers, counted once
    assert parsed.errors() == 3 + 2 + 5


def test_wrk_output_without_the_script_keeps_wrks_own_figures() -> None:
    plain = WRK_OUTPUT.split("wrk-report")[0]
    parsed = run.parse_wrk(plain)
    assert parsed.p99_ms == 20.0
    assert parsed.p999_ms is None
    assert parsed.socket_errors == {"connect": 0, "read": 3, "write": 0, "timeout": 2}


def test_the_pipeline_target_compares_aserve_with_its_own_unpipelined_run() -> None:
    pipeline = groups.get("pipeline")
    target = pipeline.targets[0]
    assert (target.case, target.reference_case) == (groups.PIPELINED.name, "c64")
    assert str(target) == "aserve (pipelined-16) >= 1.2x aserve (c64)"
    selected = groups.select("pipeline,scale", "aserve", "c64")
    assert [(g.name, [c.name for c in g.cases]) for g in selected] == [
        ("scale", ["c64"]),
        ("pipeline", ["c64"]),
    ]


# --- the open-loop generator ------------------------------------------------------------


def test_response_parser_frames_length_chunked_and_close_delimited_bodies() -> None:
    parser = openloop.ResponseParser()
    stream = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;x=y\r\nbus\r\n1\r\ny\r\n0\r\nX-Trailer: 1\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    )
    done: list[openloop.Response] = []
    for i in range(0, len(stream), 7):  # in pieces that cut heads, sizes and bodies
        done += parser.feed(stream[i : i + 7])
    assert [(r.status, r.close) for r in done] == [(200, False), (503, False), (204, False)]
    assert [(r.status, r.close) for r in parser.eof()] == [(200, True)]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    found = openloop.percentiles(values, (50.0, 99.0, 99.9))
    assert found == {"p50": 50.0, "p99": 99.0, "p99.9": 100.0, "max": 100.0}
    assert openloop.percentiles([], (50.0,)) == {}


class SlowServer(asyncio.Protocol):
    """Answers each request ``delay`` seconds after the previous answer (one at a
    time, server-wide), alternately 200 and 503."""

    delay = 0.0
    queue: asyncio.Queue[tuple[SlowServer, int]]
    count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for _ in range(data.count(b"\r\n\r\n")):
            SlowServer.count += 1
            SlowServer.queue.put_nowait((self, 200 if SlowServer.count % 2 else 503))


async def answer_in_turn() -> None:
    while True:
        protocol, status = await SlowServer.queue.get()
        await asyncio.sleep(SlowServer.delay)
        if not protocol.transport.is_closing():
            reason = b"OK" if status == 200 else b"Service Unavailable"
            protocol.transport.write(
                b"HTTP/1.1 %d %s\r\nContent-Length: 2\r\n\r\nok" % (status, reason)
            )


async def run_against_slow_server(delay: float, **load: Any) -> dict[str, Any]:
    SlowServer.delay, SlowServer.count = delay, 0
    SlowServer.queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SlowServer, "127.0.0.1", 0)
    answering = asyncio.ensure_future(answer_in_turn())
    try:
        port = server.sockets[0].getsockname()[1]
        return await openloop.run_load("127.0.0.1", port, "/", **load)
    finally:
        answering.cancel()
        server.close()
        await server.wait_closed()


async def test_open_loop_sends_on_schedule_and_counts_every_answer() -> None:
    result = await run_against_slow_server(0.0, rate=200, seconds=0.5, pool=8, drain=2.0)
    assert result["sent"] == result["answered"] == 100
    assert result["by_status"] == {"200": 50, "503": 50}
    assert (result["ok"], result["refused"], result["unanswered"]) == (50, 50, 0)
    assert result["schedule_s"] == pytest.approx(0.5, abs=0.1)
    assert sum(b["ok"] + b["refused"] for b in result["answered_per_second"]) == 100
    assert result["connections_opened"] == 8


async def test_open_loop_counts_the_wait_for_a_busy_server_as_latency() -> None:
    # One connection, a request due every 10 ms, an answer every 25 ms: the
    # backlog grows, and each request's latency counts from when it was due.
    result = await run_against_slow_server(0.025, rate=100, seconds=0.3, pool=1, drain=3.0)
    assert result["answered"] == result["sent"] == 30
    latencies = result["ok_latency_ms"]
    # The last requests waited behind the others: about 30 * 25 - 300 = 450 ms.
    assert latencies["max"] > 300
    assert latencies["p50"] > 100
    # The generator itself kept to its schedule whenever it had a free connection.
    assert result["lag_ms"]["max"] < 50


async def test_open_loop_reports_what_is_left_unanswered_after_the_drain() -> None:
    result = await run_against_slow_server(0.2, rate=50, seconds=0.2, pool=2, drain=0.3)
    assert result["sent"] == 10
    assert result["answered"] + result["unanswered"] == 10
    assert result["unanswered"] > 0


# --- the charts' input ------------------------------------------------------------------


def payload() -> dict[str, Any]:
    def wrk_server(name: str, rps: float) -> dict[str, Any]:
        return {
            "name": name,
            "status": "ok",
            "versions": {"h11": "0.16.0"},
            "requests_per_sec": rps,
            "p50_ms": 1.0,
            "p99_ms": 5.0,
            "p999_ms": 9.0,
        }

    failed = {"name": "granian", "status": "failed", "reason": "did not start", "versions": {}}
    per_second = [{"second": 0, "ok_p99_ms": 12.5, "ok": 10, "refused": 3}]
    answered = [{"second": 0, "ok": 9, "refused": 3, "other": 0}]
    overload = {
        "name": "aserve-limited",
        "status": "ok",
        "versions": {},
        "primary": 12.5,
        "median": {
            "per_second": per_second,
            "answered_per_second": answered,
            "rss_samples": [[-0.2, 2 * plot.MIB, 1.0], [0.1, 3 * plot.MIB, 1.2]],
            "offered_rps": 20.0,
            "capacity_rps": 10.0,
        },
    }
    return {
        "date": "2026-11-30T09:00:00+0000",
        "machine": {"cpus": 2, "kernel": "6.18", "python": "3.11.7", "aserve": "abc1234"},
        "settings": {"repeat": 3, "duration_s": 5, "pinning": "server on CPU 0"},
        "groups": [
            {
                "group": "scale",
                "title": "t",
                "cases": [
                    {
                        "case": "c64",
                        "kind": "wrk",
                        "connections": 64,
                        "servers": [wrk_server("aserve", 6000), wrk_server("uvicorn-h11", 4000)],
                    },
                    {
                        "case": "c1000",
                        "kind": "wrk",
                        "connections": 1000,
                        "servers": [wrk_server("aserve", 5000), failed],
                    },
                ],
            },
            {
                "group": "overload",
                "title": "o",
                "cases": [{"case": "work", "kind": "OverloadRun", "servers": [overload]}],
            },
        ],
    }


def test_charts_read_the_figures_of_the_servers_that_ran_only(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(payload()))
    found = plot.load_groups([path])
    scale = found["scale"]
    assert plot.series_rps(scale) == {
        "c64": {"aserve": 6000, "uvicorn-h11": 4000},
        "c1000": {"aserve": 5000},
    }
    assert plot.series_latency(scale)["c1000"] == {"aserve": (1.0, 5.0, 9.0)}
    assert plot.missing(scale) == ["granian (failed)"]
    caption = plot.caption(scale)
    assert "2026-11-30 09:00" in caption and "aserve abc1234" in caption
    assert "not measured: granian (failed)" in caption
    series = plot.series_overload(found["overload"])["aserve-limited"]
    assert series.ok_p99_ms == [12.5]
    assert (series.ok_per_s, series.refused_per_s) == ([9], [3])
    assert series.rss == [(-0.2, 2.0), (0.1, 3.0)]
