"""Coverage-guided fuzzing of HTTPProtocol over an in-memory transport.

Each input is one connection's life. The protocol gets a fake transport that
behaves like the real ones where the engine cares (writes, a write buffer
that fills while the client does not read and then pauses writing, pausing
reading, half-close, close and abort that end in `connection_lost` on the next
loop turn) and a virtual clock, so every deadline can be made to pass. The
input's first bytes say how to cut the rest into `data_received` calls and
what happens between them; the rest is what the client sends.

Input layout (see `Plan`):

    byte 0      flags (FLAG_*)
    byte 1      n = count of piece-control bytes (taken modulo 32)
    n bytes     one per piece: low 6 bits + 1 = piece length; bit 6: first let
                the connection's deadline pass; bit 7: the client stops / starts
                reading our answers (a full socket) before the piece
    the rest    the bytes the client sends; after the n pieces, what is left is
                sent as one last piece

After each input these must hold:

- no exception escapes the protocol, nothing reaches the loop's exception
  handler, no exchange task ends with an exception, and nothing is logged
  with a traceback except the handler's own deliberate failures;
- what was written parses, with an h11 client connection told the methods of
  the requests, as a sequence of HTTP responses: no garbage, nothing after a
  `Connection: close` response, no response the client did not ask for; a
  response cut short needs a cause (an abort, a failing streamed body, a
  deadline, or a connection still open);
- every error status is one of the defined answers (400 408 413 414 431 500
  501 503 505, and 504 when handler_timeout is set);
- nothing is written after `write_eof()` or after the connection was lost;
- once the client is gone, no task is left pending and the connection is no
  longer counted by the server state.

Run with atheris (`make fuzz`), or replay files without it:

    python fuzz/fuzz_protocol.py --replay FILE...     # check each, print the verdict
    python fuzz/fuzz_protocol.py --describe FILE...   # show how an input decodes
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import sys
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

if __name__ == "__main__" and "--replay" not in sys.argv and "--describe" not in sys.argv:
    import atheris

    with atheris.instrument_imports():
        import h11

        import aserve
        from aserve import protocol as protocol_module
        from aserve.config import Config
        from aserve.connection import HTTPConnection
        from aserve.errors import ClientDisconnected, HTTPException
        from aserve.server import ServerState
else:
    atheris = None
    import h11

    import aserve
    from aserve import protocol as protocol_module
    from aserve.config import Config
    from aserve.connection import HTTPConnection
    from aserve.errors import ClientDisconnected, HTTPException
    from aserve.server import ServerState

FLAG_EOF = 1  # the client half-closes once everything is sent
FLAG_TIMEOUTS = 2  # at the end, let every deadline pass in turn
FLAG_NO_WRITE_EOF = 4  # the transport cannot half-close (as with TLS)
FLAG_SMALL_LIMITS = 8  # tiny max_body_size / max_head_size / max_url_size
FLAG_BLOCKED = 16  # the client does not read our answers at first
FLAG_HANDLER_TIMEOUT = 32  # handler_timeout set
FLAG_LENIENT = 64  # lenient_framing, where the Config has it

ERROR_STATUSES = {400, 408, 413, 414, 431, 500, 501, 503, 505}
HANDLER_STATUSES = {200, 204}
WRITE_HIGH_WATER = 512
MAX_TURNS = 2000
#: Findings already reported and not fixed yet can be set aside so that the
#: fuzzer looks for new ones: FUZZ_IGNORE is a regular expression matched
#: against each finding's text (see fuzz/README.md for the current ones).
IGNORE = re.compile(os.environ["FUZZ_IGNORE"]) if os.environ.get("FUZZ_IGNORE") else None


class FuzzFinding(AssertionError):
    """An invariant broke: the message says which."""


class HandlerBoom(Exception):
    """The test handler failing on purpose."""


#: Exceptions the engine may log with a traceback: the handler's own failure,
#: and a body read failing inside the handler's streamed body (bad framing,
#: a client gone), which the engine reports as the app's error.
EXPECTED_IN_LOGS = (HandlerBoom, HTTPException, ClientDisconnected)


# --------------------------------------------------------------------------- input


@dataclass
class Plan:
    flags: int
    pieces: list[tuple[bytes, bool, bool]]  # (data, deadline first, toggle reading first)

    @classmethod
    def decode(cls, data: bytes) -> Plan:
        flags = data[0] if data else 0
        count = (data[1] % 32) if len(data) > 1 else 0
        controls = data[2 : 2 + count]
        stream = data[2 + count :]
        pieces = []
        at = 0
        for control in controls:
            if at >= len(stream) and not control & 0xC0:
                break
            size = (control & 0x3F) + 1
            pieces.append((stream[at : at + size], bool(control & 0x40), bool(control & 0x80)))
            at += size
        if at < len(stream):
            pieces.append((stream[at:], False, False))
        return cls(flags, pieces)

    def describe(self) -> str:
        names = [
            name
            for bit, name in (
                (FLAG_EOF, "eof"),
                (FLAG_TIMEOUTS, "timeouts"),
                (FLAG_NO_WRITE_EOF, "no-write-eof"),
                (FLAG_SMALL_LIMITS, "small-limits"),
                (FLAG_BLOCKED, "blocked"),
                (FLAG_HANDLER_TIMEOUT, "handler-timeout"),
                (FLAG_LENIENT, "lenient"),
            )
            if self.flags & bit
        ]
        lines = [f"flags: {', '.join(names) or '-'}"]
        for data, deadline, toggle in self.pieces:
            marks = ("deadline " if deadline else "") + ("toggle-reading " if toggle else "")
            lines.append(f"  {marks}{data!r}")
        return "\n".join(lines)


def encode(stream: bytes, flags: int = 0, sizes: list[int] | None = None) -> bytes:
    """An input that sends `stream` cut into pieces of `sizes` (each 1..64)."""
    sizes = sizes or []
    controls = bytes((size - 1) & 0x3F for size in sizes[:31])
    return bytes([flags, len(controls)]) + controls + stream


# --------------------------------------------------------------------------- fakes


class Clock:
    """The loop's time, moved only by the driver."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTransport(asyncio.Transport):
    """An in-memory socket: writes go to the client at once while it reads,
    else into a buffer that pauses the protocol's writing past a high-water mark."""

    def __init__(self, loop: asyncio.AbstractEventLoop, can_eof: bool, findings: list[str]):
        super().__init__()
        self._loop = loop
        self._can_eof = can_eof
        self.findings = findings
        self.protocol: asyncio.Protocol | None = None
        self.wire = bytearray()  # what the client received
        self.buffer = bytearray()  # written, not yet taken by the client
        self.client_reading = True
        self.write_paused = False
        self.reading = True
        self.closing = False
        self.aborted = False
        self.eof_written = False
        self.lost = False
        self._lost_scheduled = False

    # -- asyncio.Transport ---------------------------------------------------

    def write(self, data: Any) -> None:
        data = bytes(data)
        if self.eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self.lost:
            self.findings.append(f"write after connection_lost: {data[:80]!r}")
            return
        if self.aborted or not data:
            return
        if self.closing:
            self.findings.append(f"write after close(): {data[:80]!r}")
        self.buffer += data
        self._flow()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self._flow()

    def abort(self) -> None:
        self.aborted = True
        self.closing = True
        self.buffer.clear()
        self._schedule_lost()

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return self._can_eof

    def write_eof(self) -> None:
        if not self._can_eof:
            raise NotImplementedError
        if self.closing:
            return
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (WRITE_HIGH_WATER // 4, WRITE_HIGH_WATER)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {
            "peername": ("127.0.0.1", 40000),
            "sockname": ("127.0.0.1", 8000),
        }.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    # -- the client's side ---------------------------------------------------

    def set_client_reading(self, reading: bool) -> None:
        self.client_reading = reading
        self._flow()

    def _flow(self) -> None:
        protocol = self.protocol
        if self.client_reading and self.buffer and not self.aborted:
            self.wire += self.buffer
            self.buffer.clear()
        if protocol is not None and not self.lost:
            if not self.write_paused and len(self.buffer) > WRITE_HIGH_WATER:
                self.write_paused = True
                protocol.pause_writing()
            elif self.write_paused and len(self.buffer) <= WRITE_HIGH_WATER // 4:
                self.write_paused = False
                protocol.resume_writing()
        if self.closing and not self.buffer:
            self._schedule_lost()

    def _schedule_lost(self) -> None:
        if not self._lost_scheduled:
            self._lost_scheduled = True
            self._loop.call_soon(self.connection_lost)

    def connection_lost(self) -> None:
        """The connection is gone (our close, our abort, or the client's reset)."""
        if self.lost:
            return
        self.lost = True
        self.closing = True
        assert self.protocol is not None
        self.protocol.connection_lost(None)


