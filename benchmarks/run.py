"""Throughput benchmark: aserve against its peers and the bare-h11 floor, measured with wrk.

For each server in turn: start it pinned to one CPU, wait for its port, check
one reply, warm it up, run ``wrk -t1 -c<C> -d<D>s --latency`` pinned to another
CPU, read requests/s and p99 latency, stop it. With ``--repeat N`` that is done
in N rounds over all servers and each server's median run is kept. Prints a
table with ratios against ``uvicorn-h11`` and ``bare-h11`` and writes it as
JSON to ``benchmarks/results/``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import harness

#: Other processes using more than this fraction of a CPU during a run get a warning.
BUSY_THRESHOLD = 0.1
#: A spread of calibration times above this (max/min - 1) gets a warning.
SPEED_THRESHOLD = 0.15

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkRun:
    requests_per_sec: float
    p99_ms: float
    requests: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    #: CPU used by other processes during the run, as a fraction of one CPU.
    other_load: float = 0.0
    #: harness.calibration_ms() on the server's CPU, mean of before and after the run.
    calibration_ms: float = 0.0


class WrkError(Exception):
    """wrk failed or printed something we could not read."""


def parse_wrk(output: str) -> WrkRun:
    """Read requests/s, p99 latency and error counts from ``wrk --latency`` output."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\b", output, re.M)
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    if not (rps and p99 and total):
        raise WrkError("could not parse wrk output:\n" + output)
    run = WrkRun(
        requests_per_sec=float(rps.group(1)),
        p99_ms=float(p99.group(1)) * _UNITS_MS[p99.group(2)],
        requests=int(total.group(1)),
    )
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if errors:
        keys = ("connect", "read", "write", "timeout")
        run.socket_errors = {k: int(v) for k, v in zip(keys, errors.groups(), strict=True)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        run.non_2xx = int(non_2xx.group(1))
    return run


def wrk(port: int, connections: int, duration: float, cpu: int | None) -> WrkRun:
    argv = [
        *harness.taskset_prefix(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "--latency",
        f"http://{harness.HOST}:{port}/",
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration + 60:.0f} s") from exc
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}: {proc.stderr.strip()}")
    return parse_wrk(proc.stdout)


def wrk_version() -> str:
    proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def median_run(runs: list[WrkRun]) -> WrkRun:
    """The run with the median requests/s (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.requests_per_sec)
    return ordered[(len(ordered) - 1) // 2]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up load (3)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="wrk runs per server; the median run by requests/s is reported (1)",
    )
    parser.add_argument("--only", help="comma-separated server names, e.g. aserve,bare-h11")
    parser.add_argument(
        "--python",
        default=None,
        help="interpreter for the servers (benchmarks/.venv/bin/python if it exists, "
        "else this one)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for the server (0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU for wrk (1)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before each run, wait up to S seconds for other processes to go quiet (0: off)",
    )
    parser.add_argument("--no-json", action="store_true", help="do not write results JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.duration < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--repeat, --duration and --connections must be positive, --warmup >= 0")
    return args


def measure_once(spec: harness.ServerSpec, args: argparse.Namespace, python: str) -> WrkRun:
    """Start the server, check it, warm it up, run wrk once, stop it."""
    server_cpu = None if args.no_pin else args.server_cpu
    client_cpu = None if args.no_pin else args.client_cpu
    with harness.RunningServer(spec, python, cpu=server_cpu) as server:
        server.wait_ready()
        server.check_reply()
        if args.warmup:
            wrk(server.port, args.connections, args.warmup, client_cpu)
        if args.wait_idle:
            wait_idle(server.pid, args.wait_idle)
        speed_before = harness.calibration_ms(server_cpu)
        load = harness.OtherLoad(server.pid)
        run = wrk(server.port, args.connections, args.duration, client_cpu)
        run.other_load = round(load.fraction(), 3)
        run.calibration_ms = round((speed_before + harness.calibration_ms(server_cpu)) / 2, 1)
        if server.proc.poll() is not None:
            raise harness.ServerError(f"died during the run: {server.log_tail()}")
    return run


def summarize(result: dict[str, Any], runs: list[WrkRun]) -> None:
    """Fill a server's result from its runs: the median run, and warnings."""
    best = median_run(runs)
    result.update(
        requests_per_sec=best.requests_per_sec,
        p99_ms=best.p99_ms,
        runs=[asdict(r) for r in runs],
    )
    warnings = []
    errors = sum(best.socket_errors.values()) + best.non_2xx
    if errors:
        warnings.append(f"{errors} socket errors or non-2xx responses")
    busiest = max(r.other_load for r in runs)
    if busiest > BUSY_THRESHOLD:
        warnings.append(
            f"other processes used up to {busiest:.0%} of a CPU during a run; figures are noisy"
        )
    if warnings:
        result["warning"] = "; ".join(warnings)


def wait_idle(server_pid: int, most: float) -> None:
    """Wait up to ``most`` seconds for one second in which other processes stay quiet."""
    deadline = time.monotonic() + most
    while True:
        load = harness.OtherLoad(server_pid)
        time.sleep(1.0)
        busy = load.fraction()
        if busy <= BUSY_THRESHOLD:
            return
        if time.monotonic() >= deadline:
            log(f"  machine still busy ({busy:.0%} of a CPU), measuring anyway")
            return


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = harness.select(args.only)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: install it (Debian/Ubuntu: apt-get install -y wrk)")
    if not args.no_pin:
        cpus = os.sched_getaffinity(0)
        if args.server_cpu not in cpus or args.client_cpu not in cpus:
            raise SystemExit(
                f"CPUs {args.server_cpu} and {args.client_cpu} are not both available "
                f"(have {sorted(cpus)}); pass --server-cpu/--client-cpu or --no-pin"
            )
    python = harness.choose_python(args.python)
    pinning = (
        "none" if args.no_pin else f"server on CPU {args.server_cpu}, wrk on CPU {args.client_cpu}"
    )
    log(
        f"servers run with {python}; {args.connections} connections, {args.duration} s x "
        f"{args.repeat}, warm-up {args.warmup} s; pinning: {pinning}"
    )

    results: list[dict[str, Any]] = []
    for spec in specs:
        available = harness.check_available(spec, python)
        result: dict[str, Any] = {
            "name": spec.name,
            "description": spec.description,
            "versions": available.versions,
            "status": "ok" if available.ok else "skipped",
        }
        if not available.ok:
            result["reason"] = available.reason
            log(f"{spec.name}: skipped: {available.reason}")
        results.append(result)

    # Each round starts every server afresh, so slow spells of the machine are
    # spread over all servers instead of falling on one.
    runs: dict[str, list[WrkRun]] = {r["name"]: [] for r in results}
    for round_no in range(1, args.repeat + 1):
        for spec, result in zip(specs, results, strict=True):
            if result["status"] != "ok":
                continue
            try:
                run = measure_once(spec, args, python)
            except (harness.ServerError, WrkError) as exc:
                result.update(status="failed", reason=str(exc))
                log(f"{spec.name}: failed: {exc}")
                continue
            finally:
                time.sleep(1)  # let the previous server's sockets go
            runs[spec.name].append(run)
            log(
                f"{spec.name} run {round_no}/{args.repeat}: {run.requests_per_sec:,.0f} req/s, "
                f"p99 {run.p99_ms:.2f} ms, other load {run.other_load:.0%} of a CPU, "
                f"calibration {run.calibration_ms:.0f} ms"
            )
    for result in results:
        if result["status"] == "ok":
            summarize(result, runs[result["name"]])

    speeds = [r.calibration_ms for name_runs in runs.values() for r in name_runs]
    speed_spread = max(speeds) / min(speeds) - 1 if speeds else 0.0

    rps = {r["name"]: r.get("requests_per_sec") for r in results}
    for r in results:
        r["vs_uvicorn_h11"] = ratio(r.get("requests_per_sec"), rps.get("uvicorn-h11"))
        r["vs_bare_h11"] = ratio(r.get("requests_per_sec"), rps.get("bare-h11"))

    rows = []
    for r in results:
        if r["status"] == "ok":
            rows.append(
                [
                    r["name"],
                    f"{r['requests_per_sec']:,.0f}",
                    f"{r['p99_ms']:.2f} ms",
                    f"{r['vs_uvicorn_h11']:.2f}x" if r["vs_uvicorn_h11"] else "-",
                    f"{r['vs_bare_h11']:.2f}x" if r["vs_bare_h11"] else "-",
                ]
            )
        else:
            rows.append([r["name"], r["status"], "-", "-", "-"])
    print()
    harness.print_table(["server", "requests/s", "p99", "vs uvicorn-h11", "vs bare-h11"], rows)
    for r in results:
        if r["status"] != "ok":
            print(f"{r['name']}: {r['status']}: {r['reason']}")
        elif "warning" in r:
            print(f"{r['name']}: warning: {r['warning']}")
    if speed_spread > SPEED_THRESHOLD:
        print(
            f"warning: the calibration loop ran {speed_spread:.0%} slower at worst than at best "
            "during this benchmark: the machine's CPU speed varied, figures are noisy "
            "(compare runs with similar calibration, or use --repeat)"
        )

    if not args.no_json:
        payload = {
            "benchmark": "throughput",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {
                "duration_s": args.duration,
                "connections": args.connections,
                "warmup_s": args.warmup,
                "repeat": args.repeat,
                "statistic": "median run by requests/s",
                "calibration_spread": round(speed_spread, 3),
                "pinning": pinning,
            },
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": subprocess.run(
                    [python, "-c", "import sys; print(sys.version.split()[0])"],
                    capture_output=True,
                    text=True,
                ).stdout.strip(),
                "wrk": wrk_version(),
            },
            "servers": results,
        }
        path = harness.write_json("throughput", payload)
        print(f"\nresults written to {path.relative_to(harness.PROJECT_ROOT)}")
    return 0 if any(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
