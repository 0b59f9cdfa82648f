"""What run.py and memory.py share: how to start, check, measure and stop a server.

Each server is a small module under ``benchmarks/servers/`` (listed in
groups.py) started as ``PYTHON servers/MODULE.py PORT [ARG]`` in its own
process group, optionally pinned to one CPU with ``taskset``. The project root
is put on ``PYTHONPATH`` so that aserve runs from the source tree without being
installed. Servers that speak HTTPS get a certificate made once per run
(`make_certificate`).
"""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from groups import Case, ServerSpec

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
SERVERS_DIR = BENCH_DIR / "servers"
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONDEVMODE", None)
    env.pop("PYTHONASYNCIODEBUG", None)
    # Servers start as they do for a user: with bytecode caches. Without them a
    # project run from its source tree compiles every module at each start,
    # while the peers' installed packages come compiled.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if extra:
        env.update(extra)
    return env


@dataclass
class Availability:
    ok: bool
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)


def check_available(spec: ServerSpec, python: str) -> Availability:
    """Import the server's modules in a child interpreter; say why not if they fail."""
    code = (
        "import importlib, importlib.metadata as md, json\n"
        f"for name in {list(spec.requires)!r}:\n"
        "    globals()[name] = importlib.import_module(name)\n"
        f"{spec.probe}\n"
        "versions = {}\n"
        f"for dist in {list(spec.packages)!r}:\n"
        "    try:\n"
        "        versions[dist] = md.version(dist)\n"
        "    except md.PackageNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(versions))\n"
    )
    try:
        proc = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=60,
            cwd=BENCH_DIR,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Availability(False, f"cannot run {python}: {exc}")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return Availability(False, lines[-1] if lines else f"exit status {proc.returncode}")
    try:
        versions = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        versions = {}
    return Availability(True, versions=versions)


def choose_python(requested: str | None) -> str:
    """The servers' interpreter as an absolute path.

    ``requested`` (a path or a command name) when given, else
    benchmarks/.venv/bin/python when that venv exists, else the running one.
    """
    if requested:
        found = shutil.which(requested) if os.sep not in requested else requested
        if not found or not os.access(found, os.X_OK):
            raise SystemExit(f"--python {requested}: no such interpreter")
        return os.path.abspath(found)
    venv_python = BENCH_DIR / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


@dataclass(frozen=True)
class Certificate:
    """A certificate chain and its key, as PEM files, for the HTTPS servers of a run."""

    certfile: str
    keyfile: str
    #: How it was made, for the results.
    made_by: str

    def env(self) -> dict[str, str]:
        """What a server module reads them from (servers/settings.py)."""
        return {"SSL_CERTFILE": self.certfile, "SSL_KEYFILE": self.keyfile}


def make_certificate(folder: str) -> Certificate:
    """A certificate for 127.0.0.1 with an ECDSA P-256 key, written into ``folder``.

    With trustme importable here: a leaf issued by a throwaway CA (the server
    sends the leaf alone, as it would with a real CA). Else a self-signed one
    from the ``openssl`` command. The same kind of key either way, since the
    key's type sets what a handshake costs; wrk verifies neither.
    """
    certfile = os.path.join(folder, "cert.pem")
    keyfile = os.path.join(folder, "key.pem")
    try:
        import trustme
    except ImportError:
        pass
    else:
        leaf = trustme.CA().issue_cert(HOST, "localhost")
        leaf.private_key_pem.write_to_path(keyfile)
        with open(certfile, "wb") as f:
            for pem in leaf.cert_chain_pems:
                f.write(pem.bytes())
        version = importlib.metadata.version("trustme")
        return Certificate(certfile, keyfile, f"trustme {version}, ECDSA P-256")
    if shutil.which("openssl") is None:
        raise SystemExit("HTTPS servers need a certificate: install trustme or openssl")
    argv = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={HOST}",
        "-addext",
        f"subjectAltName=IP:{HOST},DNS:localhost",
        "-keyout",
        keyfile,
        "-out",
        certfile,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"openssl could not make a certificate: {proc.stderr.strip()}")
    version = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout
    return Certificate(certfile, keyfile, f"self-signed, ECDSA P-256, {version.strip()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def taskset_prefix(cpu: int | None) -> list[str]:
    """``taskset -c CPU`` when pinning is wanted and possible, else nothing."""
    if cpu is None:
        return []
    if shutil.which("taskset") is None:
        raise SystemExit("taskset not found (util-linux); install it or pass --no-pin")
    return ["taskset", "-c", str(cpu)]


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 65536:
        hard_target = 65536
    else:
        hard_target = hard
    if soft < hard_target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard_target, hard))


def _prepare_child() -> None:
    """In a server's process before it runs: the open-file limit raised, and
    SIGINT back to its default action. A shell starting run.py in the
    background hands it SIGINT ignored, the servers would inherit that, and
    the ones that rely on KeyboardInterrupt (http.server) would then ignore
    ``stop()``'s SIGINT until its SIGKILL 5 s later."""
    _raise_nofile()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def raise_nofile_limit() -> int:
    """Raise this process's open-file soft limit as far as allowed; return it."""
    _raise_nofile()
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ServerError(Exception):
    """The server did not start or did not answer as expected."""


