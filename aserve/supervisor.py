"""Worker processes: bind once, fork workers, keep them serving, replace them without a refusal.

The supervisor binds the listener once (TCP, a Unix socket or an inherited
``--fd``; with ``reuse_port`` one ``SO_REUSEPORT`` socket per worker slot) and
forks workers that inherit it. Each worker builds its own handler (the command
line imports the application there, so a restart picks up new code; the
supervisor never imports it), serves with a `Server` on its copy of the socket,
and talks back through a pipe: ``R<what>\\n`` once it listens, then one byte a
second from its event loop (``.``, or ``M`` once it has served
``max_requests``). A loop that blocks stops beating.

Two halves, as in the rest of aserve:

- `Policy` decides and does no IO: it takes events (a signal, a pipe message,
  a child that exited, the time) and returns actions (`Spawn`, `Kill`, `Log`,
  `Started`, `Exit`). Restarts back off while workers keep dying young;
  a replacement (SIGHUP, ``--reload``, ``max_requests``) starts the new worker
  first and stops the old one once the new one is ready, one slot at a time;
  every wait has a deadline, then SIGKILL.
- `Supervisor` is the shell: it forks, kills and reaps, in a plain loop over
  `selectors` (signal handlers only enqueue; `signal.set_wakeup_fd` wakes the
  loop). It runs no event loop and never imports the application.

A worker is a fresh process after the fork: default signal handling, SIGINT
ignored (Ctrl+C reaches the whole process group; the supervisor stops the
workers with SIGTERM), none of the supervisor's descriptors but its socket and
its pipe. It shuts down by itself when the supervisor goes away.

This module must not import the command line (it sits below it) and must never
be imported on the single-process path.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import importlib
import logging
import os
import random
import selectors
import signal
import socket
import stat
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any, Literal, NoReturn, Protocol

from .config import Config
from .errors import AserveError, ConfigError, ListenError
from .exchange import Handler
from .metrics import Board, Share
from .server import Server, listen_error, listen_url, metrics_url, new_event_loop_factory

logger = logging.getLogger("aserve.error")
#: Life-cycle lines (workers started, stopped, replaced): errors and warnings
#: go to aserve.error.
lifecycle = logging.getLogger("aserve")

#: A worker's loop beats this often, or four times per worker_timeout when that is shorter.
BEAT_INTERVAL_S = 1.0
#: The first restart delay after a worker died; it doubles, up to BACKOFF_MAX_S,
#: while workers keep dying within HEALTHY_AFTER_S of becoming ready.
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 10.0
HEALTHY_AFTER_S = 5.0
#: A worker gets worker_timeout to start listening, but never less than this:
#: importing a large application can take a while, and nothing beats meanwhile.
BOOT_TIMEOUT_MIN_S = 30.0
#: What a stopping worker gets beyond graceful_timeout before SIGKILL: after the
#: grace its server still cancels handlers and waits for them (a few seconds).
KILL_MARGIN_S = 10.0
#: The supervisor looks at its clocks at least this often.
TICK_S = 0.5
#: Process slots of the metrics board: far more than workers ever run at once
#: (a replacement overlaps the worker it replaces); pages never used cost nothing.
BOARD_SLOTS = 256
#: Polling for --reload: how often the watched files' times are read.
POLL_INTERVAL_S = 0.5

#: Never watched by --reload (added to the user's own --reload-exclude).
DEFAULT_RELOAD_EXCLUDES = (".*", "__pycache__", ".venv", "venv", "node_modules", "*.pyc")
DEFAULT_RELOAD_INCLUDES = ("*.py",)

# --------------------------------------------------------------------------- the pipe

READY = b"R"  # then what the worker serves, then b"\n"
BEAT = b"."
RECYCLE = b"M"  # a beat that also says: max_requests reached, replace me


@dataclass(frozen=True, slots=True)
class Message:
    """One message from a worker: ready (with what it serves), beat or recycle."""

    kind: Literal["ready", "beat", "recycle"]
    text: str = ""


def parse_messages(data: bytes) -> tuple[list[Message], bytes]:
    """The whole messages in `data`, and the unfinished rest (a ready line cut short)."""
    messages: list[Message] = []
    at = 0
    while at < len(data):
        byte = data[at : at + 1]
        if byte == READY:
            end = data.find(b"\n", at)
            if end < 0:
                break
            messages.append(Message("ready", data[at + 1 : end].decode("utf-8", "replace")))
            at = end + 1
            continue
        messages.append(Message("recycle" if byte == RECYCLE else "beat"))
        at += 1
    return messages, data[at:]


# --------------------------------------------------------------------------- policy


class Backoff:
    """Restart delays: `first`, doubling up to `most` while workers die young;
    back to `first` once a worker served `healthy_after` seconds."""

    def __init__(
        self,
        first: float = BACKOFF_FIRST_S,
        most: float = BACKOFF_MAX_S,
        healthy_after: float = HEALTHY_AFTER_S,
    ) -> None:
        self.first = first
        self.most = most
        self.healthy_after = healthy_after
        self.delay = first

    def failed(self, served: float) -> float:
        """The delay before the next start, after a worker died having served `served` seconds."""
        if served >= self.healthy_after:
            self.delay = self.first
        delay = self.delay
        self.delay = min(delay * 2, self.most)
        return delay


@dataclass(frozen=True, slots=True)
class Spawn:
    """Fork a worker for `slot`; once it is ready, stop `replaces`."""

    slot: int
    max_requests: int | None = None
    replaces: int | None = None


@dataclass(frozen=True, slots=True)
class Kill:
    pid: int
    signal: signal.Signals


@dataclass(frozen=True, slots=True)
class Log:
    level: int
    message: str


@dataclass(frozen=True, slots=True)
class Started:
    """The first worker is ready: the server is up (`what` is what it serves)."""

    what: str


@dataclass(frozen=True, slots=True)
class Exit:
    status: int


Action = Spawn | Kill | Log | Started | Exit

Phase = Literal["booting", "running", "stopping", "forced"]


@dataclass(slots=True)
class WorkerState:
    """What the policy knows of one worker process."""

    pid: int
    slot: int
    born: float
    beat: float
    max_requests: int | None = None
    ready_at: float | None = None
    #: Started as a replacement and not ready yet.
    replacing: bool = False
    #: The worker this one replaces, stopped once this one is ready (None when
    #: that one is already gone).
    replaces: int | None = None
    #: The worker starting to replace this one.
    replaced_by: int | None = None
    #: Why we asked it to stop ("reload", "max_requests", "fewer workers",
    #: "shutdown", "timeout"); None while it is meant to serve.
    stop_reason: str | None = None
    #: When a worker asked to stop is killed if it has not exited.
    kill_at: float | None = None
    #: Start another in its slot once it is gone (it was killed as hung).
    restart: bool = False


class Policy:
    """The supervisor's decisions, without IO: every method takes the current
    time and returns what to do.

    Slots 0..count-1 each want one serving worker. A replacement runs in the
    slot of the worker it replaces, one at a time (`roll`), so that the
    listener always has the other workers accepting.
    """

    def __init__(
        self,
        workers: int,
        *,
        worker_timeout: float = 30.0,
        graceful_timeout: float = 30.0,
        max_requests: int | None = None,
        max_requests_jitter: int = 0,
        reload: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.count = workers
        self.worker_timeout = worker_timeout
        self.boot_timeout = max(worker_timeout, BOOT_TIMEOUT_MIN_S)
        self.stop_timeout = graceful_timeout + KILL_MARGIN_S
        self.max_requests = max_requests
        self.max_requests_jitter = max_requests_jitter
        self.reload = reload
        self.rng = rng or random.Random()
        self.phase: Phase = "booting"
        self.workers: dict[int, WorkerState] = {}
        #: Slots waiting for a restart, and when it is due.
        self.pending: dict[int, float] = {}
        #: Workers waiting to be replaced, oldest first, with the reason.
        self.roll: deque[tuple[int, str]] = deque()
        #: Why a replacement is starting now (one at a time), else None.
        self.rolling: str | None = None
        #: No replacement starts before this (a failed one backs off).
        self.roll_after = 0.0
        #: --reload: the first worker failed; the next change tries again.
        self.waiting = False
        self.backoff = Backoff()
        self._out: list[Action] = []

    # -- events ------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Start the first worker; the others follow once it is ready."""
        self._spawn(0)
        return self._flush()

    def spawned(self, pid: int, spawn: Spawn, now: float) -> None:
        """The worker asked for by `spawn` now exists as `pid`."""
        self.workers[pid] = WorkerState(
            pid,
            spawn.slot,
            born=now,
            beat=now,
            max_requests=spawn.max_requests,
            replacing=spawn.replaces is not None,
            replaces=spawn.replaces,
        )
        old = self.workers.get(spawn.replaces) if spawn.replaces is not None else None
        if old is not None:
            old.replaced_by = pid

    def spawn_failed(self, spawn: Spawn, error: str, now: float) -> list[Action]:
        """The fork for `spawn` failed (out of processes or memory)."""
        self._log(logging.ERROR, f"cannot start a worker: {error}")
        if self.phase == "booting":
            self._out.append(Exit(1))
        elif spawn.replaces is not None:
            self.rolling = None
            old = self.workers.get(spawn.replaces)
            if old is not None:
                old.replaced_by = None
            self.roll.clear()
            self.roll_after = now + self.backoff.failed(0.0)
        else:
            self._schedule(spawn.slot, now + self.backoff.failed(0.0))
        return self._flush()

    def message(self, pid: int, message: Message, now: float) -> list[Action]:
        worker = self.workers.get(pid)
        if worker is None:
            return []
        worker.beat = now
        if message.kind == "ready" and worker.ready_at is None:
            worker.ready_at = now
            self._ready(worker, message.text, now)
        elif message.kind == "recycle" and self._replaceable(worker):
            if all(queued != pid for queued, _ in self.roll):
                self.roll.append((pid, "max_requests"))
            self._roll_next(now)
        return self._flush()

    def exited(self, pid: int, status: int, now: float) -> list[Action]:
        """Worker `pid` is gone; `status` is its exit code, or minus the signal that ended it."""
        worker = self.workers.pop(pid, None)
        if worker is None:
            return []
        self.roll = deque(entry for entry in self.roll if entry[0] != pid)
        served = now - worker.ready_at if worker.ready_at is not None else 0.0
        successor = self.workers.get(worker.replaced_by) if worker.replaced_by else None
        if successor is not None:
            successor.replaces = None  # nothing left to stop once it is ready
        old = self.workers.get(worker.replaces) if worker.replaces else None
        if worker.replacing:
            self.rolling = None
            if old is not None:
                old.replaced_by = None
        if self.phase in ("stopping", "forced"):
            self._log_stopped(worker, status)
            if not self.workers:
                self._out.append(Exit(0))
        elif self.phase == "booting" and worker.ready_at is None and not worker.replacing:
            self._boot_failed(worker, status)
        elif worker.replacing and worker.stop_reason in (None, "timeout"):
            # A replacement that never became ready: the old worker serves on,
            # and the rest of this round of replacements is called off.
            keeps = f"worker {old.pid} keeps serving" if old is not None else "restarting"
            self._log(
                logging.ERROR,
                f"{'reload failed: ' if self.reload else ''}worker {pid} "
                f"{describe_status(status)} before it was ready; {keeps}",
            )
            self.roll.clear()
            self.roll_after = now + self.backoff.failed(0.0)
            self._schedule(worker.slot, self.roll_after)
        elif worker.stop_reason is not None:
            self._log_stopped(worker, status)
            if worker.restart:
                self._schedule(worker.slot, now + self.backoff.failed(served))
        elif self._occupied(worker.slot) or worker.slot >= self.count:
            self._log(logging.WARNING, f"worker {pid} {describe_status(status)} (unexpected)")
        else:
            delay = self.backoff.failed(served)
            self._log(
                logging.WARNING,
                f"worker {pid} {describe_status(status)} (unexpected); restarting in {delay:.1f}s",
            )
            self._schedule(worker.slot, now + delay)
        self._roll_next(now)
        return self._flush()

    def signalled(self, sig: int, now: float) -> list[Action]:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._shutdown(now)
        elif sig == signal.SIGHUP:
            if self.phase == "running":
                self._log(logging.INFO, "SIGHUP: replacing the workers one by one")
                self._replace_all("reload", now)
            else:
                self._log(logging.INFO, f"SIGHUP ignored while {self.phase}")
        elif sig == signal.SIGTTIN and self.phase in ("booting", "running"):
            self.count += 1
            self._log(logging.INFO, f"SIGTTIN: {plural(self.count)}")
            if self.phase == "running":
                self._spawn(self.count - 1)
        elif sig == signal.SIGTTOU and self.phase in ("booting", "running"):
            if self.count == 1:
                self._log(logging.INFO, "SIGTTOU ignored: 1 worker is the fewest")
            else:
                self.count -= 1
                self._log(logging.INFO, f"SIGTTOU: {plural(self.count)}")
                self.pending.pop(self.count, None)
                for worker in list(self.workers.values()):
                    if worker.slot == self.count and worker.stop_reason is None:
                        self._stop(worker, "fewer workers", now)
        return self._flush()

    def changed(self, paths: Sequence[str], now: float) -> list[Action]:
        """--reload: watched files changed."""
        what = describe_paths(paths)
        if self.phase == "running":
            self._log(logging.INFO, f"reloading: {what} changed")
            self._replace_all("reload", now)
        elif self.phase == "booting":
            if self.waiting:
                self.waiting = False
                self._log(logging.INFO, f"trying again: {what} changed")
                self._spawn(0)
            else:
                # The worker starting now may have read the old code: replace
                # it once it is ready.
                for worker in self.workers.values():
                    self.roll.append((worker.pid, "reload"))
        return self._flush()

    def tick(self, now: float) -> list[Action]:
        """Restarts that are due, heartbeats that are late, stops that take too long."""
        for slot, due in sorted(self.pending.items()):
            if due <= now:
                del self.pending[slot]
                if self.phase == "running" and slot < self.count and not self._occupied(slot):
                    self._spawn(slot)
        for worker in list(self.workers.values()):
            if worker.stop_reason is None:
                limit = self.worker_timeout if worker.ready_at is not None else self.boot_timeout
                if now - worker.beat > limit:
                    if worker.ready_at is not None:
                        text = f"did not answer for {limit:g}s (worker_timeout): killed"
                    else:
                        text = f"did not start within {limit:g}s (worker_timeout): killed"
                    self._log(logging.ERROR, f"worker {worker.pid} {text}")
                    worker.stop_reason = "timeout"
                    worker.restart = self.phase == "running" and not worker.replacing
                    worker.kill_at = None
                    self._out.append(Kill(worker.pid, signal.SIGKILL))
            elif worker.kill_at is not None and now >= worker.kill_at:
                self._log(
                    logging.WARNING,
                    f"worker {worker.pid} still running {self.stop_timeout:g}s after "
                    "SIGTERM: killed",
                )
                worker.kill_at = None
                self._out.append(Kill(worker.pid, signal.SIGKILL))
        self._roll_next(now)
        return self._flush()

    def deadline(self, now: float) -> float:
        """When `tick` has something to do next (at most TICK_S from now)."""
        times = [now + TICK_S, *self.pending.values()]
        for worker in self.workers.values():
            if worker.stop_reason is None:
                limit = self.worker_timeout if worker.ready_at is not None else self.boot_timeout
                times.append(worker.beat + limit)
            elif worker.kill_at is not None:
                times.append(worker.kill_at)
        if self.roll and self.rolling is None and self.phase == "running":
            times.append(max(self.roll_after, now))
        return min(times)

    # -- decisions ---------------------------------------------------------

    def _ready(self, worker: WorkerState, what: str, now: float) -> None:
        self._log(logging.INFO, f"worker {worker.pid} started")
        if self.phase == "booting":
            self.phase = "running"
            self._out.append(Started(what))
            for slot in range(self.count):
                if not self._occupied(slot):
                    self._spawn(slot)
        if worker.replacing:
            reason = self.rolling or "reload"
            self.rolling = None
            worker.replacing = False
            old = self.workers.get(worker.replaces) if worker.replaces is not None else None
            worker.replaces = None
            if old is not None:
                old.replaced_by = None
                if old.stop_reason is None:
                    self._stop(old, reason, now)
        self._roll_next(now)

    def _boot_failed(self, worker: WorkerState, status: int) -> None:
        # The worker said why (one line, or a traceback and a line): say nothing more.
        if self.reload and status != 2:
            self.waiting = True
            self._log(
                logging.ERROR,
                f"worker {worker.pid} {describe_status(status)} before it was ready; "
                "waiting for a change to try again",
            )
            return
        self._log(logging.DEBUG, f"worker {worker.pid} {describe_status(status)} while starting")
        self._out.append(Exit(status if status > 0 else 1))

    def _shutdown(self, now: float) -> None:
        if self.phase in ("stopping", "forced"):
            self.phase = "forced"
            self._log(logging.WARNING, "forcing the shutdown")
            for worker in self.workers.values():
                worker.kill_at = None
                self._out.append(Kill(worker.pid, signal.SIGKILL))
            return
        self.phase = "stopping"
        self._log(logging.INFO, "shutting down (send the signal again to force)")
        self.pending.clear()
        self.roll.clear()
        self.rolling = None
        for worker in self.workers.values():
            if worker.stop_reason is None:
                self._stop(worker, "shutdown", now)
        if not self.workers:
            self._out.append(Exit(0))

    def _replace_all(self, reason: str, now: float) -> None:
        queued = {pid for pid, _ in self.roll}
        for worker in sorted(self.workers.values(), key=lambda w: w.born):
            if worker.stop_reason is None and worker.pid not in queued:
                self.roll.append((worker.pid, reason))
        # An explicit request: no back-off left over from a failed replacement.
        self.roll_after = now
        self._roll_next(now)

    def _roll_next(self, now: float) -> None:
        if self.phase != "running" or self.rolling is not None or now < self.roll_after:
            return
        while self.roll:
            pid, reason = self.roll.popleft()
            worker = self.workers.get(pid)
            if worker is None or not self._replaceable(worker) or worker.slot >= self.count:
                continue
            self.rolling = reason
            self._spawn(worker.slot, replaces=pid)
            return

    def _replaceable(self, worker: WorkerState) -> bool:
        return (
            self.phase == "running"
            and worker.stop_reason is None
            and worker.replaced_by is None
            and not worker.replacing
        )

    def _stop(self, worker: WorkerState, reason: str, now: float) -> None:
        worker.stop_reason = reason
        worker.kill_at = now + self.stop_timeout
        self._out.append(Kill(worker.pid, signal.SIGTERM))

    def _spawn(self, slot: int, replaces: int | None = None) -> None:
        limit = self.max_requests
        if limit is not None and self.max_requests_jitter:
            limit += self.rng.randint(0, self.max_requests_jitter)
        self._out.append(Spawn(slot, limit, replaces))

    def _schedule(self, slot: int, due: float) -> None:
        if slot < self.count and not self._occupied(slot) and slot not in self.pending:
            self.pending[slot] = due

    def _occupied(self, slot: int) -> bool:
        return any(w.slot == slot and w.stop_reason is None for w in self.workers.values())

    def _log_stopped(self, worker: WorkerState, status: int) -> None:
        reason = worker.stop_reason
        if reason == "timeout":
            self._log(logging.DEBUG, f"worker {worker.pid} {describe_status(status)}")
            return
        if reason == "max_requests":
            text = f"worker {worker.pid} reached max_requests ({worker.max_requests}): recycled"
        else:
            text = f"worker {worker.pid} stopped ({reason or 'shutdown'})"
        if status != 0:
            text += f"; it {describe_status(status)}"
        self._log(logging.INFO, text)

    def _log(self, level: int, message: str) -> None:
        self._out.append(Log(level, message))

    def _flush(self) -> list[Action]:
        out, self._out = self._out, []
        return out


