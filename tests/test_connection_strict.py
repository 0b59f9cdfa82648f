"""HTTPConnection's strictness, as tables of bytes: no loop, no socket.

Every case is fed twice: whole, and one byte at a time, so that a check that
depends on how reads split the bytes shows up as a difference. A refusal must
come out of `next_event()` as a `RequestError` with its status, never as an
exception or a silent close. The same tables run with ASERVE_H11_PUBLIC_ONLY=1
(`make test` does it), where h11's private names are not used.
"""

from __future__ import annotations

import os
import subprocess
import sys

import h11
import pytest

from aserve import connection
from aserve.connection import NEED_DATA, PAUSED, HTTPConnection, RequestError

CHUNKED = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def make(*, lenient: bool = False, max_body_size: int | None = 100) -> HTTPConnection:
    return HTTPConnection(
        max_head_size=1024,
        max_url_size=256,
        max_body_size=max_body_size,
        lenient_framing=lenient,
    )


def drain(conn: HTTPConnection) -> list[object]:
    out: list[object] = []
    while True:
        event = conn.next_event()
        out.append(event)
        if event is NEED_DATA or event is PAUSED:
            return out
        if isinstance(event, RequestError | h11.ConnectionClosed):
            return out


def feed(data: bytes, *, split: bool, conn: HTTPConnection | None = None) -> list[object]:
    """The events for `data`, NEED_DATA left out but for the last one."""
    conn = conn or make()
    pieces = [data[i : i + 1] for i in range(len(data))] if split else [data]
    out: list[object] = []
    for piece in pieces:
        conn.receive(piece)
        for event in drain(conn):
            if isinstance(event, RequestError):
                return [*out, event]
            if event is not NEED_DATA:
                out.append(event)
    return [*out, NEED_DATA]


def refusal(result: list[object]) -> RequestError:
    error = result[-1]
    assert isinstance(error, RequestError), result
    return error


def request_of(result: list[object]) -> h11.Request:
    assert not any(isinstance(e, RequestError) for e in result), result
    [request] = [e for e in result if isinstance(e, h11.Request)]
    return request


def body_of(result: list[object]) -> bytes:
    assert not any(isinstance(e, RequestError) for e in result), result
    assert any(isinstance(e, h11.EndOfMessage) for e in result), result
    return b"".join(bytes(e.data) for e in result if isinstance(e, h11.Data))


SPLIT = pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])


def get(*lines: bytes, start: bytes = b"GET / HTTP/1.1") -> bytes:
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


# --------------------------------------------------------------------------- heads

