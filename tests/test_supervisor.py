"""Worker processes: the supervisor's policy as tables, then the real command.

The policy tests feed `Policy` events with made-up times and compare the
actions it returns; no process is started. The process tests run
``python -m aserve ... --workers N`` in a process group of its own (killed
whole at teardown), read its start line and its log, and talk HTTP to it.
Every wait polls for a condition with a deadline; none sleeps a fixed time
to let something happen.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from aserve.supervisor import (
    BACKOFF_FIRST_S,
    KILL_MARGIN_S,
    Action,
    Backoff,
    Exit,
    Kill,
    Log,
    Message,
    Policy,
    Spawn,
    Started,
    parse_messages,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork and POSIX signals")

ROOT = Path(__file__).resolve().parent.parent
#: Longest wait for anything a test expects from the server.
WAIT_S = 10.0

# --------------------------------------------------------------------------- the pipe


def test_messages_are_parsed_and_a_cut_ready_line_waits() -> None:
    messages, rest = parse_messages(b"Rapp:app (asgi3)\n..M.Rdir")
    assert messages == [
        Message("ready", "app:app (asgi3)"),
        Message("beat"),
        Message("beat"),
        Message("recycle"),
        Message("beat"),
    ]
    assert rest == b"Rdir"
    assert parse_messages(rest + b"ectory /srv\n") == ([Message("ready", "directory /srv")], b"")


def test_backoff_doubles_while_workers_die_young_and_resets_after_a_healthy_one() -> None:
    backoff = Backoff(first=0.1, most=1.0, healthy_after=5.0)
    assert [backoff.failed(0.5) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.failed(60.0) == 0.1
    assert backoff.failed(0.0) == 0.2


# --------------------------------------------------------------------------- the policy


def logs(actions: list[Action], level: int = logging.INFO) -> list[str]:
    """The messages of the Log actions at `level` or above."""
    return [a.message for a in actions if isinstance(a, Log) and a.level >= level]


def of(actions: list[Action], kind: type[Any]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


class Fleet:
    """A Policy and made-up pids: `spawn` plays the shell's part of a Spawn."""

    def __init__(self, workers: int = 2, **options: Any) -> None:
        self.policy = Policy(workers, **options)
        self.next_pid = 100
        self.now = 0.0

    def run(self, actions: list[Action]) -> list[int]:
        """Start what `actions` ask for; the new pids."""
        pids = []
        for spawn in of(actions, Spawn):
            self.next_pid += 1
            self.policy.spawned(self.next_pid, spawn, self.now)
            pids.append(self.next_pid)
        return pids

    def ready(self, pid: int) -> list[Action]:
        return self.policy.message(pid, Message("ready", "app:app (asgi3)"), self.now)

    def started(self) -> list[int]:
        """Boot: the first worker, then the others once it is ready."""
        (first,) = self.run(self.policy.start(self.now))
        actions = self.ready(first)
        assert of(actions, Started) == [Started("app:app (asgi3)")]
        others = self.run(actions)
        for pid in others:
            self.ready(pid)
        return [first, *others]


def test_boot_starts_one_worker_then_the_others_once_it_is_ready() -> None:
    fleet = Fleet(3)
    actions = fleet.policy.start(0.0)
    assert actions == [Spawn(0)]
    (first,) = fleet.run(actions)
    actions = fleet.ready(first)
    assert logs(actions) == [f"worker {first} started"]
    assert of(actions, Spawn) == [Spawn(1), Spawn(2)]


@pytest.mark.parametrize("status", [2, 1, -9])
def test_a_first_worker_that_fails_to_boot_ends_the_supervisor_quietly(status: int) -> None:
    fleet = Fleet(4)
    (first,) = fleet.run(fleet.policy.start(0.0))
    actions = fleet.policy.exited(first, status, 0.5)
    # The worker printed why; the supervisor adds nothing above DEBUG.
    assert logs(actions) == []
    assert of(actions, Exit) == [Exit(status if status > 0 else 1)]
    assert of(actions, Spawn) == []


