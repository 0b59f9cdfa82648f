"""Throughput and CPU cost per request: aserve against its peers, group by group, with wrk.

Each group (see groups.py) compares a few servers on the same request. For
each server and request in turn: start the server pinned to one CPU, wait for
its port, check one reply, warm it up, run ``wrk -t1 -c<C> -d<D>s --latency``
pinned to another CPU, and read requests/s, p99 latency, transfer/s, and the
CPU time the server's processes used per completed request; stop it. A group
of servers with several processes (``workers``) pins neither side. HTTPS
servers (``tls``) get a certificate made once per run, and wrk asks for
``https://``. With
``--repeat N`` that is done in N rounds over all of them and the medians are
kept. Prints one table per group and request with ratios inside the group and
the group's targets as pass/fail, and writes it all as JSON to
``benchmarks/results/``. A case may set its own wrk connections, timeout and
pipelining, with a Lua script from wrkscript.py for percentiles up to 99.9%;
cases that are not a wrk loop (an open-loop overload, large bodies, idle
connections, start-up) are measured by scenarios.py within the same rounds.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import groups
import harness
import scenarios
import wrkscript
from groups import Case, Goal, Group, ServerSpec, Target, WrkLoad

#: Other processes using more than this fraction of a CPU during a run get a warning.
BUSY_THRESHOLD = 0.1
#: A spread of calibration times above this (max/min - 1) gets a warning.
SPEED_THRESHOLD = 0.15

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
#: wrk prints sizes in binary units (its "MB" is 2**20 bytes).
_UNITS_BYTES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
MIB = 2**20


@dataclass
class WrkRun:
    requests_per_sec: float
    p99_ms: float
    requests: int
    #: wrk's Transfer/sec (response heads and bodies), in bytes per second.
    transfer_per_sec: float
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    #: CPU time (user + system) of the server's processes per completed request.
    cpu_us_per_request: float = 0.0
    #: The same CPU time as a fraction of the run's wall time (1.0: one CPU busy).
    server_cpu: float = 0.0
    #: CPU used by everything but the server and wrk during the run (other
    #: processes, short-lived ones included), as a fraction of one CPU.
    other_load: float = 0.0
    #: harness.calibration_ms() on the server's CPU, mean of before and after the run.
    calibration_ms: float = 0.0
    #: For a server of several processes: each one's CPU time over the run's wall
    #: time, by process ID (the supervisor first); empty for one process.
    process_cpu: list[float] = field(default_factory=list)
    #: wrk's CPU time over the run's wall time (it shares the CPUs when not pinned).
    client_cpu: float = 0.0
    #: Time all CPUs spent idle, and time the hypervisor took from them, over the
    #: run's wall time, in CPUs (2.0: both CPUs of this machine all the time).
    idle_cpus: float = 0.0
    steal_cpus: float = 0.0
    #: From wrkscript.py's report (cases with ``percentiles``): latency
    #: percentiles in ms, and errors by kind (``status``: answers >= 400).
    p50_ms: float | None = None
    p90_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    #: Requests/s over what the connections could do if the handler's wait were
    #: all a request cost (``WrkLoad.wait_s``), when the case has one.
    of_ideal: float | None = None
    #: False when wrk's latency figures (p99_ms too) mean nothing: pipelining.
    latency_valid: bool = True

    @property
    def primary(self) -> float:
        return self.requests_per_sec

    def errors(self) -> int:
        """Socket errors (timeouts included) and non-2xx/3xx answers."""
        found = sum(v for k, v in self.socket_errors.items() if k != "status")
        return found + self.non_2xx


class WrkError(Exception):
    """wrk failed or printed something we could not read."""


def parse_wrk(output: str) -> WrkRun:
    """Read requests/s, p99 latency, transfer/s and error counts from ``wrk --latency``."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\b", output, re.M)
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    transfer = re.search(r"^Transfer/sec:\s+([\d.]+)([KMGT]?)B\b", output, re.M)
    if not (rps and p99 and total and transfer):
        raise WrkError("could not parse wrk output:\n" + output)
    run = WrkRun(
        requests_per_sec=float(rps.group(1)),
        p99_ms=float(p99.group(1)) * _UNITS_MS[p99.group(2)],
        requests=int(total.group(1)),
        transfer_per_sec=float(transfer.group(1)) * _UNITS_BYTES[transfer.group(2)],
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
    report = wrkscript.parse_report(output)
    if report:
        run.p50_ms = report["p50_us"] / 1000
        run.p90_ms = report["p90_us"] / 1000
        run.p99_ms = report["p99_us"] / 1000
        run.p999_ms = report["p999_us"] / 1000
        run.max_ms = report["max_us"] / 1000
        kinds = ("connect", "read", "write", "timeout", "status")
        run.socket_errors = {k: int(report[k]) for k in kinds}
    return run


def wrk(
    url: str,
    connections: int,
    duration: float,
    cpu: int | None,
    headers: tuple[tuple[str, str], ...] = (),
    timeout_s: float | None = None,
    script: str | None = None,
) -> WrkRun:
    """One ``wrk -t1`` run; ``script`` is the text of a Lua script (wrkscript.py)."""
    script_file = None
    if script is not None:
        script_file = tempfile.NamedTemporaryFile(
            "w", prefix="aserve-bench-", suffix=".lua", delete=False
        )
        with script_file:
            script_file.write(script)
    argv = [
        *harness.taskset_prefix(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "--latency",
        *([f"--timeout={timeout_s:g}s"] if timeout_s is not None else []),
        *(["-s", script_file.name] if script_file else []),
        *(arg for name, value in headers for arg in ("-H", f"{name}: {value}")),
        url,
    ]
    try:
        return _run_wrk(argv, duration)
    finally:
        if script_file is not None:
            os.unlink(script_file.name)


def _run_wrk(argv: list[str], duration: float) -> WrkRun:
    # wrk is the only child this process reaps while it runs (servers outlive it).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration + 60:.0f} s") from exc
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}: {proc.stderr.strip()}")
    run = parse_wrk(proc.stdout)
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    run.client_cpu = round(used / wall, 3)
    return run


def wrk_version() -> str:
    proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0] if text else "unknown"