def describe_status(status: int) -> str:
    """An exit code (or minus a signal number) as words."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    return f"was killed by {name}"


def plural(workers: int) -> str:
    return f"{workers} worker{'' if workers == 1 else 's'}"


def describe_paths(paths: Sequence[str]) -> str:
    names = []
    for path in paths[:3]:
        relative = os.path.relpath(path)
        names.append(path if relative.startswith("..") else relative)
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    return ", ".join(names) + more


# --------------------------------------------------------------------------- listeners


class Listeners:
    """The sockets the supervisor binds once and keeps: one shared by every
    worker, or with `reuse_port` one per worker slot."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._shared: socket.socket | None = None
        self._slots: dict[int, socket.socket] = {}
        #: The metrics listener (metrics_port), shared by every worker.
        self.metrics: socket.socket | None = None
        self._port = config.port
        # (device, inode) of the Unix socket file we bound, removed at the end
        # only if that file is still the one there.
        self._uds_file: tuple[int, int] | None = None

    def open(self) -> None:
        """Bind and listen; ListenError (one line) when that fails."""
        config = self.config
        try:
            if config.uds is not None:
                self._shared = self._bind_unix(config.uds)
            elif config.fd is not None:
                sock = socket.socket(fileno=config.fd)
                self._shared = sock
                sock.listen(config.backlog)
            elif config.reuse_port:
                self.for_slot(0)
            else:
                self._shared = self._bind_tcp(reuse_port=False)
        except OSError as exc:
            self.close()
            raise listen_error(exc, self.config.where) from exc
        if config.metrics_port is not None:
            host = config.metrics_host or config.host
            try:
                self.metrics = self._bind_tcp(False, host, config.metrics_port)
            except OSError as exc:
                self.close()
                raise listen_error(exc, f"{host}:{config.metrics_port} (metrics_port)") from exc

    def for_slot(self, slot: int) -> socket.socket:
        if self._shared is not None:
            return self._shared
        sock = self._slots.get(slot)
        if sock is None:
            sock = self._slots[slot] = self._bind_tcp(reuse_port=True)
            # Port 0: the first socket picks, the others join it.
            self._port = sock.getsockname()[1]
        return sock

    def release(self, keep: Iterable[int]) -> None:
        """Close the per-slot sockets of slots that are no longer used."""
        wanted = set(keep)
        for slot in [slot for slot in self._slots if slot not in wanted]:
            self._slots.pop(slot).close()

    @property
    def sockets(self) -> list[socket.socket]:
        return [self._shared] if self._shared is not None else list(self._slots.values())

    @property
    def all_sockets(self) -> list[socket.socket]:
        return self.sockets + ([self.metrics] if self.metrics is not None else [])

    def url(self) -> str:
        tls = self.config.ssl is not None or self.config.ssl_certfile is not None
        return listen_url(self.sockets[0], tls)

    def close(self) -> None:
        for sock in self.all_sockets:
            sock.close()
        self._shared = self.metrics = None
        self._slots.clear()
        path = self.config.uds
        if path is None or self._uds_file is None:
            return
        with contextlib.suppress(OSError):  # already gone, or not ours to remove
            found = os.stat(path)
            if (found.st_dev, found.st_ino) == self._uds_file and stat.S_ISSOCK(found.st_mode):
                os.unlink(path)
        self._uds_file = None

    def _bind_tcp(
        self, reuse_port: bool, host: str | None = None, port: int | None = None
    ) -> socket.socket:
        config = self.config
        family, kind, proto, _, address = socket.getaddrinfo(
            host or config.host,
            self._port if port is None else port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # As asyncio does: "::" means IPv6 only, as with one process.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(config.backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def _bind_unix(self, path: str) -> socket.socket:
        # A socket file left by a server that died is in the way: remove it,
        # as a single process (asyncio's create_unix_server) does.
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(self.config.backlog)
            found = os.stat(path)
        except BaseException:
            sock.close()
            raise
        self._uds_file = (found.st_dev, found.st_ino)
        return sock


# --------------------------------------------------------------------------- --reload


@dataclass(frozen=True, slots=True)
class ReloadOptions:
    """What --reload watches: files under `dirs` whose name (or path relative
    to its dir) matches an include and no exclude; an exclude matching a folder
    name leaves out the whole folder."""

    dirs: tuple[str, ...] = (".",)
    includes: tuple[str, ...] = DEFAULT_RELOAD_INCLUDES
    excludes: tuple[str, ...] = DEFAULT_RELOAD_EXCLUDES
    #: Read the files' times every POLL_INTERVAL_S even when watchfiles is installed.
    poll: bool = False


class FileFilter:
    def __init__(self, options: ReloadOptions) -> None:
        self.roots = [os.path.abspath(d) for d in options.dirs]
        self.includes = options.includes
        self.excludes = options.excludes

    def excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in self.excludes)

    def wanted(self, path: str) -> bool:
        path = os.path.abspath(path)
        for root in self.roots:
            relative = os.path.relpath(path, root)
            if relative.startswith(os.pardir + os.sep) or relative == os.pardir:
                continue
            parts = relative.split(os.sep)
            if any(self.excluded(part) for part in parts) or self.excluded(relative):
                return False
            name = parts[-1]
            return any(
                fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(relative, pattern)
                for pattern in self.includes
            )
        return False