def test_reload_waits_for_a_change_after_an_app_error_but_exits_on_a_bad_target() -> None:
    fleet = Fleet(1, reload=True)
    (first,) = fleet.run(fleet.policy.start(0.0))
    actions = fleet.policy.exited(first, 1, 0.5)
    assert of(actions, Exit) == []
    assert "waiting for a change to try again" in logs(actions)[0]
    assert of(fleet.policy.tick(60.0), Spawn) == []
    assert of(fleet.policy.changed(["/src/app.py"], 61.0), Spawn) == [Spawn(0)]
    fleet = Fleet(1, reload=True)
    (first,) = fleet.run(fleet.policy.start(0.0))
    assert of(fleet.policy.exited(first, 2, 0.5), Exit) == [Exit(2)]


def test_a_worker_that_dies_is_restarted_after_a_growing_delay() -> None:
    fleet = Fleet(2)
    first, second = fleet.started()
    actions = fleet.policy.exited(first, -9, 1.0)
    assert logs(actions) == [
        f"worker {first} was killed by SIGKILL (unexpected); restarting in 0.1s"
    ]
    assert of(fleet.policy.tick(1.05), Spawn) == []
    fleet.now = 1.1
    (third,) = fleet.run(fleet.policy.tick(1.1))
    # It dies before it is ready: the next delay doubles.
    actions = fleet.policy.exited(third, 1, 1.3)
    assert logs(actions) == [
        f"worker {third} exited with status 1 (unexpected); restarting in 0.2s"
    ]
    assert fleet.policy.deadline(1.3) == pytest.approx(1.5)
    assert of(fleet.policy.tick(1.5), Spawn) == [Spawn(0)]


def test_a_worker_whose_heartbeat_stops_is_killed_and_replaced() -> None:
    fleet = Fleet(2, worker_timeout=3.0)
    first, second = fleet.started()
    fleet.policy.message(second, Message("beat"), 2.5)
    assert fleet.policy.tick(3.0) == []
    actions = fleet.policy.tick(3.1)
    assert actions[-1] == Kill(first, signal.SIGKILL)
    assert logs(actions) == [f"worker {first} did not answer for 3s (worker_timeout): killed"]
    actions = fleet.policy.exited(first, -9, 3.2)
    assert logs(actions) == []
    assert of(fleet.policy.tick(3.2 + BACKOFF_FIRST_S), Spawn) == [Spawn(0)]


def test_sighup_replaces_one_worker_at_a_time_new_before_old() -> None:
    fleet = Fleet(2)
    first, second = fleet.started()
    fleet.now = 10.0
    actions = fleet.policy.signalled(signal.SIGHUP, 10.0)
    assert of(actions, Spawn) == [Spawn(0, replaces=first)]
    (new_first,) = fleet.run(actions)
    # Nothing is stopped, and nothing else starts, until the new one is ready.
    assert of(fleet.policy.tick(11.0), Kill) == []
    assert of(fleet.policy.tick(11.0), Spawn) == []
    fleet.now = 11.0
    actions = fleet.ready(new_first)
    assert of(actions, Kill) == [Kill(first, signal.SIGTERM)]
    assert of(actions, Spawn) == [Spawn(1, replaces=second)]
    (new_second,) = fleet.run(actions)
    assert logs(fleet.policy.exited(first, 0, 11.5)) == [f"worker {first} stopped (reload)"]
    actions = fleet.ready(new_second)
    assert of(actions, Kill) == [Kill(second, signal.SIGTERM)]
    assert of(actions, Spawn) == []
    fleet.policy.exited(second, 0, 12.0)
    assert sorted(fleet.policy.workers) == [new_first, new_second]


def test_a_replacement_that_fails_to_start_leaves_the_old_worker_serving() -> None:
    fleet = Fleet(2, reload=True)
    first, second = fleet.started()
    fleet.now = 10.0
    (new,) = fleet.run(fleet.policy.changed(["/src/app.py"], 10.0))
    actions = fleet.policy.exited(new, 1, 10.3)
    assert logs(actions) == [
        f"reload failed: worker {new} exited with status 1 before it was ready; "
        f"worker {first} keeps serving"
    ]
    assert of(actions, Kill) == [] and of(actions, Spawn) == []
    assert of(fleet.policy.tick(30.0), Spawn) == []  # the rest of the round is called off
    # The next change tries again at once.
    assert of(fleet.policy.changed(["/src/app.py"], 31.0), Spawn) == [Spawn(0, replaces=first)]