HEAD_REFUSALS = [
    # RFC 9110 5.5: no control character but HTAB in a field value; none in the head.
    ("ctl-in-value", get(b"Host: a", b"X: a\x01b"), 400, "Control character"),
    ("nul-in-value", get(b"Host: a", b"X: a\x00b"), 400, "Control character"),
    ("del-in-value", get(b"Host: a", b"X: a\x7fb"), 400, "Control character"),
    ("vt-in-value", get(b"Host: a", b"X: a\x0bb"), 400, "Control character"),
    ("esc-in-name", get(b"Host: a", b"X\x1b: b"), 400, "Control character"),
    ("nul-in-target", get(b"Host: a", start=b"GET /\x00 HTTP/1.1"), 400, "Control character"),
    # RFC 9112 2.2: CRLF ends a line; a bare LF or a bare CR is refused.
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: a\n\n", 400, "Bare LF"),
    ("bare-lf-one-field", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400, "Bare LF"),
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, "Bare LF"),
    ("bare-lf-empty-line", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400, "Bare LF"),
    ("bare-cr-in-value", get(b"Host: a", b"X: a\rb"), 400, "Bare CR"),
    ("bare-cr-line-end", b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400, "Bare CR"),
    # RFC 9112 5.2 (obs-fold) and 2.2 (whitespace before the first field line).
    ("obs-fold-space", get(b"Host: a", b"X: a", b" b"), 400, "folding"),
    ("obs-fold-tab", get(b"Host: a", b"X: a", b"\tb"), 400, "folding"),
    ("space-before-first-field", get(b" Host: a"), 400, "first header field"),
    ("space-before-request-line", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, ""),
    # RFC 9112 3.2: Host is one valid uri-host [":" port].
    ("host-userinfo", get(b"Host: user@a"), 400, "Host header"),
    ("host-path", get(b"Host: a/b"), 400, "Host header"),
    ("host-list", get(b"Host: a, b"), 400, "Host header"),
    ("host-space", get(b"Host: a b"), 400, "Host header"),
    ("host-twice", get(b"Host: a", b"Host: a"), 400, ""),
    ("host-bad-port", get(b"Host: a:8o"), 400, "Host header"),
    ("host-open-bracket", get(b"Host: [::1"), 400, "Host header"),
    ("host-bad-ipv6", get(b"Host: [1:2:3]"), 400, "Host header"),
    ("host-non-ascii", get(b"Host: caf\xe9"), 400, "Host header"),
    ("host-missing", get(b"X: a"), 400, ""),
    # RFC 9110 15.6.6: only HTTP/1.0 and HTTP/1.1 are spoken here.
    ("version-9-9", get(b"Host: a", start=b"GET / HTTP/9.9"), 505, "HTTP/9.9"),
    ("version-2-0", get(b"Host: a", start=b"GET / HTTP/2.0"), 505, "HTTP/2"),
    ("version-1-2", get(b"Host: a", start=b"GET / HTTP/1.2"), 505, "HTTP/1.2"),
    ("version-0-9", get(b"Host: a", start=b"GET / HTTP/0.9"), 505, "HTTP/0.9"),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "HTTP/2 is not supported"),
    ("http09-line", b"GET /\r\n", 400, "request line"),
    # RFC 9112 3.2: the four target forms; "*" only for OPTIONS (3.2.4).
    ("asterisk-get", get(b"Host: a", start=b"GET * HTTP/1.1"), 400, "OPTIONS"),
    ("asterisk-head", get(b"Host: a", start=b"HEAD * HTTP/1.1"), 400, "OPTIONS"),
    ("authority-form-get", get(b"Host: a", start=b"GET a:80 HTTP/1.1"), 400, "target"),
    ("relative-target", get(b"Host: a", start=b"GET a/b HTTP/1.1"), 400, "target"),
    # RFC 9110 9.3.6: no tunnels here.
    ("connect", get(b"Host: a:443", start=b"CONNECT a:443 HTTP/1.1"), 501, "CONNECT"),
    ("connect-origin-form", get(b"Host: a", start=b"CONNECT / HTTP/1.1"), 501, "CONNECT"),
    # Limits.
    ("head-too-large", get(b"Host: a", b"X: " + b"b" * 1100), 431, ""),
    ("method-too-large", get(b"Host: a", start=b"A" * 1100 + b" / HTTP/1.1"), 431, ""),
    ("target-too-long", get(b"Host: a", start=b"GET /" + b"a" * 300 + b" HTTP/1.1"), 414, ""),
    ("target-too-long-huge", get(b"Host: a", start=b"GET /" + b"a" * 1100 + b" HTTP/1.1"), 414, ""),
    ("empty-lines-unbounded", b"\r\n" * 5 + get(b"Host: a"), 400, "empty lines"),
]


@SPLIT
@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [case[1:] for case in HEAD_REFUSALS],
    ids=[case[0] for case in HEAD_REFUSALS],
)
def test_head_refusals(data: bytes, status: int, reason: str, split: bool) -> None:
    error = refusal(feed(data, split=split))
    assert error.status == status, error
    assert reason in error.reason


HEAD_ACCEPTED = [
    ("host-port", get(b"Host: example.com:8080"), b"/"),
    ("host-ipv4", get(b"Host: 127.0.0.1:80"), b"/"),
    ("host-ipv6", get(b"Host: [::1]:8080"), b"/"),
    ("host-ipv6-no-port", get(b"Host: [2001:db8::1]"), b"/"),
    ("host-ipvfuture", get(b"Host: [v1.fe80::a+en1]"), b"/"),
    ("host-empty", get(b"Host: "), b"/"),  # RFC 9110 7.2
    ("host-empty-port", get(b"Host: a:"), b"/"),
    ("host-pct-encoded", get(b"Host: ex%41mple"), b"/"),
    ("host-sub-delims", get(b"Host: a,b"), b"/"),  # a reg-name may hold a comma
    ("options-asterisk", get(b"Host: a", start=b"OPTIONS * HTTP/1.1"), b"*"),
    ("absolute-form", get(b"Host: a", start=b"GET http://a/x?y HTTP/1.1"), b"http://a/x?y"),
    ("http10-no-host", get(start=b"GET / HTTP/1.0"), b"/"),
    ("htab-in-value", get(b"Host: a", b"X: a\tb"), b"/"),
    ("obs-text-in-value", get(b"Host: a", b"X: caf\xe9"), b"/"),
    ("trailing-whitespace", get(b"Host: a ", b"X: b\t"), b"/"),
    ("empty-value", get(b"Host: a", b"X:"), b"/"),
    ("empty-line-crlf", b"\r\n" + get(b"Host: a"), b"/"),  # RFC 9112 2.2
    ("empty-line-lf", b"\n" + get(b"Host: a"), b"/"),
    ("empty-lines-four", b"\r\n\n\r\n\n" + get(b"Host: a"), b"/"),
]