class Watcher(Protocol):
    #: Seconds between two calls of `changes`.
    interval: float
    #: How it watches, for the log ("polling", "watchfiles").
    how: str

    def changes(self) -> list[str]:
        """Paths changed, added or removed since the last call (never blocks long)."""
        ...


class PollingWatcher:
    """Reads the modification times of the watched files at each call."""

    interval = POLL_INTERVAL_S
    how = f"polling every {POLL_INTERVAL_S:g}s"

    def __init__(self, files: FileFilter) -> None:
        self.files = files
        self._seen = self._scan()

    def changes(self) -> list[str]:
        now = self._scan()
        seen, self._seen = self._seen, now
        return sorted(path for path in seen.keys() | now.keys() if seen.get(path) != now.get(path))

    def _scan(self) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for root in self.files.roots:
            for folder, dirs, names in os.walk(root):
                dirs[:] = [d for d in dirs if not self.files.excluded(d)]
                for name in names:
                    path = os.path.join(folder, name)
                    if not self.files.wanted(path):
                        continue
                    with contextlib.suppress(OSError):  # gone since the listing
                        info = os.stat(path)
                        found[path] = (info.st_mtime_ns, info.st_size)
        return found


class WatchfilesWatcher:
    """Asks watchfiles (inotify and friends) what changed, waiting 1 ms at most."""

    interval = 0.2
    how = "watchfiles"

    def __init__(self, watchfiles: ModuleType, files: FileFilter) -> None:
        # watchfiles logs every batch of changes at INFO; we log our own line.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        self._changes: Iterator[set[tuple[Any, str]]] = watchfiles.watch(
            *files.roots,
            watch_filter=lambda change, path: files.wanted(path),
            debounce=100,
            step=20,
            rust_timeout=1,
            yield_on_timeout=True,
        )
        next(self._changes)  # starts watching

    def changes(self) -> list[str]:
        return sorted({path for _, path in next(self._changes, set())})