def test_max_requests_recycles_through_a_replacement() -> None:
    fleet = Fleet(2, max_requests=100, max_requests_jitter=10, rng=random.Random(7))
    first, second = fleet.started()
    fleet.now = 5.0
    limits = [fleet.policy.workers[pid].max_requests for pid in (first, second)]
    assert all(limit is not None and 100 <= limit <= 110 for limit in limits)
    actions = fleet.policy.message(first, Message("recycle"), 5.0)
    (spawn,) = of(actions, Spawn)
    assert spawn.replaces == first
    (new,) = fleet.run(actions)
    # It says so again at every beat until it is replaced: one replacement only.
    assert of(fleet.policy.message(first, Message("recycle"), 5.5), Spawn) == []
    assert of(fleet.ready(new), Kill) == [Kill(first, signal.SIGTERM)]
    assert logs(fleet.policy.exited(first, 0, 6.0)) == [
        f"worker {first} reached max_requests ({limits[0]}): recycled"
    ]


def test_sigttin_and_sigttou_change_the_count_never_below_one() -> None:
    fleet = Fleet(2)
    first, second = fleet.started()
    actions = fleet.policy.signalled(signal.SIGTTIN, 5.0)
    assert of(actions, Spawn) == [Spawn(2)]
    (third,) = fleet.run(actions)
    fleet.ready(third)
    assert of(fleet.policy.signalled(signal.SIGTTOU, 6.0), Kill) == [Kill(third, signal.SIGTERM)]
    assert of(fleet.policy.signalled(signal.SIGTTOU, 6.1), Kill) == [Kill(second, signal.SIGTERM)]
    actions = fleet.policy.signalled(signal.SIGTTOU, 6.2)
    assert of(actions, Kill) == [] and "1 worker is the fewest" in logs(actions)[0]
    assert logs(fleet.policy.exited(third, 0, 6.5)) == [f"worker {third} stopped (fewer workers)"]
    assert of(fleet.policy.exited(second, 0, 6.5), Spawn) == []
    assert fleet.policy.count == 1


def test_sigterm_stops_everyone_then_exits_and_a_second_one_forces() -> None:
    fleet = Fleet(2, graceful_timeout=5.0)
    first, second = fleet.started()
    actions = fleet.policy.signalled(signal.SIGTERM, 10.0)
    assert of(actions, Kill) == [Kill(first, signal.SIGTERM), Kill(second, signal.SIGTERM)]
    assert of(fleet.policy.exited(first, 0, 11.0), Exit) == []
    late = 10.0 + 5.0 + KILL_MARGIN_S + 0.1
    assert of(fleet.policy.tick(late), Kill) == [Kill(second, signal.SIGKILL)]
    assert of(fleet.policy.exited(second, -9, late), Exit) == [Exit(0)]

    fleet = Fleet(2)
    first, second = fleet.started()
    fleet.policy.signalled(signal.SIGINT, 10.0)
    actions = fleet.policy.signalled(signal.SIGINT, 10.5)
    assert of(actions, Kill) == [Kill(first, signal.SIGKILL), Kill(second, signal.SIGKILL)]


# --------------------------------------------------------------------------- processes

APP = textwrap.dedent(
    """
    import asyncio
    import os
    import time
    from pathlib import Path

    import aserve

    HERE = Path(__file__).parent

    async def app(request):
        if request.path == "/slow":
            (HERE / "inflight" / f"{os.getpid()}-{id(request)}").touch()
            await asyncio.sleep(1.0)
        elif request.path == "/block":
            time.sleep(30)
        return aserve.PlainTextResponse(str(os.getpid()))

    async def asgi_app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})

    def wsgi_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    """
)

