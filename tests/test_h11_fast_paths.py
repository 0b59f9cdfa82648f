"""h11's fast paths in `HTTPConnection`, each against h11's public API.

Whole responses (`_send_whole`): every response is sent twice, on two
connections fed the same request: once with the fast path on and once through
h11's three `send()` calls. The bytes out, every attribute of the h11
connection afterwards, the keep-alive answer and the next request cycle must be
the same, or both must refuse the response with the same error.

Parking (`_park`): an idle keep-alive connection gives its h11 connection back
to a pool; the next request on it must go exactly as it would have on the
connection it kept.

Bodiless ends (`end_bodiless`): the end of a request without a body, taken
without asking h11 for its EndOfMessage, must leave h11 as the event does.

The import-time probes that turn each path on must turn it off when the path
leaves h11 in any other state. Under ASERVE_H11_PUBLIC_ONLY=1 both are off
(the last test checks it in a subprocess).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aserve import connection
from aserve.connection import HeaderTriples, HTTPConnection

pytestmark = pytest.mark.skipif(
    not (connection.WHOLE_FAST and connection.PARK and connection.BODILESS_FAST),
    reason="ASERVE_H11_PUBLIC_ONLY=1 is set: h11's fast paths are off (`make test` runs "
    "this module without it)",
)

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"


def triples(*pairs: tuple[bytes, bytes]) -> HeaderTriples:
    return [(name, name.lower(), value) for name, value in pairs]


def plain(body: bytes = b"hello") -> HeaderTriples:
    return triples((b"Content-Type", b"text/plain"), (b"Content-Length", b"%d" % len(body)))


def ready(request: bytes) -> HTTPConnection:
    conn = HTTPConnection(max_head_size=4096, max_url_size=1024, max_body_size=None)
    conn.receive(request)
    while True:
        event = conn.next_event()
        if type(event) is h11.EndOfMessage or event is h11.NEED_DATA:
            return conn
        assert not isinstance(event, connection.RequestError), event


def outcome(
    whole: bool,
    request: bytes,
    status: int,
    headers: HeaderTriples,
    body: bytes,
    close: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Any, ...]:
    """What sending this response does: the bytes (or the error), h11's state,
    the keep-alive answer, and what the next request cycle yields."""
    monkeypatch.setattr(connection, "_WHOLE", whole)
    conn = ready(request)
    try:
        out: Any = conn.send_full(status, list(headers), body, close=close)
    except Exception as exc:  # h11's refusal, or its failure on a value never checked
        out = ("refused", type(exc), str(exc))
    after = (out, connection._snapshot(conn._h11), conn.keep_alive, conn.response_done)
    if not conn.keep_alive:
        return after
    conn.start_next_cycle()
    conn.receive(NEXT)
    event = conn.next_event()
    return (*after, repr(event), connection._snapshot(conn._h11))


def took_fast_path(request: bytes, status: int, headers: HeaderTriples, body: bytes) -> bool:
    return ready(request)._send_whole(status, list(headers), body) is not None


CASES = [
    # (name, request, status, headers, body, close, fast)
    ("200 GET", GET, 200, plain(), b"hello", False, True),
    ("empty body", GET, 200, plain(b""), b"", False, True),
    ("404", GET, 404, plain(), b"hello", False, True),
    ("unknown status, no reason", GET, 299, plain(), b"hello", False, True),
    ("status 999", GET, 999, plain(), b"hello", False, True),
    (
        "keep-alive asked",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        200,
        plain(),
        b"hello",
        False,
        True,
    ),
    (
        "POST read to its end",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        201,
        plain(),
        b"hello",
        False,
        True,
    ),
    (
        "chunked POST read to its end",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        200,
        plain(),
        b"hello",
        False,
        True,
    ),
    (
        "Expect: 100-continue, body never read",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        417,
        plain(),
        b"hello",
        False,
        False,
    ),
    (
        "body not read yet",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc",
        200,
        plain(),
        b"hello",
        False,
        False,
    ),
    ("HEAD", b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 200, plain(), b"hello", False, False),
    ("close asked by the server", GET, 200, plain(), b"hello", True, False),
    (
        "close asked by the client",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        200,
        plain(),
        b"hello",
        False,
        False,
    ),
    (
        "HTTP/1.0",
        b"GET / HTTP/1.0\r\n\r\n",
        200,
        plain(),
        b"hello",
        False,
        False,
    ),
    (
        "HTTP/1.0 keep-alive",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        200,
        plain(),
        b"hello",
        False,
        False,
    ),
    (
        "upgrade on offer",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        200,
        plain(),
        b"hello",
        False,
        False,
    ),
    ("204", GET, 204, triples((b"Content-Length", b"0")), b"", False, False),
    ("304", GET, 304, triples((b"Content-Length", b"5")), b"", False, False),
    ("1xx", GET, 103, plain(b""), b"", False, False),
    ("status 1000", GET, 1000, plain(), b"hello", False, False),
    ("no length", GET, 200, triples((b"Content-Type", b"text/plain")), b"hello", False, False),
    ("length too short", GET, 200, triples((b"Content-Length", b"4")), b"hello", False, False),
    ("length too long", GET, 200, triples((b"Content-Length", b"6")), b"hello", False, False),
    ("length, 0 first", GET, 200, triples((b"Content-Length", b"05")), b"hello", False, False),
    (
        "two lengths",
        GET,
        200,
        triples((b"Content-Length", b"5"), (b"Content-Length", b"5")),
        b"hello",
        False,
        False,
    ),
    (
        "Transfer-Encoding",
        GET,
        200,
        triples((b"Transfer-Encoding", b"chunked")),
        b"hello",
        False,
        False,
    ),
    (
        "Connection: close from the handler",
        GET,
        200,
        triples((b"Content-Length", b"5"), (b"Connection", b"close")),
        b"hello",
        False,
        False,
    ),
    (
        "Connection: keep-alive from the handler",
        GET,
        200,
        triples((b"Content-Length", b"5"), (b"Connection", b"keep-alive")),
        b"hello",
        False,
        False,
    ),
    (
        "a Host header (h11 writes it first)",
        GET,
        200,
        triples((b"X-A", b"1"), (b"Host", b"h"), (b"Content-Length", b"5")),
        b"hello",
        False,
        False,
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "status", "headers", "body", "close", "fast"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_same_as_h11(
    request_bytes: bytes,
    status: int,
    headers: HeaderTriples,
    body: bytes,
    close: bool,
    fast: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not close:
        assert took_fast_path(request_bytes, status, headers, body) is fast
    expected = outcome(False, request_bytes, status, headers, body, close, monkeypatch)
    assert outcome(True, request_bytes, status, headers, body, close, monkeypatch) == expected


def test_the_common_case_is_the_bytes_h11_writes() -> None:
    out = ready(GET).send_full(200, plain(), b"hello")
    assert out == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")


def test_a_refused_response_leaves_the_connection_as_h11_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A length that does not match the body: h11 refuses it, the fast path
    # never takes it, and the connection is in h11's ERROR state either way.
    headers = triples((b"Content-Length", b"9"))
    for whole in (False, True):
        monkeypatch.setattr(connection, "_WHOLE", whole)
        conn = ready(GET)
        with pytest.raises(h11.LocalProtocolError):
            conn.send_full(200, list(headers), b"hello")
        assert conn._h11.our_state is h11.ERROR
        assert not conn.can_answer


REQUESTS = st.sampled_from(
    [
        GET,
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    ]
)
NAMES = st.sampled_from(
    [
        b"Content-Length",
        b"content-length",
        b"Transfer-Encoding",
        b"Connection",
        b"Host",
        b"Content-Type",
        b"X-Thing",
        b"Date",
    ]
)
PLAIN_NAMES = st.sampled_from([b"Content-Type", b"X-Thing", b"Date", b"server"])
VALUES = st.sampled_from(
    [b"0", b"1", b"5", b"05", b"chunked", b"close", b"keep-alive", b"text/plain", b"x"]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request_bytes=REQUESTS,
    status=st.sampled_from([100, 199, 200, 201, 204, 299, 304, 404, 500, 999, 1000]),
    plain_pairs=st.lists(st.tuples(PLAIN_NAMES, VALUES), max_size=4),
    pairs=st.just([])
    | st.lists(
        st.tuples(NAMES, VALUES | st.builds(lambda n: b"%d" % n, st.integers(0, 6))), max_size=3
    ),
    body=st.sampled_from([b"", b"h", b"hello"]),
    close=st.booleans(),
    with_length=st.booleans(),
    common=st.booleans(),
)
def test_same_as_h11_for_any_response(
    request_bytes: bytes,
    status: int,
    plain_pairs: list[tuple[bytes, bytes]],
    pairs: list[tuple[bytes, bytes]],
    body: bytes,
    close: bool,
    with_length: bool,
    common: bool,
) -> None:
    if common:  # half the examples near the fast path's case, to probe its edges
        request_bytes, close, with_length = GET, False, True
        pairs = pairs[:1]
    pairs = plain_pairs + pairs
    if with_length:  # the right length somewhere among them: the fast path's case, often
        pairs.insert(len(pairs) // 2, (b"Content-Length", b"%d" % len(body)))
    with pytest.MonkeyPatch.context() as monkeypatch:
        headers = triples(*pairs)
        expected = outcome(False, request_bytes, status, headers, body, close, monkeypatch)
        assert outcome(True, request_bytes, status, headers, body, close, monkeypatch) == expected


def test_the_probe_refuses_a_fast_path_that_leaves_another_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert connection._probe_whole() is True
    original = HTTPConnection._send_whole

    def keeps_the_writer(self: HTTPConnection, *args: Any) -> bytes | None:
        writer = self._h11._writer
        out = original(self, *args)
        self._h11._writer = writer
        return out

    monkeypatch.setattr(HTTPConnection, "_send_whole", keeps_the_writer)
    assert connection._probe_whole() is False

    def other_bytes(self: HTTPConnection, *args: Any) -> bytes | None:
        out = original(self, *args)
        return None if out is None else out.replace(b"HTTP/1.1", b"HTTP/1.0")

    monkeypatch.setattr(HTTPConnection, "_send_whole", other_bytes)
    assert connection._probe_whole() is False

    def breaks(self: HTTPConnection, *args: Any) -> bytes | None:
        raise AttributeError("_cstate")  # as a release of h11 without the name would

    monkeypatch.setattr(HTTPConnection, "_send_whole", breaks)
    assert connection._probe_whole() is False


# --------------------------------------------------------------------------- parking


def answer(conn: HTTPConnection) -> bytes:
    return conn.send_full(200, plain(), b"hello")


def test_an_idle_connection_holds_no_h11_state() -> None:
    conn = ready(GET)
    answer(conn)
    kept = conn._live()
    conn.start_next_cycle()
    assert conn._h11 is None
    assert conn.header_pairs == ()
    assert conn.buffered == 0
    assert conn.next_event() is h11.NEED_DATA
    assert conn._h11 is None  # asking for an event with nothing received unparks nothing
    # The next bytes take an h11 connection from the pool: the one just given back.
    conn.receive(NEXT)
    assert conn._h11 is kept
    event = conn.next_event()
    assert type(event) is h11.Request
    assert event.target == b"/next"


def test_a_new_connection_takes_h11_state_with_its_first_bytes() -> None:
    conn = HTTPConnection(max_head_size=4096, max_url_size=1024, max_body_size=None)
    assert conn._h11 is None
    assert conn.next_event() is h11.NEED_DATA
    conn.receive(GET)
    assert type(conn.next_event()) is h11.Request


@pytest.mark.parametrize(
    "after",
    [NEXT, NEXT[:10], b"\r\n", b""],
    ids=["pipelined request", "part of a head", "empty line", "client closed"],
)
def test_a_connection_with_bytes_buffered_keeps_its_h11_state(after: bytes) -> None:
    conn = ready(GET)
    conn.receive(after)
    answer(conn)
    conn.start_next_cycle()
    assert conn._h11 is not None


def test_the_pool_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "_PARKED", {})
    conns = [ready(GET) for _ in range(connection.PARKED_MAX + 10)]
    for conn in conns:
        answer(conn)
        conn.start_next_cycle()
        assert conn._h11 is None
    assert [len(pool) for pool in connection._PARKED.values()] == [connection.PARKED_MAX]


def test_pools_are_kept_apart_by_head_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "_PARKED", {})
    for size in (1024, 4096):
        conn = HTTPConnection(max_head_size=size, max_url_size=512, max_body_size=None)
        conn.receive(GET)
        while type(conn.next_event()) is not h11.EndOfMessage:
            pass
        answer(conn)
        conn.start_next_cycle()
    assert sorted(connection._PARKED) == [1024, 4096]
    for size, pool in connection._PARKED.items():
        assert [h._max_incomplete_event_size for h in pool] == [size]


SEQUENCE_REQUESTS = st.sampled_from(
    [
        GET,
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
        b"",
    ]
)


def run_sequence(fast: bool, requests: list[bytes], statuses: list[int]) -> list[Any]:
    """Requests one after another on one connection, each answered when it is
    whole, the end of a request without a body taken as the engine takes it;
    everything the connection says, as text. `fast`: h11's fast paths on
    (parking, whole responses, bodiless ends), else all off."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in ("_PARK", "_WHOLE", "_BODILESS"):
            monkeypatch.setattr(connection, name, fast)
        conn = HTTPConnection(max_head_size=4096, max_url_size=1024, max_body_size=100)
        said: list[Any] = []
        for request, status in zip(requests, statuses, strict=True):
            conn.receive(request)
            while True:
                event = conn.next_event()
                said.append(repr(event))
                if isinstance(event, connection.RequestError):
                    said.append(conn.send_error(event.status, event.reason))
                    return said
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if type(event) is h11.Request and not (conn.chunked or conn.content_length):
                    conn.end_bodiless()
                    said.append(connection._snapshot(conn._live()))
                    event = h11.EndOfMessage()
                if type(event) is h11.EndOfMessage:
                    body = b"" if status == 204 else b"hello"
                    said.append(conn.send_full(status, plain(body), body))
                    said.append((conn.keep_alive, conn.response_done))
                    if not conn.keep_alive:
                        return said
                    conn.start_next_cycle()
                if type(event) is h11.ConnectionClosed:
                    return said
        return said


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=st.lists(SEQUENCE_REQUESTS, min_size=1, max_size=6),
    statuses=st.lists(st.sampled_from([200, 204, 404]), min_size=6, max_size=6),
)
def test_the_fast_paths_serve_any_sequence_as_h11_alone_does(
    requests: list[bytes], statuses: list[int]
) -> None:
    statuses = statuses[: len(requests)]
    assert run_sequence(True, requests, statuses) == run_sequence(False, requests, statuses)
    # And the same again with the requests coming in one write, pipelined.
    joined = [b"".join(requests)]
    assert run_sequence(True, joined, statuses[:1]) == run_sequence(False, joined, statuses[:1])


