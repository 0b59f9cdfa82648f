"""HTTPConnection with tables of bytes: no loop, no socket."""

from __future__ import annotations

import h11
import pytest

from aserve.connection import NEED_DATA, PAUSED, HTTPConnection, RequestError


def make(**limits: int | None) -> HTTPConnection:
    options: dict[str, int | None] = {
        "max_head_size": 1024,
        "max_url_size": 256,
        "max_body_size": 100,
    }
    options.update(limits)
    return HTTPConnection(**options)  # type: ignore[arg-type]


def events(conn: HTTPConnection, data: bytes) -> list[object]:
    if data:
        conn.receive(data)
    out: list[object] = []
    while True:
        event = conn.next_event()
        out.append(event)
        if (
            event is NEED_DATA
            or event is PAUSED
            or isinstance(event, RequestError | h11.ConnectionClosed)
        ):
            return out


REFUSALS = [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    # RFC 9112 6.3: chunked not final is a 400; an unknown coding before it, 501 (6.1).
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", 413),
    (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET /" + b"a" * 2000, 414),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 2000, 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
]


@pytest.mark.parametrize(("data", "status"), REFUSALS)
def test_refusals_carry_their_status(data: bytes, status: int) -> None:
    result = events(make(), data)
    assert isinstance(result[-1], RequestError)
    assert result[-1].status == status


def test_simple_get_then_paused_on_pipelined_data() -> None:
    conn = make()
    result = events(conn, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [type(e) for e in result[:2]] == [h11.Request, h11.EndOfMessage]
    assert result[2] is PAUSED
    assert conn.buffered > 0
    reply = conn.send_full(200, [(b"content-length", b"content-length", b"2")], b"ok")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\nok")
    assert conn.keep_alive
    conn.start_next_cycle()
    again = events(conn, b"")
    assert isinstance(again[0], h11.Request) and again[0].target == b"/b"


def test_request_facts_are_recorded() -> None:
    conn = make()
    events(
        conn,
        b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    )
    assert conn.content_length == 3
    assert not conn.chunked
    assert conn.waiting_for_continue
    assert conn.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert not conn.waiting_for_continue
    assert conn.send_continue() == b""


def test_http10_closes_by_default() -> None:
    conn = make()
    events(conn, b"GET / HTTP/1.0\r\n\r\n")
    reply = conn.send_full(200, [(b"content-length", b"content-length", b"1")], b"x")
    assert b"Connection: close\r\n" in reply
    assert not conn.keep_alive


def test_http10_keep_alive_when_asked_and_length_known() -> None:
    conn = make()
    events(conn, b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n")
    reply = conn.send_full(200, [(b"content-length", b"content-length", b"1")], b"x")
    assert b"Connection: keep-alive\r\n" in reply
    assert b"close" not in reply
    assert conn.keep_alive
    conn.start_next_cycle()
    second = events(conn, b"")
    assert isinstance(second[0], h11.Request) and second[0].target == b"/2"
    reply = conn.send_full(200, [(b"content-length", b"content-length", b"1")], b"y")
    assert b"Connection: close\r\n" in reply
    assert not conn.keep_alive


def test_http10_keep_alive_refused_for_unknown_length() -> None:
    conn = make()
    events(conn, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head = conn.send_head(200, [])
    assert b"Connection: close\r\n" in head
    assert b"chunked" not in head.lower()


def test_head_response_keeps_length_and_sends_no_body() -> None:
    conn = make()
    events(conn, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = conn.send_full(200, [(b"content-length", b"content-length", b"5")], b"hello")
    assert reply.endswith(b"content-length: 5\r\n\r\n")
    assert conn.keep_alive


def test_streaming_head_goes_chunked_to_http11() -> None:
    conn = make()
    events(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = conn.send_head(200, [])
    assert b"Transfer-Encoding: chunked\r\n" in head
    assert conn.send_data(b"abc") == b"3\r\nabc\r\n"
    assert conn.send_end() == b"0\r\n\r\n"


def test_close_flag_adds_connection_close() -> None:
    conn = make()
    events(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = conn.send_full(204, [], b"", close=True)
    assert b"connection: close\r\n" in reply.lower()
    assert not conn.keep_alive


def test_error_answer_before_any_request() -> None:
    conn = make()
    result = events(conn, b"NONSENSE\r\n\r\n")
    assert isinstance(result[-1], RequestError)
    reply = conn.send_error(400, "Bad request: nonsense")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close\r\n" in reply
    assert reply.endswith(b"\r\n\r\nBad request: nonsense\n")


def test_chunked_body_events() -> None:
    conn = make()
    data = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    result = events(conn, data)
    kinds = [type(e) for e in result]
    assert kinds[:3] == [h11.Request, h11.Data, h11.EndOfMessage]
    assert conn.chunked and conn.content_length is None
    assert conn.request_complete


def test_bad_chunk_framing_is_a_400() -> None:
    conn = make()
    data = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
    result = events(conn, data)
    assert isinstance(result[-1], RequestError) and result[-1].status == 400