CRASHY = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import aserve

    if (Path(__file__).parent / "broken").exists():
        raise RuntimeError("broken on purpose")

    async def app(request):
        return aserve.PlainTextResponse(str(os.getpid()))
    """
)

START_LINE = re.compile(
    r"aserve \S+ serving (?P<what>.+) on "
    r"(?:http://127\.0\.0\.1:(?P<port>\d+)|http\+unix://(?P<path>\S+)) "
    r"with (?P<how>.+) \(press Ctrl\+C to quit\)"
)


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASERVE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def until(condition: Callable[[], Any], timeout: float = WAIT_S, what: str = "") -> Any:
    """Poll `condition` until it is true; its value. Fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def pid_gone(pid: int) -> bool:
    """True when `pid` has exited (a zombie nobody reaps counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Supervised:
    """A running ``python -m aserve`` in its own process group. Its stdout and
    stderr are read by threads into `out` and `err`, line by line."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], fds: tuple[int, ...]):
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            pass_fds=fds,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._collect, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.match: re.Match[str] | None = None

    @staticmethod
    def _collect(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_started(self) -> re.Match[str]:
        def started() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"aserve exited with {self.proc.returncode}: {self.stderr}")
            return START_LINE.fullmatch(self.out[0]) if self.out else None

        self.match = until(started, what="the start line")
        return self.match

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    def log(self, pattern: str) -> list[re.Match[str]]:
        compiled = re.compile(pattern)
        return [m for m in (compiled.search(line) for line in list(self.err)) if m]

    def wait_log(
        self, pattern: str, count: int = 1, timeout: float = WAIT_S
    ) -> list[re.Match[str]]:
        return until(
            lambda: (found := self.log(pattern)) and len(found) >= count and found,
            timeout,
            f"{count} log line(s) matching {pattern!r}; log:\n{self.stderr}",
        )

    def started_pids(self) -> list[int]:
        return [int(m.group(1)) for m in self.log(r"worker (\d+) started")]

    def connection(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        assert self.match is not None
        if self.match.groupdict().get("path"):
            return UnixHTTPConnection(self.match.group("path"), timeout)
        return http.client.HTTPConnection(
            "127.0.0.1", int(self.match.group("port")), timeout=timeout
        )

    def get(self, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
        """One request on a new connection: status and body."""
        conn = self.connection(timeout)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def pid_answering(self) -> int:
        status, body = self.get()
        assert status == 200
        return int(body)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"aserve did not exit; log:\n{self.stderr}") from None
        self._close()
        return status

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(5)
        self._close()

    def _close(self) -> None:
        for reader in self._readers:
            reader.join(2)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class Launch(Protocol):
    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        fds: tuple[int, ...] = (),
        started: bool = True,
        command: list[str] | None = None,
    ) -> Supervised: ...


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "apps"
    folder.mkdir()
    (folder / "inflight").mkdir()
    (folder / "myapp.py").write_text(APP)
    (folder / "crashy.py").write_text(CRASHY)
    return folder


@pytest.fixture
def launch(app_dir: Path) -> Iterator[Launch]:
    running: list[Supervised] = []

    def _launch(
        *args: str,
        env: dict[str, str] | None = None,
        fds: tuple[int, ...] = (),
        started: bool = True,
        command: list[str] | None = None,
    ) -> Supervised:
        command = command or [sys.executable, "-m", "aserve", *args]
        server = Supervised(command, app_dir, environment(env), fds)
        running.append(server)
        if started:
            server.wait_started()
        return server

    yield _launch
    for server in running:
        server.kill_group()


class Load:
    """Client threads making requests on new connections until stopped;
    every failure is kept."""

    def __init__(self, server: Supervised, threads: int = 4) -> None:
        self.server = server
        self.pids: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self) -> None:
        deadline = time.monotonic() + 40  # never outlive a test
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = self.server.get()
                if status != 200:
                    self.failures.append(f"status {status}: {body}")
                else:
                    self.pids.append(int(body))
            except Exception as exc:
                self.failures.append(repr(exc))

    def answered(self) -> int:
        return len(self.pids)

    def wait_more(self, count: int) -> None:
        target = self.answered() + count
        until(lambda: self.answered() >= target, what=f"{count} more answers")


def distinct_pids(server: Supervised, count: int) -> set[int]:
    seen: set[int] = set()

    def enough() -> bool:
        seen.add(server.pid_answering())
        return len(seen) >= count

    until(enough, what=f"{count} workers answering")
    return seen


def test_two_workers_answer_with_their_own_pids(launch: Launch) -> None:
    server = launch("myapp:app", "--workers", "2", "--port", "0")
    assert server.match is not None
    assert server.match.group("what") == "myapp:app (native)"
    assert server.match.group("how") == "2 workers"
    pids = distinct_pids(server, 2)
    assert pids == set(server.started_pids())
    assert server.pid not in pids
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert len(server.log(r"worker \d+ stopped \(shutdown\)")) == 2