@SPLIT
@pytest.mark.parametrize(
    ("data", "target"),
    [case[1:] for case in HEAD_ACCEPTED],
    ids=[case[0] for case in HEAD_ACCEPTED],
)
def test_valid_heads_pass(data: bytes, target: bytes, split: bool) -> None:
    assert request_of(feed(data, split=split)).target == target


# --------------------------------------------------------------------------- Transfer-Encoding

TE_CASES = [
    # RFC 9112 6.3: chunked not final, or framing that cannot be trusted: 400.
    ("xchunked", [b"xchunked"], 400),
    ("identity", [b"identity"], 400),
    ("gzip", [b"gzip"], 400),
    ("empty", [b""], 400),
    ("only-commas", [b" , ,"], 400),
    ("chunked-twice", [b"chunked, chunked"], 400),
    ("chunked-with-parameter", [b"chunked;ext"], 400),
    ("chunked-with-parameter-value", [b"chunked;a=b"], 400),
    ("chunked-then-gzip", [b"chunked, gzip"], 400),
    ("two-lines", [b"chunked", b"chunked"], 400),
    ("two-lines-gzip-chunked", [b"gzip", b"chunked"], 400),
    ("bad-syntax", [b"chunked\x01"], 400),
    ("quoted-comma", [b'gzip;a="1,2", chunked'], 501),
    # RFC 9112 6.1: an unknown coding before a final chunked: 501.
    ("gzip-then-chunked", [b"gzip, chunked"], 501),
    ("identity-then-chunked", [b"identity, chunked"], 501),
    ("parameter-then-chunked", [b"foo;q=1, chunked"], 501),
]


@SPLIT
@pytest.mark.parametrize("with_length", [False, True], ids=["alone", "with-length"])
@pytest.mark.parametrize(
    ("values", "status"), [case[1:] for case in TE_CASES], ids=[case[0] for case in TE_CASES]
)
def test_transfer_encoding_refusals(
    values: list[bytes], status: int, with_length: bool, split: bool
) -> None:
    lines = [b"Host: a"] + [b"Transfer-Encoding: " + value for value in values]
    if with_length:
        lines.append(b"Content-Length: 5")  # RFC 9112 6.1: with Content-Length, 400 always
    error = refusal(feed(get(*lines, start=b"POST / HTTP/1.1") + b"hello", split=split))
    assert error.status == (400 if with_length else status), error


@SPLIT
@pytest.mark.parametrize(
    "value", [b"chunked", b"Chunked", b", chunked", b"chunked,", b" , chunked , "]
)
def test_plain_chunked_spellings_are_read_as_chunked(value: bytes, split: bool) -> None:
    # RFC 9110 5.6.1: empty list elements are ignored.
    data = get(b"Host: a", b"Transfer-Encoding: " + value, start=b"POST / HTTP/1.1")
    conn = make()
    result = feed(data + b"5\r\nhello\r\n0\r\n\r\n", split=split, conn=conn)
    assert body_of(result) == b"hello"
    assert conn.chunked and conn.request_complete


