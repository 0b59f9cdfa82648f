"""The ``websocket`` group's measurements (run.py hands them over through
scenarios.py, as it does every load that is not a wrk loop).

- ``WebSocketEchoLoad``: wsload.py pinned to the client CPU (wrk speaks no
  WebSocket), C connections each echoing a 64-byte text message as fast as
  the server answers, after a warm-up run of its own; round trips per second,
  the server's CPU time per round trip, and latency percentiles.
- ``WebSocketIdleLoad``: memory.py's measurement with WebSocket sessions in
  place of keep-alive connections: warm up, let RSS settle, open N sessions
  (each upgraded and one message echoed), let RSS settle again; the RSS they
  added, per session. Its record is scenarios.py's ``IdleRun``.

Every server is checked first with one session that echoes one message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import harness
import memory
import wsload
from groups import Case, ServerSpec, WebSocketEchoLoad, WebSocketIdleLoad

WS_LOADS = (WebSocketEchoLoad, WebSocketIdleLoad)


@dataclass
class EchoRun:
    HEADERS: ClassVar[tuple[str, ...]] = (
        "round trips/s",
        "CPU µs/round trip",
        "p50",
        "p99",
        "server CPU",
        "client CPU",
    )
    METRIC: ClassVar[str] = "round trips/s"
    HIGHER_IS_BETTER: ClassVar[bool] = True

    round_trips: int
    seconds: float
    per_sec: float
    p50_ms: float
    p99_ms: float
    connections: int
    server_cpu_s: float
    client_cpu: float
    other_load: float

    @property
    def primary(self) -> float:
        return self.per_sec

    @property
    def cpu_us(self) -> float:
        return self.server_cpu_s / self.round_trips * 1e6 if self.round_trips else 0.0

    def cells(self) -> list[str]:
        return [
            f"{self.per_sec:,.0f}",
            f"{self.cpu_us:.1f}",
            f"{self.p50_ms:.2f} ms",
            f"{self.p99_ms:.2f} ms",
            f"{self.server_cpu_s / self.seconds:.0%}" if self.seconds else "-",
            f"{self.client_cpu:.0%}",
        ]

    def warnings(self) -> list[str]:
        if self.client_cpu > 0.9:
            return [f"the client used {self.client_cpu:.0%} of its CPU: it may be the limit"]
        return []


def run_type(load: object) -> Any:
    if isinstance(load, WebSocketIdleLoad):
        from scenarios import IdleRun

        return IdleRun
    return EchoRun


def check(server: harness.RunningServer, case: Case, python: str) -> None:
    proc = subprocess.run(
        [python, str(harness.BENCH_DIR / "wsload.py"), "check", str(server.port)]
        + ["--path", case.path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {"ok": False, "problem": proc.stderr.strip()[-300:]}
    if not result.get("ok"):
        tail = server.log_tail(4)
        raise harness.ServerError(
            f"WebSocket echo on {case.path} failed: {result.get('problem')}"
            + (f"; server log: {tail}" if tail else "")
        )


def _load(
    python: str, port: int, path: str, connections: int, seconds: float, cpu: int | None
) -> tuple[dict[str, Any], float]:
    """One wsload.py run: its report and its CPU time over its wall time."""
    argv = [*harness.taskset_prefix(cpu), python, str(harness.BENCH_DIR / "wsload.py"), "run"]
    argv += [str(port), "--path", path, "--connections", str(connections)]
    argv += ["--duration", str(seconds)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = {"problem": proc.stderr.strip()[-300:]}
    if proc.returncode != 0 or "round_trips" not in report:
        raise harness.ServerError(f"wsload failed: {report.get('problem')}")
    return report, round(used / wall, 3) if wall else 0.0


def measure(
    spec: ServerSpec,
    case: Case,
    args: argparse.Namespace,
    python: str,
    server_cpu: int | None,
    client_cpu: int | None,
) -> Any:
    """Start the server, check it, measure ``case`` once, stop it."""
    from scenarios import Meter

    load = case.load
    with harness.RunningServer(spec, python, cpu=server_cpu, env=dict(case.env)) as server:
        server.wait_ready()
        check(server, case, python)
        if isinstance(load, WebSocketIdleLoad):
            run = measure_idle(server, case, load, args)
        else:
            assert isinstance(load, WebSocketEchoLoad)
            connections = load.connections
            if args.warmup:
                _load(python, server.port, case.path, connections, args.warmup, client_cpu)
            if getattr(args, "wait_idle", 0):
                from run import wait_idle  # run.py's: a quiet second before measuring

                wait_idle(server.pid, args.wait_idle)
            meter = Meter(server.pid)
            report, client = _load(
                python, server.port, case.path, connections, args.duration, client_cpu
            )
            _, server_cpu_s, other = meter.stop()
            run = EchoRun(
                round_trips=report["round_trips"],
                seconds=report["seconds"],
                per_sec=report["per_sec"],
                p50_ms=report["p50_ms"],
                p99_ms=report["p99_ms"],
                connections=connections,
                server_cpu_s=round(server_cpu_s, 3),
                client_cpu=client,
                other_load=other,
            )
        if server.proc.poll() is not None:
            raise harness.ServerError(f"died during the run: {server.log_tail()}")
    return run


def measure_idle(
    server: harness.RunningServer, case: Case, load: WebSocketIdleLoad, args: argparse.Namespace
) -> Any:
    from scenarios import IdleRun, Meter

    count = args.idle_connections or load.connections
    meter = Meter(server.pid)
    result = asyncio.run(_hold(server, case.path, count))
    _, _, other = meter.stop()
    return IdleRun(
        connections=count,
        rss_before=result["rss_before"],
        rss_after=result["rss_after"],
        bytes_per_connection=round(result["bytes_per_connection"], 1),
        sockets_held=result["sockets_held"],
        open_seconds=result["open_seconds"],
        other_load=other,
    )


async def _hold(server: harness.RunningServer, path: str, count: int) -> dict[str, Any]:
    pid = server.pid
    await wsload.warm_up(server.port, path, 8, 250)
    await asyncio.sleep(0.5)
    before = await memory.settled_rss(pid, 15.0)
    sockets_before = harness.tree_socket_count(pid)
    started = time.monotonic()
    sessions = await wsload.open_sessions(server.port, path, count, 100)
    open_seconds = time.monotonic() - started
    try:
        after = await memory.settled_rss(pid, 15.0)
        held = harness.tree_socket_count(pid) - sockets_before
    finally:
        wsload.close_sessions(sessions)
        await asyncio.sleep(0.5)
    return {
        "rss_before": before,
        "rss_after": after,
        "bytes_per_connection": (after - before) / count,
        "sockets_held": held,
        "open_seconds": round(open_seconds, 2),
    }