@dataclass
class Unit:
    """One server on one request: what each round starts and measures once.

    A server that serves the same request in two groups (uvicorn on the raw
    ASGI app is in ``hello`` and ``asgi``) is one unit, measured once a round.
    """

    spec: ServerSpec
    case: Case
    #: Server and wrk each on their own CPU (the group's choice, unless --no-pin).
    pinned: bool = True
    status: str = "ok"
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    #: The TLS version and cipher the server chose for the reply check, and
    #: whether it resumed a session on a second connection.
    tls_session: str = ""
    #: WrkRun for a wrk case, else the case's run record from scenarios.py.
    runs: list[Any] = field(default_factory=list)

    @property
    def label(self) -> str:
        words = [self.spec.module, *self.spec.args, self.spec.scheme, self.case.path]
        words += [f"{name}: {value}" for name, value in self.case.headers]
        load = self.case.load
        if isinstance(load, WrkLoad):
            if load.connections is not None:
                words.append(f"c{load.connections}")
            if load.pipeline > 1:
                words.append(f"pipeline {load.pipeline}")
        else:
            words.append(self.case.name)
        return " ".join(words + ([] if self.pinned else ["unpinned"]))

    @property
    def wrk(self) -> bool:
        return isinstance(self.case.load, WrkLoad)

    def median_run(self) -> Any:
        """The run with the median primary figure (requests/s for wrk; the lower
        middle one of an even count, by the figure's order of goodness)."""
        higher = getattr(self.runs[0], "HIGHER_IS_BETTER", True)
        ordered = sorted(self.runs, key=lambda r: r.primary if higher else -r.primary)
        return ordered[(len(ordered) - 1) // 2]

    def cpu_us(self) -> float:
        """The median of the runs' CPU µs per request (the lower middle one)."""
        return statistics.median_low(r.cpu_us_per_request for r in self.runs)

    def warnings(self) -> list[str]:
        found = []
        run = self.median_run()
        if not self.wrk:
            found += run.warnings()
        elif run.errors():
            found.append(f"{run.errors():,} socket errors or non-2xx responses in the median run")
        busiest = max(r.other_load for r in self.runs)
        if busiest > BUSY_THRESHOLD:
            found.append(
                f"other processes used up to {busiest:.0%} of a CPU during a run; figures are noisy"
            )
        return found


def plan(selected: Iterable[Group]) -> dict[tuple[str, ...], Unit]:
    """Every server-and-request of the selected groups, once, in the order they appear
    (a case's ``not_for`` servers left out)."""
    units: dict[tuple[str, ...], Unit] = {}
    for group in selected:
        for case in group.cases:
            for spec in group.servers:
                if spec.name in case.not_for:
                    continue
                units.setdefault(unit_key(spec, case, group), Unit(spec, case, group.pinned))
    return units


def unit_key(spec: ServerSpec, case: Case, group: Group) -> tuple[str, ...]:
    """What one run starts and measures: the same key in two groups is one unit."""
    headers = tuple(f"{name}: {value}" for name, value in case.headers)
    load = repr(case.load) if not isinstance(case.load, WrkLoad) or case.load != WrkLoad() else ""
    env = tuple(f"{name}={value}" for name, value in case.env)
    pinned = () if group.pinned else ("unpinned",)
    return (*spec.key, case.path, *headers, load, *env, *pinned)


def case_connections(case: Case, args: argparse.Namespace) -> int:
    load = case.load
    if isinstance(load, WrkLoad) and load.connections is not None:
        return load.connections
    return int(args.connections)


def wrk_script(case: Case, port: int) -> str | None:
    """The Lua script of a case's wrk runs (wrkscript.py), or None for plain wrk."""
    load = case.load
    if not isinstance(load, WrkLoad):
        return None
    if load.pipeline > 1:
        host = f"{harness.HOST}:{port}"
        return wrkscript.pipeline_script(case.path, host, load.pipeline, case.headers)
    return wrkscript.script() if load.percentiles else None


def measure_once(
    unit: Unit, args: argparse.Namespace, python: str, certificate: harness.Certificate | None
) -> Any:
    """Start the server, check it, warm it up, run wrk once, stop it; for a case
    that is not a wrk loop, scenarios.measure() does it in its own way."""
    pin = unit.pinned and not args.no_pin
    server_cpu = args.server_cpu if pin else None
    client_cpu = args.client_cpu if pin else None
    case, spec = unit.case, unit.spec
    if not unit.wrk:
        return scenarios.measure(spec, case, args, python, server_cpu, client_cpu, wrk)
    load = case.load
    assert isinstance(load, WrkLoad)
    connections = case_connections(case, args)
    env = dict(case.env)
    if spec.tls and certificate:
        env.update(certificate.env())
    with harness.RunningServer(spec, python, cpu=server_cpu, env=env) as server:
        server.wait_ready()
        unit.tls_session = server.check_reply(case, tls=spec.tls)
        if spec.tls:
            resumes = server.resumes_tls(case)
            unit.tls_session += ", resumes sessions" if resumes else ", no resumption"
        url = f"{spec.scheme}://{harness.HOST}:{server.port}{case.path}"
        script = wrk_script(case, server.port)
        if args.warmup:
            wrk(url, connections, args.warmup, client_cpu, case.headers, load.timeout_s, script)
        if args.wait_idle:
            wait_idle(server.pid, args.wait_idle)
        speed_before = harness.calibration_ms(server_cpu)
        cpu_before = harness.tree_cpu_seconds(server.pid)
        processes_before = harness.process_cpu_seconds(server.pid)
        machine_before = harness.machine_cpu_seconds()
        started = time.monotonic()
        run = wrk(url, connections, args.duration, client_cpu, case.headers, load.timeout_s, script)
        cpu_used = harness.tree_cpu_seconds(server.pid) - cpu_before
        processes_after = harness.process_cpu_seconds(server.pid)
        machine_after = harness.machine_cpu_seconds()
        wall = time.monotonic() - started
        busy, idle, steal = (b - a for a, b in zip(machine_before, machine_after, strict=True))
        others = busy - cpu_used - run.client_cpu * wall
        run.other_load = round(max(0.0, others / wall), 3)
        run.idle_cpus = round(idle / wall, 3)
        run.steal_cpus = round(steal / wall, 3)
        if len(processes_after) > 1:
            run.process_cpu = [
                round((seconds - processes_before.get(key, 0.0)) / wall, 3)
                for key, seconds in sorted(processes_after.items())
            ]
        run.calibration_ms = round((speed_before + harness.calibration_ms(server_cpu)) / 2, 1)
        if server.proc.poll() is not None:
            raise harness.ServerError(f"died during the run: {server.log_tail()}")
    if run.requests == 0:
        raise WrkError("wrk completed no requests")
    run.cpu_us_per_request = round(cpu_used / run.requests * 1e6, 2)
    run.server_cpu = round(cpu_used / wall, 3)
    if load.wait_s:
        run.of_ideal = round(run.requests_per_sec / (connections / load.wait_s), 4)
    if load.pipeline > 1:
        # wrk corrects its latencies for coordinated omission assuming one
        # request per latency sample; with a batch per sample the correction
        # lands below the histogram's minimum and its percentiles come out as
        # 0 (or as whatever part of the histogram it still reaches). None then.
        run.p50_ms = run.p90_ms = run.p999_ms = run.max_ms = None
        run.latency_valid = False
    return run


def wait_idle(server_pid: int, most: float) -> None:
    """Wait up to ``most`` seconds for one second in which other processes stay quiet."""
    deadline = time.monotonic() + most
    while True:
        machine_before = harness.machine_cpu_seconds()[0]
        server_before = harness.tree_cpu_seconds(server_pid)
        started = time.monotonic()
        time.sleep(1.0)
        server = harness.tree_cpu_seconds(server_pid) - server_before
        machine = harness.machine_cpu_seconds()[0] - machine_before
        busy = max(0.0, machine - server) / (time.monotonic() - started)
        if busy <= BUSY_THRESHOLD:
            return
        if time.monotonic() >= deadline:
            log(f"  machine still busy ({busy:.0%} of a CPU), measuring anyway")
            return


def run_rounds(
    units: dict[tuple[str, ...], Unit],
    args: argparse.Namespace,
    python: str,
    certificate: harness.Certificate | None,
) -> None:
    """Measure every available unit once per round, ``args.repeat`` rounds.

    Each round starts every server afresh, so slow spells of the machine are
    spread over all servers instead of falling on one.
    """
    for round_no in range(1, args.repeat + 1):
        for unit in units.values():
            if unit.status != "ok":
                continue
            try:
                run = measure_once(unit, args, python, certificate)
            except (harness.ServerError, WrkError, OSError) as exc:
                unit.status, unit.reason = "failed", str(exc) or repr(exc)
                log(f"{unit.label}: failed: {unit.reason}")
                continue
            finally:
                time.sleep(1)  # let the previous server's sockets go
            unit.runs.append(run)
            if not unit.wrk:
                figures = ", ".join(
                    f"{h} {c}" for h, c in zip(run.HEADERS, run.cells(), strict=True)
                )
                log(
                    f"round {round_no}/{args.repeat} {unit.label}: {figures}, "
                    f"other load {run.other_load:.0%}"
                )
                continue
            log(
                f"round {round_no}/{args.repeat} {unit.label}: "
                f"{run.cpu_us_per_request:.1f} µs CPU/request "
                f"({run.server_cpu:.0%} of a CPU), {run.requests_per_sec:,.0f} req/s, "
                f"p99 {_ms(run.p99_ms) if run.latency_valid else '-'}"
                + (f", {run.errors():,} errors" if run.errors() else "")
                + f", other load {run.other_load:.0%}, "
                f"calibration {run.calibration_ms:.0f} ms, wrk {run.client_cpu:.0%} of a CPU, "
                f"idle {run.idle_cpus:.0%}, stolen {run.steal_cpus:.0%}"
                + (
                    f", by process {'/'.join(f'{p:.0%}' for p in run.process_cpu)}"
                    if run.process_cpu
                    else ""
                )
            )


# --- reporting ----------------------------------------------------------------------------

LEGEND = """
CPU µs/req: user + system CPU time of the server's processes per completed request
  (median of the rounds); "CPU vs X" is that over X's: lower is better.
requests/s, p99, server CPU (its CPU time over the run's wall time), MiB/s: from the
  median run by requests/s; "req/s vs X" is requests/s over X's: higher is better.
  Groups whose servers and wrk share the CPUs (not pinned) add wrk CPU and idle CPU
  (what all CPUs left unused) from that run; all in CPUs (100%: one CPU busy).
Targets "A >= Fx B" are judged both ways: B's CPU µs/req over A's, and A's requests/s
  over B's, each must be at least F. "A over B" lines are the same ratios, no target."""


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


@dataclass
class Row:
    """One server's figures on one request, as its group reports them."""

    spec: ServerSpec
    unit: Unit

    @property
    def ok(self) -> bool:
        return self.unit.status == "ok"

    def cpu_us(self) -> float | None:
        return self.unit.cpu_us() if self.ok else None

    def rps(self) -> float | None:
        return self.unit.median_run().requests_per_sec if self.ok else None


def compare(
    server_name: str,
    reference_name: str,
    rows: dict[str, Row],
    reference_rows: dict[str, Row] | None = None,
) -> dict[str, Any]:
    """``server`` over ``reference`` three ways, higher meaning ``server`` does more:
    ``cpu`` (the reference's CPU µs/request over the server's), ``rps`` (requests/s
    over requests/s) and ``rounds`` (the median of ``per_round``, requests/s over
    requests/s within each round). The reference comes from ``reference_rows``
    when given (another case of the group), else from ``rows``."""
    server = rows.get(server_name)
    reference = (rows if reference_rows is None else reference_rows).get(reference_name)
    result: dict[str, Any] = {}
    for metric, get, invert in (("cpu", Row.cpu_us, True), ("rps", Row.rps, False)):
        a = get(server) if server else None
        b = get(reference) if reference else None
        value = ratio(b, a) if invert else ratio(a, b)
        result[metric] = None if value is None else round(value, 3)
    # Both servers ran in each round, minutes apart at most: the ratio inside a
    # round is less exposed to this VM's drifting speed than a ratio of medians.
    per_round = round_ratios(server, reference) if server and reference else []
    result["per_round"] = [round(v, 3) for v in per_round]
    result["rounds"] = round(statistics.median(per_round), 3) if per_round else None
    return result


def judge(
    target: Target, rows: dict[str, Row], reference_rows: dict[str, Row] | None = None
) -> dict[str, Any]:
    """A target's ratios by CPU/request and by requests/s, and whether each meets it."""
    result: dict[str, Any] = {"target": str(target), "factor": target.factor}
    result.update(compare(target.server, target.reference, rows, reference_rows))
    for metric in ("cpu", "rps", "rounds"):
        value = result[metric]
        result[f"{metric}_pass"] = None if value is None else value >= target.factor
    return result


def judge_goal(goal: Goal, rows: dict[str, Row]) -> dict[str, Any]:
    """A goal's figure from the server's median run, and whether it is within bounds."""
    row = rows.get(goal.server)
    value = getattr(row.unit.median_run(), goal.figure) if row and row.ok else None
    return {
        "goal": str(goal),
        "value": value,
        "at_most": goal.at_most,
        "pass": None if value is None else value <= goal.at_most,
    }


def round_ratios(server: Row, reference: Row) -> list[float]:
    """server/reference requests/s within each round."""
    if not (server.ok and reference.ok):
        return []
    return [
        a.requests_per_sec / b.requests_per_sec
        for a, b in zip(server.unit.runs, reference.unit.runs, strict=False)
        if b.requests_per_sec
    ]


def verdict(value: float | None, passed: bool | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:.2f}x {'pass' if passed else 'FAIL'}"


def case_rows(group: Group, case: Case, units: dict[tuple[str, ...], Unit]) -> dict[str, Row]:
    """The group's servers on ``case`` (those the case is not for left out)."""
    rows = {}
    for spec in group.servers:
        key = unit_key(spec, case, group)
        if key in units:
            rows[spec.name] = Row(spec, units[key])
    return rows


def _entry(row: Row) -> dict[str, Any]:
    unit = row.unit
    entry: dict[str, Any] = {
        "name": row.spec.name,
        "module": " ".join([row.spec.module, *row.spec.args]),
        "description": row.spec.description,
        "versions": unit.versions,
        "status": unit.status,
    }
    if row.spec.tls:
        entry["tls"] = unit.tls_session
    if not row.ok:
        entry["reason"] = unit.reason
    return entry


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:,.2f} s" if value >= 10_000 else f"{value:,.2f} ms"