def make_watcher(options: ReloadOptions) -> Watcher:
    files = FileFilter(options)
    if not options.poll:
        try:
            watchfiles = importlib.import_module("watchfiles")
        except ImportError:
            pass
        else:
            return WatchfilesWatcher(watchfiles, files)
    return PollingWatcher(files)


# --------------------------------------------------------------------------- the worker


@dataclass(frozen=True, slots=True)
class Application:
    """How a worker gets its handler: `load()` runs in each worker after the
    fork and returns the handler and what it serves ("myapp:app (asgi3)").
    It raises ConfigError for a mistake the user can fix (one line, exit 2)."""

    load: Callable[[], tuple[Handler, str]]
    #: For messages: the TARGET, or what the handler is.
    name: str


class _Channel:
    """The worker's end of its pipe."""

    def __init__(self, fd: int, supervisor: int) -> None:
        self.fd = fd
        self.supervisor = supervisor
        os.set_blocking(fd, False)

    def send(self, data: bytes) -> bool:
        """False when the supervisor is gone."""
        if os.getppid() != self.supervisor:
            return False
        try:
            os.write(self.fd, data)
        except BlockingIOError:
            return True  # a full pipe: the supervisor is busy, not gone
        except OSError:
            return False
        return True


def _error_line(message: str) -> None:
    print(f"aserve: error: {message}", file=sys.stderr, flush=True)