def test_a_killed_worker_is_replaced(launch: Launch) -> None:
    server = launch("myapp:app", "--workers", "2", "--port", "0")
    server.wait_log(r"worker \d+ started", 2)
    victim = server.started_pids()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_log(rf"worker {victim} was killed by SIGKILL \(unexpected\); restarting in 0\.1s")
    server.wait_log(r"worker \d+ started", 3)
    replacement = server.started_pids()[-1]
    assert replacement != victim
    seen = distinct_pids(server, 2)
    assert victim not in seen and replacement in seen


def test_sigterm_lets_requests_in_flight_finish(launch: Launch, app_dir: Path) -> None:
    server = launch("myapp:app", "--workers", "2", "--port", "0")
    results: list[tuple[int, str] | str] = []

    def slow() -> None:
        try:
            results.append(server.get("/slow"))
        except Exception as exc:
            results.append(repr(exc))

    clients = [threading.Thread(target=slow) for _ in range(4)]
    for client in clients:
        client.start()
    until(lambda: len(list((app_dir / "inflight").iterdir())) == 4, what="4 requests in flight")
    server.signal(signal.SIGTERM)
    for client in clients:
        client.join(WAIT_S)
    assert server.wait_exit() == 0
    assert len(results) == 4
    assert all(isinstance(r, tuple) and r[0] == 200 for r in results), results


def test_ctrl_c_reaches_the_group_and_only_the_supervisor_acts_on_it(launch: Launch) -> None:
    server = launch("myapp:app", "--workers", "2", "--port", "0")
    server.wait_log(r"worker \d+ started", 2)
    os.killpg(server.pid, signal.SIGINT)
    assert server.wait_exit() == 0
    assert len(server.log(r"worker \d+ stopped \(shutdown\)")) == 2
    assert "Traceback" not in server.stderr and "KeyboardInterrupt" not in server.stderr


@pytest.mark.parametrize("sockets", [(), ("--reuse-port",)], ids=["shared", "reuse-port"])
@pytest.mark.timeout(45)
def test_sighup_replaces_every_worker_under_load_without_a_failed_request(
    launch: Launch, sockets: tuple[str, ...]
) -> None:
    server = launch("myapp:app", "--workers", "2", "--port", "0", *sockets)
    server.wait_log(r"worker \d+ started", 2)
    old = set(server.started_pids())
    with Load(server) as load:
        load.wait_more(20)
        server.signal(signal.SIGHUP)
        server.wait_log(r"worker \d+ stopped \(reload\)", 2)
        load.wait_more(40)
    assert load.failures == []
    new = set(server.started_pids()) - old
    assert len(new) == 2
    assert {int(m.group(1)) for m in server.log(r"worker (\d+) stopped \(reload\)")} == old
    # (The last answers: a client thread may note an earlier one a little late.)
    assert set(load.pids[-20:]) <= new
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


@pytest.mark.timeout(45)
def test_max_requests_recycles_workers_without_a_failed_request(launch: Launch) -> None:
    server = launch(
        "myapp:app", "--workers", "2", "--port", "0", "--max-requests", "30",
        "--max-requests-jitter", "10",
    )  # fmt: skip
    with Load(server, threads=3) as load:
        server.wait_log(r"worker \d+ reached max_requests \((\d+)\): recycled", 3)
    assert load.failures == []
    for match in server.log(r"reached max_requests \((\d+)\)"):
        assert 30 <= int(match.group(1)) <= 40
    assert len(set(load.pids)) >= 4


def test_sigttin_and_sigttou_add_and_remove_workers(launch: Launch) -> None:
    server = launch("myapp:app", "--workers", "2", "--port", "0")
    server.wait_log(r"worker \d+ started", 2)
    server.signal(signal.SIGTTIN)
    server.wait_log(r"SIGTTIN: 3 workers")
    server.wait_log(r"worker \d+ started", 3)
    assert len(distinct_pids(server, 3)) == 3
    server.signal(signal.SIGTTOU)
    server.wait_log(r"worker \d+ stopped \(fewer workers\)")
    server.signal(signal.SIGTTOU)
    server.wait_log(r"worker \d+ stopped \(fewer workers\)", 2)
    server.signal(signal.SIGTTOU)
    server.wait_log(r"SIGTTOU ignored: 1 worker is the fewest")
    (stopped_a, stopped_b) = (int(m.group(1)) for m in server.log(r"worker (\d+) stopped"))
    survivor = set(server.started_pids()) - {stopped_a, stopped_b}
    assert {server.pid_answering() for _ in range(5)} == survivor