def report_case(
    group: Group,
    case: Case,
    units: dict[tuple[str, ...], Unit],
    all_rows: dict[str, dict[str, Row]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Print one group's table for one request, with its targets; return it for the JSON.

    ``all_rows`` holds the rows of every case of the group, by case name, for
    targets and comparisons whose reference is measured on another case."""
    rows = all_rows[case.name]
    if not isinstance(case.load, WrkLoad):
        return report_scenario_case(group, case, rows, args)
    load = case.load
    refs = [rows[name] for name in group.references if name in rows and rows[name].ok]
    transfer = group.show_transfer
    headers = ["server", "CPU µs/req"]
    headers += [f"CPU vs {r.spec.name}" for r in refs]
    headers += ["requests/s"] + [f"req/s vs {r.spec.name}" for r in refs]
    headers += ["of ideal"] if load.wait_s else []
    headers += ["p50", "p99", "p99.9", "errors"] if load.percentiles else ["p99"]
    headers += ["server CPU"] + ([] if group.pinned else ["wrk CPU", "idle CPU"])
    headers += ["MiB/s"] if transfer else []
    table, servers = [], []
    for spec in group.servers:
        if spec.name in case.not_for:
            table.append([spec.name, "n/a"] + ["-"] * (len(headers) - 2))
            continue
        row = rows[spec.name]
        unit = row.unit
        entry = _entry(row)
        servers.append(entry)
        if not row.ok:
            table.append([row.spec.name, entry["status"]] + ["-"] * (len(headers) - 2))
            continue
        run = unit.median_run()
        cpu_ratios = [ratio(row.cpu_us(), ref.cpu_us()) for ref in refs]
        rps_ratios = [ratio(row.rps(), ref.rps()) for ref in refs]
        entry.update(
            connections=case_connections(case, args),
            cpu_us_per_request=unit.cpu_us(),
            cpu_ratios={r.spec.name: v for r, v in zip(refs, cpu_ratios, strict=True)},
            requests_per_sec=run.requests_per_sec,
            rps_ratios={r.spec.name: v for r, v in zip(refs, rps_ratios, strict=True)},
            p50_ms=run.p50_ms,
            p99_ms=run.p99_ms if run.latency_valid else None,
            p999_ms=run.p999_ms,
            errors=run.errors(),
            of_ideal=run.of_ideal,
            server_cpu=run.server_cpu,
            client_cpu=run.client_cpu,
            idle_cpus=run.idle_cpus,
            transfer_per_sec=run.transfer_per_sec,
            runs=[asdict(r) for r in unit.runs],
        )
        warnings = unit.warnings()
        if warnings:
            entry["warning"] = "; ".join(warnings)
        p99 = run.p99_ms if run.latency_valid else None
        latency = (
            [_ms(run.p50_ms), _ms(p99), _ms(run.p999_ms), f"{run.errors():,}"]
            if load.percentiles
            else [_ms(p99)]
        )
        table.append(
            [row.spec.name, f"{unit.cpu_us():.1f}"]
            + [fmt_ratio(v) for v in cpu_ratios]
            + [f"{run.requests_per_sec:,.0f}"]
            + [fmt_ratio(v) for v in rps_ratios]
            + ([f"{run.of_ideal:.1%}"] if load.wait_s and run.of_ideal is not None else [])
            + latency
            + [f"{run.server_cpu:.0%}"]
            + ([] if group.pinned else [f"{run.client_cpu:.0%}", f"{run.idle_cpus:.0%}"])
            + ([f"{run.transfer_per_sec / MIB:,.1f}"] if transfer else [])
        )

    pinning = "" if group.pinned else " (server and wrk not pinned)"
    print(f"\n== {group.name}: {group.title}; GET {case.path}, {case.label}{pinning}")
    harness.print_table(headers, table)
    targets = []
    for target in group.targets:
        if target.case not in (None, case.name):
            continue
        reference_rows = all_rows.get(target.reference_case or case.name)
        targets.append(judge(target, rows, reference_rows))
    for t in targets:
        print(
            f"target {t['target']}: by CPU µs/req {verdict(t['cpu'], t['cpu_pass'])}, "
            f"by requests/s {verdict(t['rps'], t['rps_pass'])}, "
            f"by round-by-round requests/s {verdict(t['rounds'], t['rounds_pass'])}"
        )
    comparisons = []
    for c in group.comparisons:
        if c.case not in (None, case.name):
            continue
        reference_rows = all_rows.get(c.reference_case or case.name, {})
        if c.server not in rows or c.reference not in reference_rows:
            continue  # left out by --only or --case
        found = {"comparison": str(c), **compare(c.server, c.reference, rows, reference_rows)}
        comparisons.append(found)
        rounds = ", ".join(f"{v:.2f}" for v in found["per_round"])
        print(
            f"{c}: by CPU µs/req {fmt_ratio(found['cpu'])}, "
            f"by requests/s {fmt_ratio(found['rps'])}, "
            f"by round-by-round requests/s {fmt_ratio(found['rounds'])}"
            + (f" ({rounds})" if rounds else "")
        )
    _print_notes(servers)
    return {
        "case": case.name,
        "kind": "wrk",
        "path": case.path,
        "label": case.label,
        "headers": dict(case.headers),
        "connections": case_connections(case, args),
        "pipeline": load.pipeline,
        "servers": servers,
        "targets": targets,
        "comparisons": comparisons,
    }


def scenario_size(case: Case, args: argparse.Namespace) -> str:
    """How big this run made a scenario case, for its heading."""
    load = case.load
    if isinstance(load, groups.TransferLoad):
        return f", {args.body_mb} MiB"
    if isinstance(load, groups.OpenLoopLoad):
        return f", {args.overload_seconds:g} s"
    if isinstance(load, groups.IdleLoad):
        return f", {args.idle_connections or load.connections:,} connections"
    return ""


def _print_notes(servers: list[dict[str, Any]]) -> None:
    for entry in servers:
        if entry.get("tls"):
            print(f"{entry['name']}: {entry['tls']}")
        if "reason" in entry:
            print(f"{entry['name']}: {entry['status']}: {entry['reason']}")
        elif "warning" in entry:
            print(f"{entry['name']}: warning: {entry['warning']}")


def report_scenario_case(
    group: Group, case: Case, rows: dict[str, Row], args: argparse.Namespace
) -> dict[str, Any]:
    """The table of a case measured by scenarios.py: its run record's own figures,
    and its primary figure as a ratio of the references'."""
    run_type = scenarios.run_type(case.load)
    refs = [rows[name] for name in group.references if name in rows and rows[name].ok]
    headers = ["server", *run_type.HEADERS]
    headers += [f"{run_type.METRIC} vs {r.spec.name}" for r in refs]
    table, servers = [], []
    for spec in group.servers:
        if spec.name in case.not_for:
            table.append([spec.name, "n/a"] + ["-"] * (len(headers) - 2))
            continue
        row = rows[spec.name]
        entry = _entry(row)
        servers.append(entry)
        if not row.ok:
            table.append([spec.name, entry["status"]] + ["-"] * (len(headers) - 2))
            continue
        run = row.unit.median_run()
        ratios = [ratio(run.primary, ref.unit.median_run().primary) for ref in refs]
        entry.update(
            primary=run.primary,
            ratios={r.spec.name: v for r, v in zip(refs, ratios, strict=True)},
            median=asdict(run),
            runs=[asdict(r) for r in row.unit.runs],
        )
        for name in ("rss_growth", "mib_per_s"):
            if hasattr(run, name):
                entry[name] = getattr(run, name)
        warnings = row.unit.warnings()
        if warnings:
            entry["warning"] = "; ".join(warnings)
        table.append([spec.name, *run.cells(), *(fmt_ratio(v) for v in ratios)])
    pinning = "" if group.pinned else " (not pinned)"
    size = scenario_size(case, args)
    print(f"\n== {group.name}: {group.title}; {case.path}, {case.label}{size}{pinning}")
    harness.print_table(headers, table)
    goals = [judge_goal(g, rows) for g in group.goals if g.case in (None, case.name)]
    for g in goals:
        state = "not measured" if g["pass"] is None else ("pass" if g["pass"] else "FAIL")
        print(
            f"goal {g['goal']}: {g['value']:,.0f} {state}"
            if g["value"] is not None
            else f"goal {g['goal']}: {state}"
        )
    _print_notes(servers)
    return {
        "case": case.name,
        "kind": run_type.__name__,
        "path": case.path,
        "label": case.label + scenario_size(case, args),
        "headers": dict(case.headers),
        "servers": servers,
        "goals": goals,
        "targets": [],
        "comparisons": [],
    }


# --- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--group",
        help=f"comma-separated groups to run (default: all: {','.join(groups.GROUP_NAMES)})",
    )
    parser.add_argument(
        "--all", action="store_true", help="every group (the default when --group is not given)"
    )
    parser.add_argument("--only", help="comma-separated server names, e.g. aserve,uvicorn-h11")
    parser.add_argument("--case", help="comma-separated case names, e.g. c64,pipelined-16")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up load (3)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="interleaved rounds; medians over them are reported (1)",
    )
    parser.add_argument(
        "--python",
        default=None,
        help="interpreter for the servers (benchmarks/.venv/bin/python if it exists, "
        "else this one)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for the server (0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU for wrk (1)")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not use taskset (never used for 'workers')"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before each run, wait up to S seconds for other processes to go quiet (0: off)",
    )
    parser.add_argument(
        "--overload-seconds",
        type=float,
        default=20.0,
        metavar="S",
        help="length of the open-loop schedule of the overload group (20)",
    )
    parser.add_argument(
        "--capacity-seconds",
        type=int,
        default=5,
        metavar="S",
        help="closed-loop wrk run that measures capacity before an overload run (5)",
    )
    parser.add_argument(
        "--body-mb", type=int, default=256, metavar="N", help="MiB per body in bodies (256)"
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=0,
        metavar="N",
        help="connections held by idle-memory (0: the case's own, 10,000)",
    )
    parser.add_argument("--no-json", action="store_true", help="do not write results JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.duration < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--repeat, --duration and --connections must be positive, --warmup >= 0")
    if args.all and args.group:
        parser.error("--all and --group exclude each other")
    if args.overload_seconds <= 0 or args.capacity_seconds < 1 or args.body_mb < 1:
        parser.error("--overload-seconds, --capacity-seconds and --body-mb must be positive")
    return args