class RunningServer:
    """A server process started in its own session; use as a context manager."""

    def __init__(
        self,
        spec: ServerSpec,
        python: str,
        cpu: int | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.spec = spec
        self.port = port or free_port()
        self.log = tempfile.NamedTemporaryFile(
            prefix=f"bench-{spec.name}-", suffix=".log", delete=False
        )
        module = str(SERVERS_DIR / spec.module)
        argv = [*taskset_prefix(cpu), python, module, str(self.port), *spec.args]
        #: time.monotonic() just before the process was started (startup times).
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=server_env(env),
            cwd=BENCH_DIR,
            start_new_session=True,
            preexec_fn=_prepare_child,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 8) -> str:
        self.log.flush()
        try:
            text = Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _died(self) -> ServerError:
        tail = self.log_tail()
        return ServerError(
            f"exited with status {self.proc.returncode}" + (f": {tail}" if tail else "")
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the port accepts a TCP connection."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._died()
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise ServerError(f"port {self.port} did not accept within {timeout:.0f} s")

    def check_reply(self, case: Case, tls: bool = False) -> str:
        """One ``GET case.path`` with the case's headers, answered as ``case`` says
        (status 200, content-type, body), over HTTPS when ``tls``.

        Returns the TLS version and cipher the server chose ("" without TLS).
        """
        conn: http.client.HTTPConnection
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # as wrk does
            conn = http.client.HTTPSConnection(HOST, self.port, timeout=10, context=context)
        else:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        session = ""
        try:
            conn.request("GET", case.path, headers=dict(case.headers))
            if isinstance(conn.sock, ssl.SSLSocket):  # before a Connection: close drops it
                cipher = conn.sock.cipher()
                session = f"{conn.sock.version()} {cipher[0] if cipher else '?'}"
            response = conn.getresponse()
            body = response.read()
            ctype = response.getheader("content-type", "")
        except (OSError, http.client.HTTPException) as exc:
            tail = self.log_tail(4)
            raise ServerError(
                f"GET {case.path} failed: {exc!r}" + (f"; server log: {tail}" if tail else "")
            ) from exc
        finally:
            conn.close()
        problem = case.problem(response.status, ctype, body)
        if problem:
            raise ServerError(f"GET {case.path} answered {problem}")
        if self.proc.poll() is not None:
            raise self._died()
        return session

    def resumes_tls(self, case: Case) -> bool:
        """Whether the server resumes a TLS session on a second connection, as wrk
        asks it to when it reconnects (``Connection: close``): then such a
        handshake skips the certificate and its signature."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = f"GET {case.path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        session = None
        try:
            for _ in range(2):
                with socket.create_connection((HOST, self.port), timeout=10) as raw:
                    with context.wrap_socket(raw, session=session) as sock:
                        sock.sendall(request.encode("ascii"))
                        while sock.recv(65536):
                            pass  # to the close: a TLS 1.3 ticket comes after the handshake
                        if session is not None:
                            return bool(sock.session_reused)
                        session = sock.session
        except OSError as exc:
            raise ServerError(f"TLS session check failed: {exc!r}") from exc
        return False

    def stop(self) -> None:
        """SIGINT to the process group, SIGKILL if it is still there after 5 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process: VmRSS from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ServerError(f"no VmRSS for pid {pid}")


def tree_rss_bytes(root: int) -> int:
    """RSS of ``root`` and its descendants added up (granian serves from a child
    process; one process is just its own RSS)."""
    total = 0
    for pid in process_tree(root):
        try:
            total += rss_bytes(pid)
        except (OSError, ServerError):
            pass  # exited between the listing and the read
    return total


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(root: int) -> bool:
    """Reset the peak RSS (VmHWM) of ``root``'s processes to their current RSS, by
    writing 5 to /proc/PID/clear_refs (Linux 4.0+, own processes or root);
    False when the kernel refused."""
    done = True
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            done = False
    return done


def tree_peak_rss_bytes(root: int) -> int:
    """VmHWM (peak RSS since start or the last ``reset_peak_rss``) of ``root``'s
    processes added up: at least the tree's peak, exact for one process."""
    total = 0
    for pid in process_tree(root):
        try:
            total += _status_kib(pid, "VmHWM") * 1024
        except OSError:
            pass
    return total


def tree_sample(root: int) -> tuple[int, float]:
    """(RSS in bytes, CPU seconds so far) of ``root`` and its descendants, added up,
    from one pass over /proc."""
    stats = _proc_stats()
    tree = _tree(root, stats)
    cpu = sum(sum(int(stats[pid][i]) for i in (11, 12, 13, 14)) for pid in tree) / _CLK_TCK
    rss = 0
    for pid in tree:
        try:
            rss += rss_bytes(pid)
        except (OSError, ServerError):
            pass  # exited between the listing and the read
    return rss, cpu


class RssSampler:
    """Reads the RSS and CPU time of a process tree every ``interval`` seconds in a
    thread, as (seconds since ``started``, RSS bytes, CPU seconds so far) triples,
    ``started`` being a time.monotonic() reading (comparable across processes on
    Linux: CLOCK_MONOTONIC). Use as a context manager."""

    def __init__(self, root: int, interval: float) -> None:
        self.root = root
        self.interval = interval
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.started = 0.0

    def _run(self) -> None:
        while True:
            try:
                rss, cpu = tree_sample(self.root)
            except OSError:
                return
            self.samples.append((round(time.monotonic() - self.started, 3), rss, cpu))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self) -> int:
        return max((rss for _, rss, _ in self.samples), default=0)


