"""Charts from run.py's result files: ``python benchmarks/plot.py [RESULT.json ...] [--out DIR]``.

One PNG per group found in the files (the latest ``benchmarks/results/
throughput-*.json`` when none is named; a later file's group replaces an
earlier one's), written as ``bench-GROUP.png`` into ``--out``
(``benchmarks/results/`` by default; the committed charts live in ``docs/``):

- ``scale``: requests/s by server and connection count, and a second chart
  (``bench-scale-latency.png``) of p50/p99/p99.9 latency the same way;
- ``pipeline``: requests/s with and without pipelining, by server;
- ``churn``, ``io-wait`` (with the ideal rate), ``idle-memory`` (with the
  goal), ``startup``: one bar per server;
- ``overload``: the 2xx p99 latency and the 2xx and 503 answers per second of
  the schedule, and RSS over time, by server;
- ``bodies``: MiB/s by server and case, and (``bench-bodies-rss.png``) RSS
  growth over each transfer.

Each chart says under it when and on what it was measured (date, CPU, kernel,
Python, the aserve commit and the peers' versions, rounds and durations) and
which servers are missing from it and why: a server that failed or was skipped
gets no bar, and no figure of any other server is given relative to it.

Reading the JSON needs only the standard library (``series_*`` and
``caption``, which tests use); drawing needs matplotlib (``pip install
'aserve[bench]'``, or the ``benchmarks/.venv`` of benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 2**20


# --- reading ------------------------------------------------------------------------------


@dataclass
class GroupResult:
    """One group of one result file, with what its charts say about the run."""

    name: str
    title: str
    cases: list[dict[str, Any]]
    payload: dict[str, Any] = field(repr=False)

    def case(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.cases if c["case"] == name), None)


def load_groups(paths: list[Path]) -> dict[str, GroupResult]:
    """Every group in ``paths``, by name; a later file's group replaces an earlier one's."""
    found: dict[str, GroupResult] = {}
    for path in paths:
        payload = json.loads(path.read_text())
        for group in payload.get("groups", []):
            found[group["group"]] = GroupResult(
                group["group"], group.get("title", ""), group["cases"], payload
            )
    return found


def ok_servers(case: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in case["servers"] if s.get("status") == "ok"]


def missing(group: GroupResult) -> list[str]:
    """ "name (status)" for every server that has no figure in some case, once each."""
    seen: dict[str, str] = {}
    for case in group.cases:
        for server in case["servers"]:
            if server.get("status") != "ok":
                seen.setdefault(server["name"], server.get("status", "missing"))
    return [f"{name} ({status})" for name, status in seen.items()]


def series_rps(group: GroupResult) -> dict[str, dict[str, float]]:
    """requests/s by case name, then by server name (servers that ran only)."""
    return {
        case["case"]: {s["name"]: s["requests_per_sec"] for s in ok_servers(case)}
        for case in group.cases
    }


def series_latency(group: GroupResult) -> dict[str, dict[str, tuple[float, float, float]]]:
    """(p50, p99, p99.9) in ms by case, then by server, where the run measured them."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for case in group.cases:
        row = {}
        for s in ok_servers(case):
            if s.get("p50_ms") is not None and s.get("p999_ms") is not None:
                row[s["name"]] = (s["p50_ms"], s["p99_ms"], s["p999_ms"])
        out[case["case"]] = row
    return out


def series_primary(group: GroupResult) -> dict[str, dict[str, float]]:
    """The scenario cases' primary figure (MiB/s, B/conn, start ms...) by case and server."""
    return {
        case["case"]: {s["name"]: s["primary"] for s in ok_servers(case)} for case in group.cases
    }


@dataclass
class OverloadSeries:
    #: Seconds of the schedule, and the 2xx p99 of the requests due in each.
    seconds: list[int]
    ok_p99_ms: list[float | None]
    #: Seconds of the run (the drain included), and the answers that arrived in each.
    answer_seconds: list[int]
    ok_per_s: list[int]
    refused_per_s: list[int]
    #: (seconds from the schedule's start, RSS in MiB).
    rss: list[tuple[float, float]]
    offered_rps: float
    capacity_rps: float


def series_overload(group: GroupResult) -> dict[str, OverloadSeries]:
    """Per second of the schedule, by server: 2xx p99, 2xx and 503 counts; and RSS."""
    out = {}
    for case in group.cases:
        for s in ok_servers(case):
            run = s["median"]
            buckets = run["per_second"]
            answered = run["answered_per_second"]
            out[s["name"]] = OverloadSeries(
                seconds=[b["second"] for b in buckets],
                ok_p99_ms=[b["ok_p99_ms"] for b in buckets],
                answer_seconds=[b["second"] for b in answered],
                ok_per_s=[b["ok"] for b in answered],
                refused_per_s=[b["refused"] for b in answered],
                rss=[(t, rss / MIB) for t, rss, *_ in run["rss_samples"]],
                offered_rps=run["offered_rps"],
                capacity_rps=run["capacity_rps"],
            )
    return out