def _worker_main(
    app: Application,
    config: Config,
    channel: _Channel,
    max_requests: int | None,
    interval: float,
    share: Share | None = None,
) -> int:
    """Build the handler and serve until told to stop; the exit status."""
    try:
        handler, what = app.load()
    except ConfigError as exc:
        _error_line(str(exc))
        return 2
    except Exception as exc:
        # The application's own code failed while being imported or built:
        # its traceback is what the user needs.
        traceback.print_exc()
        _error_line(f"loading {app.name} failed: {type(exc).__name__}: {exc}")
        return 1
    try:
        with asyncio.Runner(loop_factory=new_event_loop_factory(config.loop)) as runner:
            runner.run(_serve(handler, config, channel, what, max_requests, interval, share))
    except ListenError as exc:
        _error_line(str(exc.args[1] if len(exc.args) > 1 else exc))
        return 1
    except Exception as exc:
        logger.critical("worker failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return 1
    return 0


async def _serve(
    handler: Handler,
    config: Config,
    channel: _Channel,
    what: str,
    max_requests: int | None,
    interval: float,
    share: Share | None,
) -> None:
    server = Server(handler, config, share=share)
    await server.start()
    loop = asyncio.get_running_loop()
    stopping: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None

    def stop() -> None:
        nonlocal stopping
        if stopping is None:
            stopping = loop.create_task(_stop_gracefully(server))
        else:
            server.force_close()

    def beat() -> None:
        nonlocal timer
        done = max_requests is not None and server.requests >= max_requests
        if channel.send(RECYCLE if done else BEAT):
            timer = loop.call_later(interval, beat)
        elif stopping is None:
            logger.warning("worker %d: the supervisor is gone, shutting down", os.getpid())
            stop()

    loop.add_signal_handler(signal.SIGTERM, stop)
    timer = loop.call_later(interval, beat)
    try:
        if not channel.send(READY + what.replace("\n", " ").encode() + b"\n"):
            stop()
        await server.serve_forever()
        if stopping is not None:
            await stopping
    finally:
        if timer is not None:
            timer.cancel()
        loop.remove_signal_handler(signal.SIGTERM)


async def _stop_gracefully(server: Server) -> None:
    # The listener closes first; connections the kernel handed over just
    # before are still served (Server.shutdown waits a moment for the first
    # request of a new connection), while the other workers accept meanwhile.
    await server.shutdown()


# --------------------------------------------------------------------------- the supervisor

#: The signals the supervisor handles; blocked around fork so that a worker
#: never runs the supervisor's handlers.
SUPERVISOR_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)