def socket_count(pid: int) -> int:
    """How many sockets a process holds open (listening ones included)."""
    count = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def tree_socket_count(root: int) -> int:
    """Sockets held open by ``root`` and its descendants, added up."""
    total = 0
    for pid in process_tree(root):
        try:
            total += socket_count(pid)
        except OSError:
            pass
    return total


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> dict[int, list[str]]:
    """For every process: the fields of /proc/PID/stat after the command name.

    Index 1 is the parent's PID, 11 and 12 utime and stime, 13 and 14 the same
    for reaped children, 19 the start time (see proc(5); the indices are the
    field numbers minus 3).
    """
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stats[int(entry)] = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
    return stats


def _tree(root: int, stats: dict[int, list[str]]) -> set[int]:
    tree = {root}
    grew = True
    while grew:
        children = {pid for pid, fields in stats.items() if int(fields[1]) in tree} - tree
        tree |= children
        grew = bool(children)
    return tree & stats.keys()


def process_tree(root: int) -> set[int]:
    """``root`` and its descendants, such as gunicorn's worker under its master."""
    return _tree(root, _proc_stats()) | {root}


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and its descendants.

    All threads are counted (/proc/PID/stat sums them), and so are descendants
    that have exited and been reaped (through their parent's cutime and cstime).
    """
    stats = _proc_stats()
    ticks = sum(sum(int(stats[pid][i]) for i in (11, 12, 13, 14)) for pid in _tree(root, stats))
    return ticks / _CLK_TCK


def process_cpu_seconds(root: int) -> dict[tuple[int, int], float]:
    """CPU seconds (user + system) used so far by each live process of ``root``'s tree,
    keyed by (pid, start): how a server of several processes shares its work."""
    stats = _proc_stats()
    return {
        (pid, int(stats[pid][19])): (int(stats[pid][11]) + int(stats[pid][12])) / _CLK_TCK
        for pid in _tree(root, stats)
    }


def machine_cpu_seconds() -> tuple[float, float, float]:
    """Seconds all CPUs together have spent busy, idle (with iowait), and stolen by
    the hypervisor (a vCPU wanted to run while the host ran something else), from
    the ``cpu`` line of /proc/stat. Busy counts every process, short-lived ones
    included, and interrupt handling."""
    with open("/proc/stat") as f:
        # cpu user nice system idle iowait irq softirq steal (guest time is in user)
        ticks = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = ticks + [0] * (8 - len(ticks))
    busy = user + nice + system + irq + softirq
    return busy / _CLK_TCK, (idle + iowait) / _CLK_TCK, steal / _CLK_TCK


def _cpu_times(exclude: set[int]) -> dict[tuple[int, int], float]:
    """CPU seconds (user + system) of every process but ``exclude``, keyed by (pid, start)."""
    return {
        (pid, int(fields[19])): (int(fields[11]) + int(fields[12])) / _CLK_TCK
        for pid, fields in _proc_stats().items()
        if pid not in exclude
    }


class OtherLoad:
    """CPU used by processes other than ``exclude``, wrk and us while a run lasts.

    Pinning keeps the server and wrk apart, but anything else on the machine
    still competes with them; this says how much of it there was, as a fraction
    of one CPU. Processes that start and end within the run are not seen.
    """

    def __init__(self, *exclude: int) -> None:
        self.exclude = {os.getpid(), *exclude}
        self.before = _cpu_times(self.exclude)
        self.started = time.monotonic()

    def fraction(self) -> float:
        after = _cpu_times(self.exclude)
        wall = time.monotonic() - self.started
        used = sum(t - self.before.get(key, 0.0) for key, t in after.items())
        return max(0.0, used / wall) if wall > 0 else 0.0


def calibration_ms(cpu: int | None, loops: int = 1_000_000) -> float:
    """Milliseconds a fixed pure-Python loop takes on ``cpu`` (the best of three).

    A vCPU on a shared host can run slower for a while with nothing inside the
    machine to show for it; timing the same loop before and after each run
    shows it. Lower is faster.
    """
    before = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            total = 0
            for i in range(loops):
                total += i
            best = min(best, time.perf_counter() - started)
    finally:
        os.sched_setaffinity(0, before)
    return best * 1000


def write_json(prefix: str, payload: object) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{prefix}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain left/right aligned text table (numbers right, first column left)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def fmt(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]))
        return "  ".join(out).rstrip()

    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))
    sys.stdout.flush()