def series_rss_growth(group: GroupResult) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """RSS above its level before the transfer, in MiB, over the transfer's seconds,
    by case and server."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for case in group.cases:
        row = {}
        for s in ok_servers(case):
            run = s["median"]
            base = run["rss_before"]
            row[s["name"]] = [(t, (rss - base) / MIB) for t, rss, *_ in run["rss_samples"]]
        out[case["case"]] = row
    return out


def ideal_note(group: GroupResult) -> str:
    """ ", ideal N req/s" for a case whose handler waits (requests/s over ``of_ideal``)."""
    for case in group.cases:
        for s in ok_servers(case):
            if s.get("of_ideal"):
                ideal = s["requests_per_sec"] / s["of_ideal"]
                return (
                    f"\n(ideal: {ideal:,.0f} req/s, every connection waiting only on the handler)"
                )
    return ""


def caption(group: GroupResult) -> str:
    """When and on what: date, machine, versions, the run's settings, who is missing."""
    payload = group.payload
    machine = payload.get("machine", {})
    settings = payload.get("settings", {})
    versions: dict[str, str] = {}
    for case in group.cases:
        for server in case["servers"]:
            versions.update(server.get("versions", {}))
    peers = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    if group.name == "overload":
        how = (
            f"open loop for {settings.get('overload_seconds', '?')} s at 2x the capacity wrk "
            f"measured in {settings.get('capacity_seconds', '?')} s"
        )
    elif group.name == "bodies":
        how = f"{settings.get('body_mb', '?')} MiB, 3 transfers per run (median)"
    else:
        how = f"wrk runs {settings.get('duration_s', '?')} s"
    lines = [
        f"{payload.get('date', '?')[:16].replace('T', ' ')}; {machine.get('cpus', '?')} vCPU "
        f"{machine.get('cpu_model', '')}, Linux {machine.get('kernel', '?')}, "
        f"CPython {machine.get('python', '?')}, aserve {machine.get('aserve', '?')}",
        peers,
        f"median of {settings.get('repeat', '?')} round(s); {how}; {settings.get('pinning', '')}",
    ]
    busiest = max(
        (
            run.get("other_load", 0.0)
            for case in group.cases
            for server in ok_servers(case)
            for run in server.get("runs", [])
        ),
        default=0.0,
    )
    if busiest > 0.1:
        lines.append(f"other processes used up to {busiest:.0%} of a CPU during some of these runs")
    gone = missing(group)
    if gone:
        lines.append("not measured: " + ", ".join(gone))
    return "\n".join(line for line in lines if line)


# --- drawing ------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _servers_in_order(table: dict[str, dict[str, float]]) -> list[str]:
    names: list[str] = []
    for row in table.values():
        names += [n for n in row if n not in names]
    return names


def _grouped_bars(
    ax: Any, table: dict[str, dict[str, float]], labels: dict[str, str], log: bool = False
) -> None:
    """One cluster per case (x), one bar per server."""
    plt = _pyplot()
    servers = _servers_in_order(table)
    cases = list(table)
    width = 0.8 / max(1, len(servers))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, server in enumerate(servers):
        xs = [c + (i - (len(servers) - 1) / 2) * width for c in range(len(cases))]
        values = [table[case].get(server, 0.0) for case in cases]
        ax.bar(xs, values, width, label=server, color=colors[i % len(colors)])
    ax.set_xticks(range(len(cases)), [labels.get(c, c) for c in cases])
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)


def _finish(fig: Any, group: GroupResult, path: Path) -> Path:
    fig.text(0.01, 0.005, caption(group), fontsize=6.5, va="bottom", ha="left", family="monospace")
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _figure(rows: int = 1, height: float = 4.6) -> tuple[Any, Any]:
    plt = _pyplot()
    fig, axes = plt.subplots(rows, 1, figsize=(9, height * rows + 1.0), squeeze=False)
    fig.subplots_adjust(bottom=0.9 / (height * rows + 1.0) + 0.06, hspace=0.35)
    return fig, [a[0] for a in axes]


def _case_labels(group: GroupResult) -> dict[str, str]:
    labels = {}
    for case in group.cases:
        if case.get("kind") == "wrk" and case.get("connections"):
            pipeline = case.get("pipeline", 1)
            labels[case["case"]] = f"{case['connections']:,} connections" + (
                f", {pipeline} pipelined" if pipeline > 1 else ""
            )
        else:
            labels[case["case"]] = case["case"]
    return labels


def draw_rps(group: GroupResult, out: Path, name: str = "") -> list[Path]:
    fig, (ax,) = _figure()
    _grouped_bars(ax, series_rps(group), _case_labels(group))
    ax.set_ylabel("requests/s (higher is better)")
    ideal = ideal_note(group)
    ax.set_title(f"{group.name}: {group.title}{ideal}", fontsize=10)
    return [_finish(fig, group, out / f"bench-{name or group.name}.png")]