# --------------------------------------------------------------------------- the handler


@dataclass
class Record:
    methods: list[bytes] = field(default_factory=list)  # every request head h11 produced
    stream_failed: bool = False
    handled: int = 0


class RecordingConnection(HTTPConnection):
    """HTTPConnection that notes the method of every request head (even refused
    ones), which the h11 client needs to frame the answers (HEAD has no body)."""

    __slots__ = ()
    record: Record | None = None

    def _inspect(self, event: h11.Request, *args: Any, **kwargs: Any) -> Any:
        if RecordingConnection.record is not None:
            RecordingConnection.record.methods.append(bytes(event.method))
        return super()._inspect(event, *args, **kwargs)  # type: ignore[misc]


assert hasattr(HTTPConnection, "_inspect"), "HTTPConnection._inspect is gone: update the fuzzer"


def make_handler(record: Record) -> Callable[[aserve.Request], Any]:
    """A handler whose behaviour the request path picks, so the fuzzer can steer it."""

    async def handler(request: aserve.Request) -> aserve.Response:
        record.handled += 1
        path = request.target[:2]
        if path == b"/n":  # answer without reading the body
            return aserve.Response(b"not read\n")
        if path == b"/p":  # read one piece of the body, answer
            async for chunk in request.stream():
                return aserve.Response(b"%d\n" % len(chunk))
            return aserve.Response(b"empty\n")
        if path == b"/r":  # stream the body back as it arrives
            return aserve.StreamingResponse(_echo(request, record))
        if path == b"/x":  # a streamed body that fails half-way
            await request.body()
            return aserve.StreamingResponse(_failing(record))
        if path == b"/h":
            raise HTTPException(400, "handler said no")
        body = await request.body()
        if path == b"/e":
            raise HandlerBoom("deliberate")
        digest = hashlib.sha256(body).hexdigest().encode()
        if path == b"/s":
            return aserve.StreamingResponse(_pieces([b"streamed ", digest, b"\n"]))
        if path == b"/z":
            return aserve.Response(status=204)
        if path == b"/c":
            return aserve.Response(digest, headers={"connection": "close"})
        return aserve.Response(b"%d %s\n" % (len(body), digest))

    return handler