#: A worker's signal dispositions until its loop takes SIGTERM: SIGINT and the
#: supervisor's own signals are for the supervisor, even when they reach the
#: whole process group (Ctrl+C, a terminal hang-up).
WORKER_SIGNALS: tuple[tuple[signal.Signals, signal.Handlers], ...] = (
    (signal.SIGTERM, signal.SIG_DFL),
    (signal.SIGINT, signal.SIG_IGN),
    (signal.SIGHUP, signal.SIG_IGN),
    (signal.SIGTTIN, signal.SIG_IGN),
    (signal.SIGTTOU, signal.SIG_IGN),
    (signal.SIGCHLD, signal.SIG_DFL),
)


@dataclass(slots=True)
class _Process:
    pid: int
    pipe: int | None
    buffer: bytes = b""
    #: Its slot on the metrics board, if it has one.
    board_slot: int | None = None


class Supervisor:
    """Runs `app` in `config.workers` worker processes (one with `reload`)
    until SIGINT or SIGTERM. Call `run()` from the main thread of a process
    that runs no event loop."""

    def __init__(
        self,
        config: Config,
        app: Application,
        *,
        reload: ReloadOptions | None = None,
        on_started: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.reload = reload
        self.on_started = on_started
        workers = 1 if reload is not None else config.workers
        self.policy = Policy(
            workers,
            worker_timeout=config.worker_timeout,
            graceful_timeout=config.graceful_timeout,
            max_requests=config.max_requests,
            max_requests_jitter=config.max_requests_jitter,
            reload=reload is not None,
        )
        self.beat_interval = min(BEAT_INTERVAL_S, config.worker_timeout / 4)
        self.listeners = Listeners(config)
        #: The metrics of every worker, in shared memory (see aserve/metrics.py).
        self.board: Board | None = None
        if config.metrics_path or config.status_path or config.metrics_port is not None:
            self.board = Board(BOARD_SLOTS)
        self._processes: dict[int, _Process] = {}
        self._signals: deque[int] = deque()
        self._selector: selectors.BaseSelector | None = None
        self._wakeup: tuple[int, int] | None = None
        self._watcher: Watcher | None = None
        self._next_watch = 0.0
        self._status: int | None = None

    def run(self) -> int:
        """Bind, start the workers, supervise them until told to stop; the
        exit status. Raises ListenError when the listener cannot be bound."""
        self.listeners.open()
        previous: dict[int, Any] = {}
        old_wakeup = -1
        try:
            self._selector = selectors.DefaultSelector()
            read, write = os.pipe()
            self._wakeup = (read, write)
            for fd in (read, write):
                os.set_blocking(fd, False)
            self._selector.register(read, selectors.EVENT_READ, None)
            old_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
            for sig in SUPERVISOR_SIGNALS:
                previous[sig] = signal.signal(sig, self._on_signal)
            if self.reload is not None:
                self._watcher = make_watcher(self.reload)
                lifecycle.info(
                    "watching %s for changes (%s)",
                    ", ".join(os.path.abspath(d) for d in self.reload.dirs),
                    self._watcher.how,
                )
            self._execute(self.policy.start(time.monotonic()))
            while self._status is None:
                self._wait()
            return self._status
        finally:
            self._kill_all()
            if self._wakeup is not None:
                signal.set_wakeup_fd(old_wakeup)
                for number, handler in previous.items():
                    signal.signal(number, signal.SIG_DFL if handler is None else handler)
                for fd in self._wakeup:
                    os.close(fd)
                self._wakeup = None
            if self._selector is not None:
                self._selector.close()
            self.listeners.close()
            if self.board is not None:
                self.board.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    # -- the loop ----------------------------------------------------------

    def _wait(self) -> None:
        assert self._selector is not None
        now = time.monotonic()
        due = self.policy.deadline(now)
        if self._watcher is not None:
            due = min(due, self._next_watch)
        for key, _ in self._selector.select(max(0.0, min(due - now, TICK_S))):
            if key.data is None:
                self._drain_wakeup()
            else:
                self._read(key.data)
        now = time.monotonic()
        while self._signals:
            sig = self._signals.popleft()
            if sig != signal.SIGCHLD:
                self._execute(self.policy.signalled(sig, now))
        self._reap(now)
        if self._watcher is not None and now >= self._next_watch:
            self._next_watch = now + self._watcher.interval
            changed = self._watcher.changes()
            if changed:
                self._execute(self.policy.changed(changed, now))
        self._execute(self.policy.tick(now))
        if self.board is not None:
            self.board.set_workers(self.policy.count)
        if self.config.reuse_port:
            self.listeners.release(range(self.policy.count))

    def _drain_wakeup(self) -> None:
        assert self._wakeup is not None
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wakeup[0], 512):
                pass

    def _read(self, process: _Process) -> bool:
        """Read what `process` wrote, once; False when there was nothing."""
        if process.pipe is None:
            return False
        try:
            data = os.read(process.pipe, 4096)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._close_pipe(process)
            return False
        messages, process.buffer = parse_messages(process.buffer + data)
        now = time.monotonic()
        for message in messages:
            self._execute(self.policy.message(process.pid, message, now))
        return True

    def _close_pipe(self, process: _Process) -> None:
        if process.pipe is not None:
            assert self._selector is not None
            self._selector.unregister(process.pipe)
            os.close(process.pipe)
            process.pipe = None

    def _reap(self, now: float) -> None:
        for process in list(self._processes.values()):
            try:
                pid, status = os.waitpid(process.pid, os.WNOHANG)
            except ChildProcessError:
                pid, code = process.pid, 0
            else:
                if pid == 0:
                    continue
                code = os.waitstatus_to_exitcode(status)
            # What it wrote before it died counts (its ready line, say).
            while self._read(process):
                pass
            self._close_pipe(process)
            del self._processes[pid]
            if self.board is not None and process.board_slot is not None:
                reason = self._restart_reason(pid)
                self.board.release(process.board_slot)
                if reason is not None:
                    self.board.restarted(reason)
            self._execute(self.policy.exited(pid, code, now))

    def _restart_reason(self, pid: int) -> str | None:
        """Why worker `pid`, now gone, is being replaced, for the metrics; None
        when it is not (a shutdown, fewer workers, a failed start)."""
        worker = self.policy.workers.get(pid)
        if worker is None or self.policy.phase != "running" or worker.ready_at is None:
            return None
        reason = worker.stop_reason
        if reason is None:
            return "exited"
        return reason if reason in ("timeout", "max_requests", "reload") else None

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(action)
            elif isinstance(action, Kill):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(action.pid, action.signal)
            elif isinstance(action, Log):
                (logger if action.level >= logging.WARNING else lifecycle).log(
                    action.level, action.message
                )
            elif isinstance(action, Started):
                self._started(action.what)
            elif self._status is None:
                self._status = action.status  # the first Exit decides

    def _started(self, what: str) -> None:
        if self.reload is not None:
            how = "with reload"
        else:
            how = f"with {plural(self.policy.count)}"
        description = f"{what} on {self.listeners.url()} {how}"
        if self.on_started is not None:
            self.on_started(description)
        else:
            lifecycle.info("serving %s", description)
        if self.listeners.metrics is not None:
            lifecycle.info("metrics on %s", metrics_url(self.listeners.metrics, self.config))

    def _kill_all(self) -> None:
        for process in self._processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        for process in self._processes.values():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(process.pid, 0)
            if process.pipe is not None:
                os.close(process.pipe)
        self._processes.clear()

    # -- fork --------------------------------------------------------------

    def _spawn(self, spawn: Spawn) -> None:
        assert self._selector is not None
        try:
            sock = self.listeners.for_slot(spawn.slot)
        except OSError as exc:
            self._execute(self.policy.spawn_failed(spawn, str(exc), time.monotonic()))
            return
        board_slot = self.board.take() if self.board is not None else None
        if self.board is not None and board_slot is None:
            logger.warning("no metrics slot left: this worker's numbers are not counted")
        read, write = os.pipe()
        supervisor = os.getpid()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(read)
            os.close(write)
            if self.board is not None and board_slot is not None:
                self.board.release(board_slot)
            self._execute(self.policy.spawn_failed(spawn, str(exc), time.monotonic()))
            return
        if pid == 0:
            self._become_worker(spawn, sock, read, write, supervisor, mask, board_slot)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write)
        os.set_blocking(read, False)
        process = self._processes[pid] = _Process(pid, read, board_slot=board_slot)
        self._selector.register(read, selectors.EVENT_READ, process)
        self.policy.spawned(pid, spawn, time.monotonic())
        logger.debug("worker %d starting in slot %d", pid, spawn.slot)

    def _become_worker(
        self,
        spawn: Spawn,
        sock: socket.socket,
        read: int,
        write: int,
        supervisor: int,
        mask: Iterable[int],
        board_slot: int | None,
    ) -> NoReturn:
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig, disposition in WORKER_SIGNALS:
                signal.signal(sig, disposition)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            # A descriptor of our own for the listener; then none of the supervisor's.
            fd = os.dup(sock.fileno())
            share = None
            if self.board is not None:
                metrics = self.listeners.metrics
                kept = socket.socket(fileno=os.dup(metrics.fileno())) if metrics else None
                share = Share(self.board, board_slot, kept)
            os.close(read)
            self._close_inherited()
            config = self.config.replace(fd=fd, uds=None, reuse_port=False, workers=1)
            channel = _Channel(write, supervisor)
            status = _worker_main(
                self.app, config, channel, spawn.max_requests, self.beat_interval, share
            )
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    def _close_inherited(self) -> None:
        if self._selector is not None:
            self._selector.close()
        if self._wakeup is not None:
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None
        for process in self._processes.values():
            if process.pipe is not None:
                os.close(process.pipe)
                process.pipe = None
        for sock in self.listeners.all_sockets:
            sock.close()


# --------------------------------------------------------------------------- embedding


class WorkersFailed(AserveError):
    """The first worker could not start (it said why on stderr)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the first worker exited with status {status} before it was ready")
        self.status = status


def run(handler: Handler, config: Config | None = None, **options: Any) -> None:
    """Serve `handler` with `config.workers` worker processes until SIGINT or
    SIGTERM; blocks. Call it from the main thread, with no event loop running.

    The handler object is made here, before the fork, and every worker inherits
    it: SIGHUP replaces the workers (new processes, reopened resources) but
    reloads no code. For new code on SIGHUP, run ``aserve module:app --workers
    N``, which imports the application in each worker."""
    if config is None:
        config = Config.build(**options)
    elif options:
        config = config.replace(**options)
    if not callable(handler):
        raise TypeError(f"handler must be callable, not {type(handler).__name__}")
    new_event_loop_factory(config.loop)  # uvloop asked for but missing: fail here, once
    name = getattr(handler, "__qualname__", type(handler).__qualname__)
    status = Supervisor(config, Application(lambda: (handler, name), name)).run()
    if status != 0:
        raise WorkersFailed(status)