# --------------------------------------------------------------------------- bodiless ends


BODILESS = [
    # (name, request, fast)
    ("GET", GET, True),
    ("HEAD", b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", True),
    ("DELETE, length 0", b"DELETE / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", True),
    ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", True),
    ("100-continue", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", True),
    ("pipelined", GET + NEXT, True),
    ("close asked", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", False),
    (
        "upgrade on offer",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        False,
    ),
    ("HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n", False),
    ("HTTP/1.0 keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),
]


@pytest.mark.parametrize(
    ("request_bytes", "fast"), [case[1:] for case in BODILESS], ids=[c[0] for c in BODILESS]
)
def test_a_bodiless_end_is_h11s(
    request_bytes: bytes, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def after(bodiless: bool) -> list[Any]:
        monkeypatch.setattr(connection, "_BODILESS", bodiless)
        conn = HTTPConnection(max_head_size=4096, max_url_size=1024, max_body_size=None)
        conn.receive(request_bytes)
        assert type(conn.next_event()) is h11.Request
        conn.end_bodiless()
        said: list[Any] = [connection._snapshot(conn._live()), conn.request_complete]
        said.append(conn.send_full(200, plain(), b"hello"))
        said.append((conn.keep_alive, connection._snapshot(conn._live())))
        if conn.keep_alive:
            conn.start_next_cycle()
            said.append(repr(conn.next_event()))
        return said

    conn = HTTPConnection(max_head_size=4096, max_url_size=1024, max_body_size=None)
    conn.receive(request_bytes)
    conn.next_event()
    assert conn._end_here() is fast
    assert after(True) == after(False)


@pytest.mark.parametrize("attribute", ["_reader", "client_is_waiting_for_100_continue"])
def test_the_probe_refuses_a_bodiless_end_that_leaves_state(
    attribute: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert connection._probe_bodiless() is True
    original = HTTPConnection._end_here

    def leaves_it(self: HTTPConnection) -> bool:
        h = self._live()
        before = getattr(h, attribute)
        done = original(self)
        setattr(h, attribute, before)
        return done

    monkeypatch.setattr(HTTPConnection, "_end_here", leaves_it)
    assert connection._probe_bodiless() is False


def test_the_probe_refuses_a_park_that_leaves_state(monkeypatch: pytest.MonkeyPatch) -> None:
    pooled = {size: list(pool) for size, pool in connection._PARKED.items() if pool}
    assert connection._probe_park() is True
    original = HTTPConnection._park

    def keeps_the_version(self: HTTPConnection, h: h11.Connection) -> None:
        version = h.their_http_version
        original(self, h)
        h.their_http_version = version

    monkeypatch.setattr(HTTPConnection, "_park", keeps_the_version)
    assert connection._probe_park() is False

    def leaves_a_method(self: HTTPConnection, h: h11.Connection) -> None:
        original(self, h)
        h._request_method = b"HEAD"

    monkeypatch.setattr(HTTPConnection, "_park", leaves_a_method)
    assert connection._probe_park() is False
    # The probes leave nothing in a server's pools.
    assert {size: pool for size, pool in connection._PARKED.items() if pool} == pooled


def test_public_only_turns_the_fast_paths_off() -> None:
    code = (
        "import aserve.connection as c; "
        "print(c.WHOLE_FAST, c._WHOLE, c.PARK, c._PARK, c.BODILESS_FAST, c._BODILESS)"
    )
    env = {**os.environ, "ASERVE_H11_PUBLIC_ONLY": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False"] * 6