async def _pieces(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
        await asyncio.sleep(0)


async def _echo(request: aserve.Request, record: Record) -> AsyncIterator[bytes]:
    yield b"echo:"
    try:
        async for chunk in request.stream():
            yield chunk
    except Exception:
        # The request body broke (bad framing, the client left) after our head
        # went out: closing mid-answer is all the server can do.
        record.stream_failed = True
        raise


async def _failing(record: Record) -> AsyncIterator[bytes]:
    yield b"first piece\n"
    await asyncio.sleep(0)
    record.stream_failed = True
    raise HandlerBoom("deliberate, mid-stream")


# --------------------------------------------------------------------------- logging


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_captured = Captured()
_aserve_log = logging.getLogger("aserve")
_aserve_log.addHandler(_captured)
_aserve_log.propagate = False
_aserve_log.setLevel(logging.DEBUG)


# --------------------------------------------------------------------------- the driver


class Runner:
    """One event loop with a virtual clock, reused for every input."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.loop.time = self.clock  # type: ignore[method-assign]
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.loop_errors.append(context))
        self.tasks: list[asyncio.Task[Any]] = []

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
            task = asyncio.Task(coro, loop=loop, **kwargs)
            self.tasks.append(task)
            return task

        self.loop.set_task_factory(factory)

    def run(self, data: bytes) -> None:
        self.loop_errors.clear()
        self.tasks.clear()
        _captured.records.clear()
        findings: list[str] = []
        try:
            self.loop.run_until_complete(self._scenario(Plan.decode(data), findings))
        except FuzzFinding as exc:
            findings.append(str(exc))
        except Exception as exc:
            findings.append(
                "an exception escaped the protocol:\n" + "".join(traceback.format_exception(exc))
            )
        finally:
            RecordingConnection.record = None
            self._cleanup()
        for context in self.loop_errors:
            exc = context.get("exception")
            detail = "".join(traceback.format_exception(exc)) if exc else ""
            findings.append(f"loop exception handler: {context.get('message')}\n{detail}")
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                findings.append(
                    "a task ended with an exception:\n" + "".join(traceback.format_exception(exc))
                )
        for record in _captured.records:
            if record.exc_info and not isinstance(record.exc_info[1], EXPECTED_IN_LOGS):
                findings.append(
                    f"logged with a traceback: {record.getMessage()}\n"
                    + "".join(traceback.format_exception(record.exc_info[1]))
                )
        if IGNORE is not None:
            findings = [f for f in findings if not IGNORE.search(f)]
        if findings:
            raise FuzzFinding("\n".join(findings))

    def _cleanup(self) -> None:
        """Cancel what an input left running, so that it cannot leak into the next."""
        leftover = [task for task in self.tasks if not task.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            self.loop.run_until_complete(self._quiet())

    async def _quiet(self) -> None:
        """Let every ready callback run until none is left (no real time passes)."""
        loop = self.loop
        calm = 0
        for _ in range(MAX_TURNS):
            await asyncio.sleep(0)
            if loop._ready:  # type: ignore[attr-defined]
                calm = 0
            else:
                calm += 1
                if calm >= 2:
                    return
        raise FuzzFinding(f"the loop never went quiet in {MAX_TURNS} turns")

    def _tick(self, state: ServerState) -> bool:
        """Move the clock to the earliest deadline and sweep, as the server's clock does."""
        deadlines = [
            p._deadline for p in (*state.connections, *state.rejected) if p._deadline is not None
        ]
        if not deadlines:
            return False
        self.clock.now = max(self.clock.now, min(deadlines)) + 0.001
        now = self.clock.now
        for protocol in (*state.connections, *state.rejected):
            deadline = protocol._deadline
            if deadline is not None and deadline <= now:
                protocol.deadline_passed()
        return True

    async def _scenario(self, plan: Plan, findings: list[str]) -> None:
        flags = plan.flags
        options: dict[str, Any] = {"date_header": False, "access_log": False}
        if flags & FLAG_SMALL_LIMITS:
            options.update(max_body_size=64, max_head_size=256, max_url_size=256)
        if flags & FLAG_HANDLER_TIMEOUT and "handler_timeout" in Config.__dataclass_fields__:
            options["handler_timeout"] = 5.0
        if flags & FLAG_LENIENT and "lenient_framing" in Config.__dataclass_fields__:
            options["lenient_framing"] = True
        config = Config.build(**options)
        record = Record()
        RecordingConnection.record = record
        state = ServerState(config, self.loop, make_handler(record))
        transport = FakeTransport(self.loop, not flags & FLAG_NO_WRITE_EOF, findings)
        protocol = protocol_module.HTTPProtocol(state)
        transport.set_protocol(protocol)
        if flags & FLAG_BLOCKED:
            transport.client_reading = False
        causes: set[str] = set()

        protocol.connection_made(transport)
        await self._quiet()
        for data, deadline_first, toggle_first in plan.pieces:
            if transport.closing:
                break
            if toggle_first:
                transport.set_client_reading(not transport.client_reading)
                await self._quiet()
            if deadline_first:
                if self._tick(state):
                    causes.add("deadline")
                await self._quiet()
            if transport.closing:
                break
            if not transport.reading:
                await self._quiet()
                if not transport.reading:
                    break  # the server stopped reading: a real client would wait here
            if data:
                protocol.data_received(data)
                await self._quiet()

        if flags & FLAG_EOF and not transport.closing:
            keep_open = protocol.eof_received()
            if not keep_open:
                transport.close()  # what a real transport does after eof_received
            await self._quiet()
        transport.set_client_reading(True)
        await self._quiet()
        if flags & FLAG_TIMEOUTS:
            for _ in range(8):
                if transport.closing or not self._tick(state):
                    break
                causes.add("deadline")
                await self._quiet()
        await self._quiet()

        if transport.aborted:
            causes.add("abort")
        if record.stream_failed:
            causes.add("stream failed")
        if not transport.closing:
            causes.add("still open")
        closed = transport.closing or transport.eof_written
        allowed = ERROR_STATUSES | HANDLER_STATUSES
        if "handler_timeout" in options:
            allowed.add(504)
        check_answers(bytes(transport.wire), record.methods, closed, causes, allowed, findings)

        # The client goes away; everything must wind down.
        if not transport.lost:
            transport.connection_lost()
        await self._quiet()
        me = asyncio.current_task()
        pending = [t for t in self.tasks if not t.done() and t is not me]
        if pending:
            findings.append(f"{len(pending)} task(s) still pending after the connection was lost")
            for task in pending:
                task.cancel()
            await self._quiet()
        if protocol in state.connections or protocol in state.rejected:
            findings.append("the lost connection is still counted by the server state")


def check_answers(
    wire: bytes,
    methods: list[bytes],
    closed: bool,
    causes: set[str],
    allowed: set[int],
    findings: list[str],
) -> None:
    """Parse what the server wrote as HTTP responses to `methods`, in order."""
    if not wire:
        return
    queue = list(methods)
    client = h11.Connection(h11.CLIENT)
    finals = 0

    def ask() -> None:
        method = queue.pop(0) if queue else b"GET"
        client.send(h11.Request(method=method, target="/", headers=[("Host", "fuzz")]))
        client.send(h11.EndOfMessage())

    ask()
    client.receive_data(wire)
    truncated = partial = False
    eof_fed = False
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError as exc:
            if eof_fed:
                # Every byte parsed before the EOF: the close cut short a message
                # if part of one was there (a lone 100 Continue is no message).
                truncated = partial
                break
            findings.append(f"the answers do not parse: {exc!r}; wire: {wire[:2000]!r}")
            return
        if event is h11.NEED_DATA:
            # Part of a message is there, the rest is not (yet).
            partial = bool(client.trailing_data[0]) or client.their_state is h11.SEND_BODY
            if closed and not eof_fed:
                eof_fed = True
                client.receive_data(b"")
                continue
            truncated = partial
            break
        if event is h11.PAUSED:
            # A whole response, and more bytes after it: the next one.
            client.start_next_cycle()
            ask()
            continue
        if isinstance(event, h11.ConnectionClosed):
            break
        if isinstance(event, h11.InformationalResponse):
            if event.status_code != 100:
                findings.append(f"unexpected informational response {event.status_code}")
        elif isinstance(event, h11.Response):
            finals += 1
            if event.status_code >= 300 and event.status_code not in allowed:
                findings.append(f"status {event.status_code} is not a defined answer")
            elif event.status_code < 300 and event.status_code not in HANDLER_STATUSES:
                findings.append(f"status {event.status_code} from nowhere")
    if finals > len(methods) + 1:
        findings.append(f"{finals} responses to {len(methods)} request heads")
    if truncated and not causes:
        findings.append(f"a response was cut short without a cause; wire: {wire[:2000]!r}")


# --------------------------------------------------------------------------- entry points

_runner: Runner | None = None


def test_one_input(data: bytes) -> None:
    global _runner
    if _runner is None:
        _runner = Runner()
    _runner.run(data)


def _install_recording() -> None:
    # The protocol module builds its HTTPConnection by this name.
    protocol_module.HTTPConnection = RecordingConnection  # type: ignore[misc]


def replay(paths: list[str]) -> int:
    failures = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            test_one_input(data)
        except Exception:
            failures += 1
            print(f"FAIL {path}")
            traceback.print_exc()
        else:
            print(f"ok   {path}")
    return 1 if failures else 0


def main() -> int:
    _install_recording()
    if "--replay" in sys.argv:
        return replay([a for a in sys.argv[1:] if a != "--replay"])
    if "--describe" in sys.argv:
        for path in sys.argv[1:]:
            if path != "--describe":
                with open(path, "rb") as f:
                    print(f"{path}:\n{Plan.decode(f.read()).describe()}")
        return 0
    assert atheris is not None
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