@SPLIT
def test_transfer_encoding_in_http10_is_refused(split: bool) -> None:
    data = get(b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.0") + b"0\r\n\r\n"
    assert refusal(feed(data, split=split)).status == 400


# --------------------------------------------------------------------------- chunked bodies

CHUNK_REFUSALS = [
    # RFC 9112 7.1: chunk-size is 1*HEXDIG.
    ("negative", b"-1\r\nx\r\n0\r\n\r\n", 400),
    ("hex-prefix", b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    ("plus-sign", b"+5\r\nhello\r\n0\r\n\r\n", 400),
    ("empty-size", b"\r\nhello\r\n0\r\n\r\n", 400),
    ("space-before-size", b" 5\r\nhello\r\n0\r\n\r\n", 400),
    ("space-after-size", b"5 \r\nhello\r\n0\r\n\r\n", 400),
    ("tab-after-size", b"5\t\r\nhello\r\n0\r\n\r\n", 400),
    ("bare-lf-size-line", b"5\nhello\r\n0\r\n\r\n", 400),
    ("bare-cr-size-line", b"5\rhello\r\n0\r\n\r\n", 400),
    ("too-many-digits", b"0" * 17 + b"5\r\nhello\r\n0\r\n\r\n", 400),
    ("above-2-63", b"8000000000000001\r\nhello\r\n0\r\n\r\n", 400),
    ("all-ones-64", b"FFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n", 400),
    # Data longer than its size, or not followed by CRLF.
    ("data-too-long", b"3\r\nhello\r\n0\r\n\r\n", 400),
    ("data-no-crlf", b"5\r\nhelloXY0\r\n\r\n", 400),
    ("data-bare-lf", b"5\r\nhello\n0\r\n\r\n", 400),
    # RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ).
    ("ext-nul", b"5;a=\x00\r\nhello\r\n0\r\n\r\n", 400),
    ("ext-bare-cr", b"5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    ("ext-bad-token", b"5;a@b\r\nhello\r\n0\r\n\r\n", 400),
    ("ext-no-name", b"5;=b\r\nhello\r\n0\r\n\r\n", 400),
    ("ext-space-in-value", b"5;a=b c\r\nhello\r\n0\r\n\r\n", 400),
    ("ext-trailing-space", b"5;a=b \r\nhello\r\n0\r\n\r\n", 400),
    ("ext-unterminated-quote", b'5;a="b\r\nhello\r\n0\r\n\r\n', 400),
    ("ext-ctl-in-quote", b'5;a="\x01"\r\nhello\r\n0\r\n\r\n', 400),
    ("ext-no-semicolon", b"5a=b\r\nhello\r\n0\r\n\r\n", 400),
    # Limits: a size past max_body_size (100 here) is refused on its line.
    ("size-over-limit", b"65\r\n" + b"x" * 101 + b"\r\n0\r\n\r\n", 413),
    ("sizes-add-over-limit", b"32\r\n" + b"x" * 50 + b"\r\n33\r\n" + b"x" * 51 + b"\r\n", 413),
    ("largest-sane-size", b"7FFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n", 413),
    ("ext-too-long", b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n", 400),
    # Trailers: field lines like a head's (RFC 9112 7.1.2, 2.2, 5.2; RFC 9110 5.5).
    ("trailer-bare-lf", b"0\r\nX: a\n\r\n", 400),
    ("trailer-end-bare-lf", b"0\r\nX: a\r\n\n", 400),
    ("trailer-obs-fold", b"0\r\nX: a\r\n b\r\n\r\n", 400),
    ("trailer-ctl", b"0\r\nX: a\x01\r\n\r\n", 400),
    ("trailer-bad-name", b"0\r\nX Y: a\r\n\r\n", 400),
    ("trailer-transfer-encoding", b"0\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("trailer-too-large", b"0\r\nX: " + b"a" * 1100 + b"\r\n\r\n", 431),
]


@SPLIT
@pytest.mark.parametrize(
    ("body", "status"),
    [case[1:] for case in CHUNK_REFUSALS],
    ids=[case[0] for case in CHUNK_REFUSALS],
)
def test_chunk_refusals(body: bytes, status: int, split: bool) -> None:
    error = refusal(feed(CHUNKED + body, split=split))
    assert error.status == status, error


CHUNK_ACCEPTED = [
    ("plain", b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("two-chunks", b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", b"hello"),
    ("upper-hex", b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    ("leading-zeros", b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
    ("ext-name", b"5;name\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("ext-name-value", b"5;name=value\r\nhello\r\n0;last=1\r\n\r\n", b"hello"),
    ("ext-quoted", b'5;name="quoted \\"value\\"; ok"\r\nhello\r\n0\r\n\r\n', b"hello"),
    ("ext-several", b'5;a=1;b;c="x"\r\nhello\r\n0\r\n\r\n', b"hello"),
    ("ext-bws-after-semicolon", b"5; a = b\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("ext-bws-before-semicolon", b"5 ;a=b\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("ext-bws-tabs", b"5\t;\ta\t=\tb\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("trailer", b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n", b"hello"),
    ("data-holds-crlf", b"5\r\n\r\n\r\n\n\r\n0\r\n\r\n", b"\r\n\r\n\n"),
    ("at-limit", b"64\r\n" + b"x" * 100 + b"\r\n0\r\n\r\n", b"x" * 100),
]


@SPLIT
@pytest.mark.parametrize(
    ("body", "data"),
    [case[1:] for case in CHUNK_ACCEPTED],
    ids=[case[0] for case in CHUNK_ACCEPTED],
)
def test_valid_chunked_bodies_pass(body: bytes, data: bytes, split: bool) -> None:
    conn = make()
    # A pipelined request after the body must come out whole, in its turn.
    result = feed(CHUNKED + body + get(b"Host: b"), split=split, conn=conn)
    assert body_of(result) == data
    assert result[-1] is PAUSED or result[-2] is PAUSED
    conn.send_full(200, [(b"content-length", b"content-length", b"0")], b"")
    conn.start_next_cycle()
    following = drain(conn)
    assert isinstance(following[0], h11.Request), following
    assert following[0].headers == [(b"host", b"b")]


def test_chunk_size_over_limit_is_refused_before_its_data() -> None:
    conn = make()
    result = feed(CHUNKED + b"1000\r\n", split=False, conn=conn)
    assert refusal(result) == RequestError(413, "Request body larger than 100 bytes")
    assert conn.can_answer


def test_chunk_size_without_limit_may_reach_two_to_63() -> None:
    conn = make(max_body_size=None)
    result = feed(CHUNKED + b"7FFFFFFFFFFFFFFF\r\nhello", split=False, conn=conn)
    assert not any(isinstance(e, RequestError) for e in result), result
    assert refusal(feed(CHUNKED + b"8000000000000000\r\n", split=False)).status == 400


def test_long_chunk_extension_is_refused_before_its_line_ends() -> None:
    result = feed(CHUNKED + b"5;a=" + b"b" * 5000, split=False)
    assert refusal(result) == RequestError(400, "Chunk extension too long")


def test_chunk_refusal_after_some_data_reaches_the_reader() -> None:
    conn = make()
    result = feed(CHUNKED + b"5\r\nhello\r\n", split=False, conn=conn)
    assert body_of(result + [h11.EndOfMessage()]) == b"hello"
    conn.receive(b"zz\r\n")
    assert conn.next_event() == RequestError(400, "Invalid chunk size")
    assert conn.next_event() == RequestError(400, "Invalid chunk size")  # it stays refused


# --------------------------------------------------------------------------- empty lines


def test_empty_line_after_a_body_keeps_the_connection() -> None:
    # A client that ends a POST body with an extra CRLF (RFC 9112 2.2).
    conn = make()
    post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab\r\n"
    result = feed(post + get(b"Host: a"), split=False, conn=conn)
    assert body_of(result) == b"ab"
    conn.send_full(204, [], b"")
    assert conn.keep_alive
    conn.start_next_cycle()
    assert isinstance(drain(conn)[0], h11.Request)


@pytest.mark.parametrize("eof", [False, True], ids=["open", "closed"])
def test_a_lone_cr_waits_for_its_lf(eof: bool) -> None:
    conn = make()
    conn.receive(b"\r")
    assert conn.next_event() is NEED_DATA
    if eof:
        conn.receive(b"")
        assert isinstance(conn.next_event(), RequestError)
    else:
        conn.receive(b"\n" + get(b"Host: a"))
        assert isinstance(conn.next_event(), h11.Request)


def test_empty_lines_then_close_is_a_quiet_close() -> None:
    conn = make()
    conn.receive(b"\r\n\r\n")
    conn.receive(b"")
    assert isinstance(conn.next_event(), h11.ConnectionClosed)


def test_empty_lines_are_counted_per_request() -> None:
    conn = make()
    for _ in range(3):
        result = feed(b"\r\n" * 4 + get(b"Host: a"), split=False, conn=conn)
        assert isinstance(result[0], h11.Request), result
        conn.send_full(204, [], b"")
        conn.start_next_cycle()


# --------------------------------------------------------------------------- lenient_framing

LENIENT_ACCEPTED = [
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: a\nX: b\n\n", b"b"),
    ("bare-lf-one-line", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", b"b"),
    ("bare-lf-empty-line", b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\n", b"b"),
    ("obs-fold-space", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", b"a b"),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", b"a b"),
]


@SPLIT
@pytest.mark.parametrize(
    ("data", "value"),
    [case[1:] for case in LENIENT_ACCEPTED],
    ids=[case[0] for case in LENIENT_ACCEPTED],
)
def test_lenient_framing_accepts_bare_lf_and_obs_fold(
    data: bytes, value: bytes, split: bool
) -> None:
    request = request_of(feed(data, split=split, conn=make(lenient=True)))
    assert dict(request.headers)[b"x"] == value
    # The default refuses the same bytes.
    assert refusal(feed(data, split=split)).status == 400


LENIENT_REFUSALS = [
    ("bare-cr", get(b"Host: a", b"X: a\rb")),
    ("ctl", get(b"Host: a", b"X: a\x01b")),
    ("nul", b"GET / HTTP/1.1\nHost: a\nX: \x00\n\n"),
    ("fold-before-first-field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
    ("bare-lf-chunk-line", CHUNKED + b"5\nhello\r\n0\r\n\r\n"),
]


@SPLIT
@pytest.mark.parametrize(
    "data", [case[1] for case in LENIENT_REFUSALS], ids=[case[0] for case in LENIENT_REFUSALS]
)
def test_lenient_framing_still_refuses(data: bytes, split: bool) -> None:
    assert refusal(feed(data, split=split, conn=make(lenient=True))).status == 400


@SPLIT
def test_lenient_framing_reads_bare_lf_trailers_and_chunked_heads(split: bool) -> None:
    data = b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5\r\nhello\r\n0\r\nX: 1\n\n"
    assert body_of(feed(data, split=split, conn=make(lenient=True))) == b"hello"


@SPLIT
def test_lenient_framing_reads_a_folded_transfer_encoding(split: bool) -> None:
    folded = get(b"Host: a", b"Transfer-Encoding:", b" chunked", start=b"POST / HTTP/1.1")
    result = feed(folded + b"0\r\n\r\n", split=split, conn=make(lenient=True))
    assert body_of(result) == b""
    folded = get(b"Host: a", b"Transfer-Encoding: gzip,", b" chunked", start=b"POST / HTTP/1.1")
    assert refusal(feed(folded, split=split, conn=make(lenient=True))).status == 501


# --------------------------------------------------------------------------- answers


def test_refusing_a_head_request_sends_no_body() -> None:
    conn = make()
    error = refusal(feed(get(b"Host: a", start=b"HEAD * HTTP/1.1"), split=False, conn=conn))
    reply = conn.send_error(error.status, error.reason)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert reply.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("first", [b"HEAD", b"GET"])
@pytest.mark.parametrize(
    "bad",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    ],
    ids=["h11-refuses", "aserve-refuses"],
)
def test_a_bad_request_after_a_kept_alive_one_gets_its_answer_with_a_body(
    first: bytes, bad: bytes
) -> None:
    # The error answer is the answer to the bad request, not shaped by the one
    # before it: after a HEAD, it still has its body.
    conn = make()
    events = feed(get(b"Host: a", start=first + b" / HTTP/1.1"), split=False, conn=conn)
    assert isinstance(events[0], h11.Request)
    conn.send_full(200, [(b"content-length", b"content-length", b"5")], b"hello")
    assert conn.keep_alive
    conn.start_next_cycle()
    error = refusal(feed(bad, split=False, conn=conn))
    reply = conn.send_error(error.status, error.reason)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert reply.endswith(b"\r\n\r\n" + error.reason.encode() + b"\n")


@pytest.mark.parametrize(
    "data",
    [
        get(b"Host: a:443", start=b"CONNECT a:443 HTTP/1.1"),
        b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        CHUNKED + b"zz\r\n",
    ],
    ids=["connect", "bare-lf", "http2-preface", "bad-chunk"],
)
def test_every_refusal_can_be_answered_and_closes(data: bytes) -> None:
    conn = make()
    error = refusal(feed(data, split=False, conn=conn))
    reply = conn.send_error(error.status, error.reason)
    assert reply.startswith(b"HTTP/1.1 %d " % error.status)
    assert b"connection: close\r\n" in reply
    assert not conn.keep_alive
    assert conn.next_event() == error


def test_private_h11_names_follow_the_environment() -> None:
    expected = os.environ.get("ASERVE_H11_PUBLIC_ONLY", "") in ("", "0")
    assert connection.PRIVATE_H11 is expected
    code = "import aserve.connection as c; print(c.PRIVATE_H11)"
    env = {**os.environ, "ASERVE_H11_PUBLIC_ONLY": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
