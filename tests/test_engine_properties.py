"""Property: how TCP splits a request stream never changes what is served.

Any valid HTTP/1.1 request stream (random methods, targets, header sets,
Content-Length or chunked bodies with random chunk sizes and extensions,
several requests pipelined) is sent twice to one real server: whole in one
write on one connection, and cut at random points into pieces written one by
one (with a drain and sometimes a short wait between them) on another. Both
connections must deliver exactly the same requests to the handler, the ones
the stream encodes, and get back exactly the same response bytes.

Hypothesis drives the examples. Its search is synchronous, so each test runs
its own event loop (stdlib and uvloop, like the other engine tests) with one
server started per test function; each example is one `runner.run()` on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import string
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from itertools import pairwise

import h11
import pytest
from conftest import (
    READ_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    Handler,
    RawClient,
    parse_events,
    replies,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aserve

LOOPS = ["asyncio", "uvloop"]

TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
UNRESERVED = string.ascii_letters + string.digits + "-._~"
SUB_DELIMS = "!$&'()*+,;="
PCHAR = UNRESERVED + SUB_DELIMS + ":@"
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
QDTEXT = "".join(c for c in VCHAR + " \t" if c not in '"\\')

# Headers whose presence changes the framing or the connection's fate; the
# generator writes them itself where a request needs them, never at random.
FRAMING_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect"}
# h11 treats CONNECT as a protocol switch and wants an authority-form target.
EXCLUDED_METHODS = {"CONNECT"}

EXAMPLES_PER_LOOP = 60
MAX_PIECES = 150
#: What the sender does after writing a piece: nothing (the next piece may join
#: it in one read), let the loop turn twice (the server reads before the next
#: write), or sleep a little.
PAUSES = ["yield", "sleep", "none"]


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Seen:
    """One request as the handler sees it."""

    method: str
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def digest(self) -> str:
        hasher = hashlib.sha256()
        for part in (self.method.encode(), self.target, self.body):
            hasher.update(b"%d:" % len(part) + part)
        for name, value in self.headers:
            hasher.update(b"%d:%s=%d:%s" % (len(name), name, len(value), value))
        return hasher.hexdigest()


@dataclass(frozen=True)
class Case:
    """A request stream, the requests it encodes, and how to cut it."""

    stream: bytes
    expected: tuple[Seen, ...]
    cuts: tuple[int, ...]
    pauses: tuple[str, ...]

    def pieces(self) -> list[bytes]:
        bounds = [0, *self.cuts, len(self.stream)]
        return [self.stream[a:b] for a, b in pairwise(bounds)]

    @property
    def methods(self) -> list[str]:
        return [seen.method for seen in self.expected]


# --------------------------------------------------------------------------- strategies


def text(alphabet: str, min_size: int = 1, max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=min_size, max_size=max_size)


def any_case(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.lower(), word.upper(), word.title()])


tokens = text(TCHAR)

methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    tokens,
).filter(lambda m: m not in EXCLUDED_METHODS)

pct_encoded = st.tuples(st.sampled_from(string.hexdigits), st.sampled_from(string.hexdigits)).map(
    lambda pair: "%" + pair[0] + pair[1]
)
segments = st.lists(st.one_of(text(PCHAR, 0, 8), pct_encoded), max_size=3).map("".join)


@st.composite
def targets(draw: st.DrawFn) -> str:
    path = "/" + "/".join(draw(st.lists(segments, max_size=4)))
    if draw(st.booleans()):
        path += "?" + draw(text(PCHAR + "/?", 0, 20))
    return path


@st.composite
def header_values(draw: st.DrawFn) -> str:
    """Visible ASCII with spaces and tabs inside, never at either end."""
    return draw(text(VCHAR + " \t", 0, 30)).strip(" \t")


@st.composite
def field_lines(draw: st.DrawFn, name: str, value: str) -> str:
    """`name: value` with random optional whitespace around the value."""
    before = draw(st.sampled_from(["", " ", "\t", "  "]))
    after = draw(st.sampled_from(["", "", " ", "\t "]))
    return f"{name}:{before}{value}{after}\r\n"


free_headers = st.tuples(tokens.filter(lambda n: n.lower() not in FRAMING_HEADERS), header_values())

hosts = st.one_of(
    st.sampled_from(["test", "example.com", "localhost:8080", "127.0.0.1", "[::1]:80"]),
    text(string.ascii_lowercase + string.digits + "-.", 1, 20),
)


@st.composite
def chunk_extensions(draw: st.DrawFn) -> str:
    out = ""
    for _ in range(draw(st.integers(0, 2))):
        name = draw(tokens)
        form = draw(st.sampled_from(["bare", "token", "quoted"]))
        if form == "bare":
            out += ";" + name
        elif form == "token":
            out += f";{name}={draw(tokens)}"
        else:
            inner = draw(
                st.lists(st.one_of(text(QDTEXT, 1, 6), text(VCHAR, 1, 1).map("\\".__add__)))
            )
            out += f';{name}="{"".join(inner)}"'
    return out


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes) -> bytes:
    out = []
    at = 0
    while at < len(body):
        size = draw(st.integers(1, max(1, min(len(body) - at, 700))))
        digits = f"{size:x}"
        if draw(st.booleans()):
            digits = digits.upper()
        digits = "0" * draw(st.sampled_from([0, 0, 0, 1, 3])) + digits
        ext = draw(chunk_extensions())
        out.append(f"{digits}{ext}\r\n".encode() + body[at : at + size] + b"\r\n")
        at += size
    out.append(f"{'0' * draw(st.integers(1, 2))}{draw(chunk_extensions())}\r\n".encode())
    for name, value in draw(st.lists(free_headers, max_size=2)):
        out.append(draw(field_lines(name, value)).encode())
    out.append(b"\r\n")
    return b"".join(out)


@st.composite
def requests(draw: st.DrawFn, last: bool) -> tuple[bytes, Seen]:
    """One request: its bytes, and what the handler must see of it."""
    method = draw(methods)
    target = draw(targets())
    headers: list[tuple[str, str]] = list(draw(st.lists(free_headers, max_size=6)))
    headers.insert(draw(st.integers(0, len(headers))), (draw(any_case("Host")), draw(hosts)))
    if last:
        headers.append((draw(any_case("Connection")), draw(any_case("close"))))
    elif draw(st.integers(0, 4)) == 0:
        headers.append((draw(any_case("Connection")), draw(any_case("keep-alive"))))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    wire_body = b""
    if framing != "none":
        body = draw(st.binary(max_size=draw(st.sampled_from([0, 16, 300, 3000]))))
    if framing == "length":
        zeros = "0" * draw(st.sampled_from([0, 0, 0, 2]))
        at = draw(st.integers(0, len(headers)))
        headers.insert(at, (draw(any_case("Content-Length")), f"{zeros}{len(body)}"))
        wire_body = body
    elif framing == "chunked":
        at = draw(st.integers(0, len(headers)))
        headers.insert(at, (draw(any_case("Transfer-Encoding")), draw(any_case("chunked"))))
        wire_body = draw(chunked_body(body))
    head = f"{method} {target} HTTP/1.1\r\n"
    head += "".join(draw(field_lines(name, value)) for name, value in headers)
    wire = head.encode("ascii") + b"\r\n" + wire_body
    seen = Seen(
        method=method,
        target=target.encode("ascii"),
        headers=tuple(_as_seen(name, value) for name, value in headers),
        body=body,
    )
    return wire, seen


def _as_seen(name: str, value: str) -> tuple[bytes, bytes]:
    # Names arrive lowercased; h11 lowercases the one Transfer-Encoding it accepts.
    name = name.lower()
    if name == "transfer-encoding":
        value = value.lower()
    return name.encode("ascii"), value.encode("ascii")


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(1, 5))
    parts = [draw(requests(last=i == count - 1)) for i in range(count)]
    stream = b"".join(wire for wire, _ in parts)
    if draw(st.integers(0, 3)) == 0:
        # Evenly spaced cuts, down to one byte per piece for a short stream.
        step = max(draw(st.integers(1, 64)), len(stream) // MAX_PIECES)
        cuts = tuple(range(step, len(stream), step))
    else:
        inner = st.integers(1, len(stream) - 1)
        cuts = tuple(sorted(set(draw(st.lists(inner, min_size=1, max_size=40)))))
    mode = draw(st.sampled_from([*PAUSES, "mixed"]))
    if mode == "mixed":
        pause = st.sampled_from(PAUSES)
        pauses = tuple(draw(st.lists(pause, min_size=len(cuts) + 1, max_size=len(cuts) + 1)))
    else:
        pauses = (mode,) * (len(cuts) + 1)
    return Case(stream, tuple(seen for _, seen in parts), cuts, pauses)


# --------------------------------------------------------------------------- the server side


async def _pieces(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def make_handler(record: Callable[[int, Seen], None]) -> Handler:
    async def handler(request: aserve.Request) -> aserve.Response:
        seen = Seen(
            method=request.method,
            target=request.target,
            headers=tuple(request.headers.raw),
            body=await request.body(),
        )
        assert request.client is not None
        record(request.client[1], seen)
        digest = seen.digest()
        headers = {"x-digest": digest}
        body = f"{seen.method} {len(seen.headers)} headers {len(seen.body)} bytes\n{digest}\n"
        # The answer's shape depends only on what was asked: a body in hand,
        # a streamed one in a few chunks, or none.
        shape = int(digest[0], 16) % 4
        if shape == 0:
            parts = [body[:10].encode(), b"", body[10:].encode()]
            return aserve.StreamingResponse(_pieces(parts), headers=headers)
        if shape == 1:
            return aserve.Response(status=204, headers=headers)
        return aserve.Response(body.encode(), headers=headers, media_type="text/plain")

    return handler


async def _send(client: RawClient, case: Case, split: bool) -> None:
    if not split:
        await client.send(case.stream)
        return
    for piece, pause in zip(case.pieces(), case.pauses, strict=True):
        await client.send(piece)
        if pause == "yield":
            # One turn lets the selector see the piece, the next runs the read.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        elif pause == "sleep":
            await asyncio.sleep(0.0005)


async def _run_connection(port: int, case: Case, split: bool) -> tuple[int, bytes]:
    client = await RawClient.connect(port)
    try:
        reading = asyncio.ensure_future(client.read_until_close(READ_TIMEOUT))
        try:
            await _send(client, case, split)
        finally:
            await asyncio.wait([reading], timeout=READ_TIMEOUT)
            if not reading.done():
                reading.cancel()
        reading.result()
        return client.client_port, bytes(client.received)
    finally:
        await client.close()


async def _check(port: int, seen: dict[int, list[Seen]], case: Case) -> None:
    async with asyncio.timeout(2 * READ_TIMEOUT):
        (whole_port, whole), (split_port, split) = await asyncio.gather(
            _run_connection(port, case, split=False),
            _run_connection(port, case, split=True),
        )
    got_whole = seen.pop(whole_port, [])
    got_split = seen.pop(split_port, [])
    assert got_whole == list(case.expected)
    assert got_split == got_whole
    assert split == whole
    answers = replies(parse_events(whole, case.methods))
    assert [a.header("x-digest") for a in answers] == [s.digest() for s in case.expected]
    assert answers[-1].header("connection") == "close"


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


@pytest.mark.parametrize("loop_name", LOOPS)
def test_engine_split_stream_is_served_like_the_whole(loop_name: str) -> None:
    seen: dict[int, list[Seen]] = {}

    def record(client_port: int, request: Seen) -> None:
        seen.setdefault(client_port, []).append(request)

    server = aserve.Server(
        make_handler(record), host="127.0.0.1", port=0, date_header=False, access_log=False
    )
    with asyncio.Runner(loop_factory=_loop_factory(loop_name)) as runner:
        runner.run(asyncio.wait_for(server.start(), READ_TIMEOUT))
        try:

            @settings(
                max_examples=EXAMPLES_PER_LOOP,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(case=cases())
            def split_equals_whole(case: Case) -> None:
                runner.run(_check(server.port, seen, case))

            split_equals_whole()
        finally:
            runner.run(server.shutdown(timeout=SHUTDOWN_TIMEOUT))


def test_generated_streams_parse_as_valid_requests() -> None:
    """The generator itself: every stream it makes is valid for a strict h11
    server, and encodes exactly the requests the model says."""

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=cases())
    def valid(case: Case) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(case.stream)
        found: list[Seen] = []
        current: h11.Request | None = None
        body: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if conn.our_state is h11.SEND_RESPONSE:
                    conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                    conn.send(h11.EndOfMessage())
                    if conn.our_state is h11.DONE:
                        conn.start_next_cycle()
                    continue
                break
            if isinstance(event, h11.Request):
                current, body = event, []
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert current is not None
                found.append(
                    Seen(
                        method=current.method.decode(),
                        target=bytes(current.target),
                        headers=tuple((bytes(n), bytes(v)) for n, v in current.headers),
                        body=b"".join(body),
                    )
                )
        assert found == list(case.expected)
        assert conn.their_state is h11.MUST_CLOSE

    valid()