def files_needed(unit: Unit, args: argparse.Namespace) -> int:
    """Open files a unit needs in this process and its children (wrk, the client)."""
    load = unit.case.load
    if isinstance(load, WrkLoad):
        return case_connections(unit.case, args) + 100
    if isinstance(load, groups.IdleLoad):
        return (args.idle_connections or load.connections) + 100
    if isinstance(load, groups.OpenLoopLoad):
        return load.pool + 100
    return 100


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def aserve_revision() -> str:
    """The commit aserve ran from, with "+changes" when the tree had uncommitted ones."""

    def git(*words: str) -> str:
        proc = subprocess.run(
            ["git", *words], capture_output=True, text=True, cwd=harness.PROJECT_ROOT
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "aserve")
    return commit + ("+changes" if dirty else "")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_availability(units: Iterable[Unit], python: str) -> None:
    """Mark the units whose server's modules do not import as skipped, saying why."""
    seen: dict[tuple[str, ...], harness.Availability] = {}
    for unit in units:
        key = unit.spec.key
        if key not in seen:
            seen[key] = harness.check_available(unit.spec, python)
            if not seen[key].ok:
                log(f"{' '.join(key)}: skipped: {seen[key].reason}")
        unit.versions = seen[key].versions
        if not seen[key].ok:
            unit.status, unit.reason = "skipped", seen[key].reason


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = groups.select(args.group, args.only, args.case)
    if not selected:
        raise SystemExit("no server selected")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: install it (Debian/Ubuntu: apt-get install -y wrk)")
    if not args.no_pin and any(g.pinned for g in selected):
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
    unpinned = [g.name for g in selected if not g.pinned]
    if unpinned and not args.no_pin:
        pinning += f" (none for {', '.join(unpinned)})"
    units = plan(selected)
    limit = harness.raise_nofile_limit()
    for unit in units.values():
        needed = files_needed(unit, args)
        if needed > limit:
            unit.status = "skipped"
            unit.reason = (
                f"needs about {needed:,} open files, the limit is {limit:,} (raise ulimit -Hn)"
            )
    log(
        f"servers run with {python}; groups {', '.join(g.name for g in selected)}: "
        f"{len(units)} server runs a round; {args.connections} connections, "
        f"{args.duration} s x {args.repeat}, warm-up {args.warmup} s; pinning: {pinning}"
    )
    check_availability(units.values(), python)
    with tempfile.TemporaryDirectory(prefix="aserve-bench-tls-") as folder:
        certificate = None
        if any(unit.spec.tls and unit.status == "ok" for unit in units.values()):
            certificate = harness.make_certificate(folder)
            log(f"HTTPS servers use a certificate made for this run: {certificate.made_by}")
        run_rounds(units, args, python, certificate)

    print(LEGEND)
    report = []
    for group in selected:
        all_rows = {case.name: case_rows(group, case, units) for case in group.cases}
        cases = [report_case(group, case, units, all_rows, args) for case in group.cases]
        report.append(
            {
                "group": group.name,
                "title": group.title,
                "references": list(group.references),
                "pinned": group.pinned and not args.no_pin,
                "cases": cases,
            }
        )
    speeds = [r.calibration_ms for u in units.values() if u.wrk for r in u.runs]
    speed_spread = max(speeds) / min(speeds) - 1 if speeds else 0.0
    if speed_spread > SPEED_THRESHOLD:
        print(
            f"\nwarning: the calibration loop ran {speed_spread:.0%} slower at worst than at "
            "best during this benchmark: the machine's CPU speed varied; requests/s are noisy "
            "(lead with CPU µs/request, compare ratios within a group, use --repeat)"
        )

    if not args.no_json:
        payload = {
            "benchmark": "throughput",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {
                "groups": [g.name for g in selected],
                "duration_s": args.duration,
                "connections": args.connections,
                "warmup_s": args.warmup,
                "repeat": args.repeat,
                "statistic": "median run by requests/s (its p99, server CPU and transfer/s); "
                "median CPU µs/request over the runs; for the scenario groups the median "
                "run by their primary figure (2xx p99, MiB/s, B/conn, start time)",
                "overload_seconds": args.overload_seconds,
                "capacity_seconds": args.capacity_seconds,
                "body_mb": args.body_mb,
                "idle_connections": args.idle_connections or None,
                "open_file_limit": limit,
                "calibration_spread": round(speed_spread, 3),
                "pinning": pinning,
                "certificate": certificate.made_by if certificate else None,
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
                "cpu_model": cpu_model(),
                "kernel": platform.release(),
                "aserve": aserve_revision(),
            },
            "groups": report,
        }
        path = harness.write_json("throughput", payload)
        print(f"\nresults written to {path.relative_to(harness.PROJECT_ROOT)}")
    return 0 if any(unit.runs for unit in units.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