def test_a_worker_whose_loop_blocks_is_killed_and_replaced(launch: Launch) -> None:
    server = launch("myapp:app", "--workers", "2", "--port", "0", "--worker-timeout", "1")
    server.wait_log(r"worker \d+ started", 2)
    blocked = threading.Thread(target=lambda: _ignore_errors(server.get, "/block", 10), daemon=True)
    blocked.start()
    match = server.wait_log(r"worker (\d+) did not answer for 1s \(worker_timeout\): killed")[0]
    victim = int(match.group(1))
    until(lambda: pid_gone(victim), what="the blocked worker to be gone")
    server.wait_log(r"worker \d+ started", 3)
    assert victim not in distinct_pids(server, 2)
    blocked.join(WAIT_S)


def _ignore_errors(function: Callable[..., Any], *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        pass


def test_a_bad_target_gives_one_line_and_status_2(app_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aserve", "nope:app", "--workers", "3", "--port", "0"],
        cwd=app_dir,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aserve: error: cannot import 'nope'")


def test_an_app_that_keeps_crashing_is_restarted_with_a_growing_delay(
    launch: Launch, app_dir: Path
) -> None:
    server = launch("crashy:app", "--workers", "2", "--port", "0")
    server.wait_log(r"worker \d+ started", 2)
    (app_dir / "broken").touch()
    for pid in server.started_pids():
        os.kill(pid, signal.SIGKILL)
    restarts = (
        r"worker \d+ (?:was killed by SIGKILL|exited with status 1) \(unexpected\); "
        r"restarting in ([\d.]+)s"
    )
    began = time.monotonic()
    server.wait_log(restarts, 5)
    took = time.monotonic() - began
    delays = [float(m.group(1)) for m in server.log(restarts)]
    # Both slots share one back-off. The fifth death comes after slot 0 waited
    # 0.1 s, then 0.4 s: however fast a worker fails, nothing spins.
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert took >= 0.5
    (app_dir / "broken").unlink()
    server.wait_log(r"worker \d+ started", 3)
    assert "RuntimeError: broken on purpose" in server.stderr


def test_workers_on_a_unix_socket(launch: Launch, tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    server = launch("myapp:app", "--workers", "2", "--uds", str(path))
    assert server.match is not None and server.match.group("path") == str(path)
    assert len(distinct_pids(server, 2)) == 2
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists()


def test_workers_on_an_inherited_socket(launch: Launch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        fd = listener.fileno()
        server = launch("myapp:app", "--workers", "2", "--fd", str(fd), fds=(fd,))
        assert server.match is not None
        assert int(server.match.group("port")) == listener.getsockname()[1]
    assert len(distinct_pids(server, 2)) == 2


def test_reuse_port_gives_each_slot_its_socket(launch: Launch) -> None:
    server = launch("myapp:app", "--workers", "2", "--port", "0", "--reuse-port")
    assert len(distinct_pids(server, 2)) == 2
    victim = server.started_pids()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_log(r"worker \d+ started", 3)
    # The replacement serves the slot's socket: both slots answer again.
    seen = distinct_pids(server, 2)
    assert victim not in seen


@pytest.mark.parametrize(("target", "kind"), [("asgi_app", "asgi3"), ("wsgi_app", "wsgi")])
def test_asgi_and_wsgi_apps_under_workers(launch: Launch, target: str, kind: str) -> None:
    server = launch(f"myapp:{target}", "--workers", "2", "--port", "0")
    assert server.match is not None and server.match.group("what") == f"myapp:{target} ({kind})"
    assert len(distinct_pids(server, 2)) == 2


def test_max_requests_alone_runs_one_supervised_worker(launch: Launch) -> None:
    server = launch("myapp:app", "--max-requests", "5", "--port", "0")
    assert server.match is not None and server.match.group("how") == "1 worker"
    first = server.pid_answering()
    until(lambda: server.pid_answering() != first, what="a recycled worker")


def test_workers_stop_when_the_supervisor_is_killed(launch: Launch) -> None:
    server = launch("myapp:app", "--workers", "2", "--port", "0")
    server.wait_log(r"worker \d+ started", 2)
    pids = server.started_pids()
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(WAIT_S)
    until(lambda: all(pid_gone(pid) for pid in pids), what="the orphaned workers to exit")


EMBEDDED = textwrap.dedent(
    """
    import logging
    import os

    import aserve
    from aserve.supervisor import run

    logging.basicConfig(level=logging.INFO, format="%(message)s")

    async def app(request):
        return aserve.PlainTextResponse(str(os.getpid()))

    run(app, workers=2, port=0)
    """
)


def test_a_program_runs_its_handler_object_in_workers(launch: Launch, app_dir: Path) -> None:
    (app_dir / "embedded.py").write_text(EMBEDDED)
    server = launch(command=[sys.executable, "embedded.py"], started=False)
    (server.match,) = server.wait_log(
        r"serving app on http://127\.0\.0\.1:(?P<port>\d+) with 2 workers"
    )
    assert len(distinct_pids(server, 2)) == 2
    server.signal(signal.SIGHUP)
    server.wait_log(r"worker \d+ stopped \(reload\)", 2)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


# --------------------------------------------------------------------------- metrics


def status_of(server: Supervised, port: int | None = None) -> dict[str, Any]:
    assert server.match is not None
    conn = http.client.HTTPConnection(
        "127.0.0.1", port or int(server.match.group("port")), timeout=5
    )
    try:
        conn.request("GET", "/status?format=json")
        response = conn.getresponse()
        assert response.status == 200
        found: dict[str, Any] = json.loads(response.read())
        return found
    finally:
        conn.close()


def test_metrics_and_status_are_summed_over_workers_and_survive_a_restart(
    launch: Launch,
) -> None:
    server = launch(
        "myapp:app", "--workers", "2", "--port", "0", "--reuse-port",
        "--metrics-path", "/metrics", "--status-path", "/status", "--metrics-port", "0",
    )  # fmt: skip
    listening = server.wait_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics and .*/status")
    metrics_port = int(listening[0].group(1))
    server.wait_log(r"worker \d+ started", 2)
    for _ in range(40):
        assert server.get()[0] == 200
    scrapes = 0

    def counted(expected: int) -> dict[str, Any] | None:
        # Every process publishes once a second; the scrapes on the app's
        # port are requests too, once answered.
        nonlocal scrapes
        found = status_of(server)
        scrapes += 1
        total = found["requests"]["total"]
        return found if total == expected + scrapes - 1 else None

    found = until(lambda: counted(40), what="40 requests counted over both workers")
    serving = found["workers"]["serving"]
    assert len(serving) == 2 and found["workers"]["wanted"] == 2
    assert {w["pid"] for w in serving} == set(server.started_pids())
    # Both served (the kernel spreads new connections over the two sockets).
    assert all(w["requests"] > 0 for w in serving)
    assert sum(w["requests"] for w in serving) == found["requests"]["total"]
    # The metrics listener counts nothing of its own and sees the same numbers.
    on_metrics_port = status_of(server, metrics_port)
    assert on_metrics_port["requests"]["total"] >= found["requests"]["total"]
    before = on_metrics_port["requests"]["total"]
    # A worker killed (after it published) and replaced: nothing goes back.
    time.sleep(1.2)  # one publishing period, so that the victim's last requests are in
    victim = serving[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    server.wait_log(r"worker \d+ started", 3)

    def replaced() -> dict[str, Any] | None:
        found = status_of(server, metrics_port)
        pids = {w["pid"] for w in found["workers"]["serving"]}
        return found if len(pids) == 2 and victim not in pids else None

    after = until(replaced, what="the replacement in the status")
    assert after["workers"]["restarts"]["exited"] == 1
    assert after["requests"]["total"] >= before
    text = prometheus_text(metrics_port)
    assert 'aserve_worker_restarts_total{reason="exited"} 1' in text
    assert "aserve_workers 2" in text
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def prometheus_text(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()