def draw_scale(group: GroupResult, out: Path) -> list[Path]:
    paths = draw_rps(group, out)
    fig, axes = _figure(rows=3, height=2.6)
    latency = series_latency(group)
    labels = _case_labels(group)
    for ax, (index, label) in zip(axes, enumerate(("p50", "p99", "p99.9")), strict=True):
        table = {case: {s: v[index] for s, v in row.items()} for case, row in latency.items()}
        _grouped_bars(ax, table, labels, log=True)
        ax.set_ylabel(f"{label} latency, ms")
    axes[0].set_title(f"{group.name}: latency by connection count (log scale)", fontsize=10)
    paths.append(_finish(fig, group, out / f"bench-{group.name}-latency.png"))
    return paths


def draw_primary(group: GroupResult, out: Path, ylabel: str, goal: float | None = None) -> Path:
    fig, (ax,) = _figure()
    table = series_primary(group)
    _grouped_bars(ax, table, {c["case"]: c.get("label", c["case"]) for c in group.cases})
    if goal is not None:
        ax.axhline(goal, color="black", linestyle="--", linewidth=1)
        ax.text(ax.get_xlim()[0], goal, f" goal {goal:,.0f}", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{group.name}: {group.title}", fontsize=10)
    return _finish(fig, group, out / f"bench-{group.name}.png")


def draw_overload(group: GroupResult, out: Path) -> list[Path]:
    series = series_overload(group)
    fig, (latency, answers, memory) = _figure(rows=3, height=2.8)
    for name, s in series.items():
        points = [(t, v) for t, v in zip(s.seconds, s.ok_p99_ms, strict=True) if v is not None]
        (line,) = latency.plot(
            [t + 0.5 for t, _ in points],
            [v for _, v in points],
            label=f"{name} ({s.offered_rps:,.0f}/s offered)",
        )
        answers.plot(
            [t + 0.5 for t in s.answer_seconds],
            s.ok_per_s,
            color=line.get_color(),
            label=f"{name} 2xx",
        )
        if any(s.refused_per_s):
            answers.plot(
                [t + 0.5 for t in s.answer_seconds],
                s.refused_per_s,
                color=line.get_color(),
                linestyle="--",
                label=f"{name} 503",
            )
        memory.plot([t for t, _ in s.rss], [v for _, v in s.rss], color=line.get_color())
    answers.set_title("answers received per second (503 dashed)", fontsize=8)
    latency.set_yscale("log")
    latency.set_xlabel("second of the schedule in which the requests were due", fontsize=8)
    latency.set_ylabel("2xx p99 per second, ms")
    latency.set_title(
        f"{group.name}: open loop at 2x each server's capacity (log scale)", fontsize=10
    )
    latency.legend(fontsize=8, ncol=2)
    answers.set_ylabel("answers per second")
    answers.legend(fontsize=7, ncol=3)
    memory.set_ylabel("RSS, MiB")
    memory.set_xlabel("seconds from the schedule's start (the drain after it included)")
    for ax in (latency, answers, memory):
        ax.grid(alpha=0.3)
    return [_finish(fig, group, out / f"bench-{group.name}.png")]


def draw_bodies(group: GroupResult, out: Path) -> list[Path]:
    paths = [draw_primary(group, out, "MiB/s (higher is better)")]
    growth = series_rss_growth(group)
    fig, axes = _figure(rows=len(growth), height=2.4)
    for ax, (case, row) in zip(axes, growth.items(), strict=True):
        for name, points in row.items():
            ax.plot([t for t, _ in points], [v for _, v in points], label=name)
        ax.set_ylabel(f"{case}\nRSS growth, MiB")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=3)
    axes[0].set_title(f"{group.name}: RSS above its level before the transfer", fontsize=10)
    axes[-1].set_xlabel("seconds from the first transfer's start (three, one after the other)")
    paths.append(_finish(fig, group, out / f"bench-{group.name}-rss.png"))
    return paths


def draw(group: GroupResult, out: Path) -> list[Path]:
    """Every chart of ``group`` written into ``out``; [] for a group with none."""
    if not any(ok_servers(case) for case in group.cases):
        return []
    name = group.name
    if name == "scale":
        return draw_scale(group, out)
    if name == "overload":
        return draw_overload(group, out)
    if name == "bodies":
        return draw_bodies(group, out)
    if name == "idle-memory":
        return [draw_primary(group, out, "bytes per idle connection (lower is better)", 2500)]
    if name == "startup":
        return [draw_primary(group, out, "ms from start to first reply (lower is better)")]
    if all(case.get("kind", "wrk") == "wrk" for case in group.cases):
        return draw_rps(group, out)
    return []


def latest_result() -> Path:
    found = sorted(RESULTS_DIR.glob("throughput-*.json"))
    if not found:
        raise SystemExit(f"no result file in {RESULTS_DIR}; run benchmarks/run.py first")
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="*", type=Path, help="result files (default: latest)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the PNGs")
    parser.add_argument("--group", help="comma-separated groups to chart (default: all)")
    args = parser.parse_args(argv)
    paths = args.results or [latest_result()]
    wanted = {g.strip() for g in (args.group or "").split(",") if g.strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, group in load_groups(paths).items():
        if wanted and name not in wanted:
            continue
        written += draw(group, args.out)
    for path in written:
        print(path)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
