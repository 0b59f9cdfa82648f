"""Memory per idle keep-alive connection, for aserve and its peers.

For each server of the ``hello`` group (see groups.py): start it (idle
keep-alive timeout raised so nothing is closed while we measure), warm it up
with a few thousand keep-alive requests, let its RSS settle and read it; then
open N connections (2,000 by default), send one GET on each and read each
reply fully, keep them all open, let RSS settle again and read it. Reports
(RSS after - RSS before) / N in bytes per connection, prints a table and
writes it as JSON to ``benchmarks/results/``. The client is plain asyncio and
needs no packages. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from typing import Any

import groups
import harness

#: The servers measured and the reply each must give.
GROUP = groups.get("hello")
CASE = GROUP.cases[0]

REQUEST = f"GET {CASE.path} HTTP/1.1\r\nHost: {harness.HOST}\r\n\r\n".encode("ascii")
#: Idle keep-alive timeout given to every server (KEEP_ALIVE_TIMEOUT), in seconds.
HOLD_SECONDS = 600

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ClientError(Exception):
    """A reply was wrong or a connection failed."""


async def read_reply(reader: asyncio.StreamReader) -> None:
    """Read one response with a Content-Length body; check it is the one CASE expects."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[1].isdigit():
        raise ClientError(f"unexpected status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ClientError("reply without Content-Length")
    body = await reader.readexactly(int(headers["content-length"]))
    problem = CASE.problem(int(status[1]), headers.get("content-type", ""), body)
    if problem:
        raise ClientError(f"unexpected reply: {problem}")


async def open_one(port: int, gate: asyncio.Semaphore) -> Connection:
    async with gate:
        reader, writer = await asyncio.open_connection(harness.HOST, port)
        writer.write(REQUEST)
        await writer.drain()
        await read_reply(reader)
        return reader, writer


async def open_many(port: int, count: int, concurrency: int) -> list[Connection]:
    """Open ``count`` connections, one GET answered on each; all left open."""
    gate = asyncio.Semaphore(concurrency)
    tasks = [asyncio.ensure_future(open_one(port, gate)) for _ in range(count)]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    conns = [c for c in done if not isinstance(c, BaseException)]
    errors = [e for e in done if isinstance(e, BaseException)]
    if errors:
        close_all(conns)
        raise ClientError(f"{len(errors)} of {count} connections failed, first: {errors[0]!r}")
    return conns


async def warm_up(port: int, connections: int, requests: int) -> None:
    """``requests`` keep-alive GETs on each of ``connections`` connections."""

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(harness.HOST, port)
        try:
            for _ in range(requests):
                writer.write(REQUEST)
                await read_reply(reader)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


def close_all(conns: list[Connection]) -> None:
    for _, writer in conns:
        writer.close()


async def settled_rss(pid: int, timeout: float, interval: float = 0.5) -> int:
    """RSS once four readings in a row lie within 1% (or 64 KiB); the last one at timeout."""
    readings: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        readings.append(harness.tree_rss_bytes(pid))
        last = readings[-4:]
        if len(last) == 4 and max(last) - min(last) <= max(65536, max(last) // 100):
            return last[-1]
        if time.monotonic() >= deadline:
            return readings[-1]
        await asyncio.sleep(interval)


async def measure(server: harness.RunningServer, args: argparse.Namespace) -> dict[str, Any]:
    pid = server.pid
    await warm_up(server.port, args.warmup_connections, args.warmup_requests)
    await asyncio.sleep(0.5)
    before = await settled_rss(pid, args.settle)
    sockets_before = harness.tree_socket_count(pid)
    started = time.monotonic()
    conns = await open_many(server.port, args.connections, args.concurrency)
    open_seconds = time.monotonic() - started
    try:
        after = await settled_rss(pid, args.settle)
        held = harness.tree_socket_count(pid) - sockets_before
        if server.proc.poll() is not None:
            raise harness.ServerError(f"died while holding connections: {server.log_tail()}")
    finally:
        close_all(conns)
        await asyncio.sleep(0.2)
    return {
        "rss_before": before,
        "rss_after": after,
        "bytes_per_connection": (after - before) / args.connections,
        "sockets_held": held,
        "open_seconds": round(open_seconds, 2),
    }


def measure_one(spec: groups.ServerSpec, args: argparse.Namespace, python: str) -> dict[str, Any]:
    result: dict[str, Any] = {"name": spec.name, "description": spec.description}
    available = harness.check_available(spec, python)
    result["versions"] = available.versions
    if not available.ok:
        result.update(status="skipped", reason=available.reason)
        return result
    env = {"KEEP_ALIVE_TIMEOUT": str(HOLD_SECONDS)}
    try:
        with harness.RunningServer(spec, python, env=env) as server:
            server.wait_ready()
            server.check_reply(CASE)
            result.update(asyncio.run(measure(server, args)))
    except (harness.ServerError, ClientError, OSError) as exc:
        result.update(status="failed", reason=str(exc) or repr(exc))
        return result
    result["status"] = "ok"
    if result["sockets_held"] < args.connections:
        result["warning"] = (
            f"server held only {result['sockets_held']} of {args.connections} connections "
            "when RSS was read"
        )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--connections", type=int, default=2000, help="keep-alive connections to hold (2000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=100, help="connections being opened at once (100)"
    )
    parser.add_argument("--only", help="comma-separated server names, e.g. aserve,bare-h11")
    parser.add_argument(
        "--python",
        default=None,
        help="interpreter for the servers (benchmarks/.venv/bin/python if it exists, "
        "else this one)",
    )
    parser.add_argument(
        "--settle", type=float, default=15.0, help="most seconds to wait for RSS to settle (15)"
    )
    parser.add_argument("--warmup-connections", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--warmup-requests", type=int, default=250, help=argparse.SUPPRESS)
    parser.add_argument("--no-json", action="store_true", help="do not write results JSON")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.concurrency < 1:
        parser.error("--connections and --concurrency must be positive")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = [s for g in groups.select(GROUP.name, args.only) for s in g.servers]
    limit = harness.raise_nofile_limit()
    if limit < args.connections + 100:
        raise SystemExit(
            f"open-file limit is {limit}, too low for {args.connections} connections; "
            "raise the hard limit (ulimit -Hn) or pass a smaller --connections"
        )
    python = harness.choose_python(args.python)
    log(f"servers run with {python}; {args.connections} connections held per server")

    results = []
    for spec in specs:
        log(f"{spec.name} ...")
        result = measure_one(spec, args, python)
        if result["status"] == "ok":
            log(
                f"  {mib(result['rss_before'])} -> {mib(result['rss_after'])}: "
                f"{result['bytes_per_connection']:,.0f} B/connection"
            )
        else:
            log(f"  {result['status']}: {result['reason']}")
        results.append(result)
        time.sleep(1)

    rows = []
    for r in results:
        if r["status"] == "ok":
            rows.append(
                [
                    r["name"],
                    mib(r["rss_before"]),
                    mib(r["rss_after"]),
                    f"{r['bytes_per_connection']:,.0f}",
                    str(r["sockets_held"]),
                ]
            )
        else:
            rows.append([r["name"], r["status"], "-", "-", "-"])
    print()
    harness.print_table(
        ["server", "RSS idle", f"RSS +{args.connections} conns", "bytes/conn", "held"], rows
    )
    for r in results:
        if r["status"] != "ok":
            print(f"{r['name']}: {r['status']}: {r['reason']}")
        elif "warning" in r:
            print(f"{r['name']}: warning: {r['warning']}")

    if not args.no_json:
        payload = {
            "benchmark": "memory",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {
                "connections": args.connections,
                "rss": "VmRSS from /proc/PID/status",
                "keep_alive_timeout_s": HOLD_SECONDS,
            },
            "machine": {"platform": platform.platform()},
            "servers": results,
        }
        path = harness.write_json("memory", payload)
        print(f"\nresults written to {path.relative_to(harness.PROJECT_ROOT)}")
    return 0 if any(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
