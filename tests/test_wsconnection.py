"""The sans-IO WebSocket core: tables of requests and bytes against answers
and events, no event loop (aserve/wsconnection.py)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsclient import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, close_payload, frame

from aserve import wsconnection as ws
from aserve.wsconnection import (
    Close,
    Fault,
    Handshake,
    HandshakeError,
    PingEvent,
    WSConnection,
    negotiate_deflate,
    read_handshake,
    response_headers,
    wants_websocket,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
GOOD = [
    (b"host", b"example.com"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
    (b"sec-websocket-key", KEY),
    (b"sec-websocket-version", b"13"),
]


def _with(*changes: tuple[bytes, bytes | None]) -> list[tuple[bytes, bytes]]:
    """GOOD with some headers replaced (None: removed) or added."""
    headers = list(GOOD)
    for name, value in changes:
        headers = [(n, v) for n, v in headers if n != name]
        if value is not None:
            headers.append((name, value))
    return headers


# --------------------------------------------------------------------------- handshake


def test_the_rfc_example_handshake_is_accepted_with_its_token() -> None:
    found = read_handshake(b"GET", b"1.1", GOOD)
    assert found == Handshake(KEY, (), ())
    # RFC 6455 1.3's worked example.
    assert ws.accept_token(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("method", "version", "headers", "status"),
    [
        (b"POST", b"1.1", GOOD, 400),
        (b"GET", b"1.0", GOOD, 400),
        (b"GET", b"1.1", _with((b"connection", b"keep-alive")), 400),
        (b"GET", b"1.1", _with((b"connection", None)), 400),
        (b"GET", b"1.1", _with((b"sec-websocket-key", None)), 400),
        (b"GET", b"1.1", _with((b"sec-websocket-key", b"c2hvcnQ=")), 400),  # 5 bytes
        (b"GET", b"1.1", _with((b"sec-websocket-key", b"not base64 at all, no!!")), 400),
        (b"GET", b"1.1", _with((b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ" + b"!!")), 400),
        (b"GET", b"1.1", GOOD + [(b"sec-websocket-key", KEY)], 400),  # two keys
        (b"GET", b"1.1", _with((b"sec-websocket-version", b"8")), 426),
        (b"GET", b"1.1", _with((b"sec-websocket-version", None)), 426),
        (b"GET", b"1.1", GOOD + [(b"sec-websocket-version", b"13")], 426),  # repeated
        (b"GET", b"1.1", GOOD + [(b"content-length", b"5")], 400),
        (b"GET", b"1.1", GOOD + [(b"transfer-encoding", b"chunked")], 400),
        (b"GET", b"1.1", GOOD + [(b"sec-websocket-protocol", b"chat, bad proto")], 400),
    ],
)
def test_a_bad_handshake_gets_its_http_answer(
    method: bytes, version: bytes, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    found = read_handshake(method, version, headers)
    assert isinstance(found, HandshakeError), found
    assert found.status == status
    if status == 426:
        assert found.headers == ((b"sec-websocket-version", b"13"),)


def test_connection_upgrade_is_found_among_other_tokens_and_cases() -> None:
    headers = _with((b"connection", b"keep-alive, UPGRADE"))
    assert isinstance(read_handshake(b"GET", b"1.1", headers), Handshake)
    assert wants_websocket([(b"upgrade", b"WebSocket")])
    assert wants_websocket([(b"upgrade", b"h2c, websocket")])
    assert not wants_websocket([(b"upgrade", b"h2c")])
    assert not wants_websocket([(b"connection", b"upgrade")])


def test_offered_subprotocols_keep_their_order_and_one_may_be_chosen() -> None:
    headers = GOOD + [
        (b"sec-websocket-protocol", b"v2.chat, chat"),
        (b"sec-websocket-protocol", b"x"),
    ]
    found = read_handshake(b"GET", b"1.1", headers)
    assert isinstance(found, Handshake)
    assert found.subprotocols == ("v2.chat", "chat", "x")
    head = response_headers(found, "chat", None)
    assert (b"sec-websocket-protocol", b"sec-websocket-protocol", b"chat") in head
    with pytest.raises(ValueError, match="not offered"):
        response_headers(found, "other", None)


def test_the_101_headers_are_the_servers_own() -> None:
    found = read_handshake(b"GET", b"1.1", GOOD)
    assert isinstance(found, Handshake)
    head = response_headers(found, None, None, [(b"X-Extra", b"1")])
    assert [(lower, value) for _, lower, value in head] == [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        (b"x-extra", b"1"),
    ]
    with pytest.raises(ValueError, match="the server's"):
        response_headers(found, None, None, [(b"Sec-WebSocket-Accept", b"forged")])


# --------------------------------------------------------------------------- permessage-deflate


@pytest.mark.parametrize(
    ("offers", "response"),
    [
        ([b"permessage-deflate"], "permessage-deflate; server_max_window_bits=12"),
        (
            [b"permessage-deflate; client_max_window_bits"],
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ),
        (
            [b"permessage-deflate; client_max_window_bits=10; server_no_context_takeover"],
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; "
            "client_max_window_bits=10",
        ),
        (
            [b'permessage-deflate; server_max_window_bits="9"'],
            "permessage-deflate; server_max_window_bits=9",
        ),
        # The first acceptable offer wins; unknown extensions are skipped.
        (
            [b"x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover"],
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
        ),
        # Declined offers (RFC 7692 5): an unknown or repeated parameter, a bad
        # value, a window of 8 (which zlib cannot compress with); then the next.
        ([b"permessage-deflate; foo=1"], None),
        ([b"permessage-deflate; server_no_context_takeover; server_no_context_takeover"], None),
        ([b"permessage-deflate; server_max_window_bits=16"], None),
        ([b"permessage-deflate; server_max_window_bits"], None),
        ([b"permessage-deflate; client_max_window_bits=abc"], None),
        ([b"permessage-deflate; server_no_context_takeover=1"], None),
        ([b"permessage-deflate; server_max_window_bits=8"], None),
        (
            [b"permessage-deflate; server_max_window_bits=8", b"permessage-deflate"],
            "permessage-deflate; server_max_window_bits=12",
        ),
        ([b";;;garbage"], None),
        ([], None),
    ],
)
def test_permessage_deflate_offers(offers: list[bytes], response: str | None) -> None:
    found = negotiate_deflate(offers)
    assert (found.response if found else None) == response


# --------------------------------------------------------------------------- frames in


def events(data: bytes, max_size: int = 1 << 20, deflate: ws.Deflate | None = None) -> list[Any]:
    conn = WSConnection(max_size, deflate)
    conn.receive(data)
    found = []
    while (event := conn.next_event()) is not None:
        found.append(event)
    return found


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (frame(TEXT, b"hello"), ["hello"]),
        (frame(BINARY, b"\x00\xff"), [b"\x00\xff"]),
        (frame(TEXT, "h\u00e9llo \u2603".encode()), ["h\u00e9llo \u2603"]),
        (frame(TEXT, b""), [""]),
        # Fragments make one message; a control frame may come between them.
        (
            frame(TEXT, b"he", fin=False) + frame(PING, b"x") + frame(CONTINUATION, b"llo"),
            [PingEvent(b"x"), "hello"],
        ),
        (frame(BINARY, b"a", fin=False) + frame(CONTINUATION, b"b"), [b"ab"]),
        (frame(PONG, b"p"), [ws.PONG]),
        (frame(CLOSE, close_payload(1000, "bye")), [Close(1000, "bye")]),
        (frame(CLOSE), [Close(1005, "")]),
        (frame(CLOSE, close_payload(4000)), [Close(4000, "")]),
        # Frames after the close are not read.
        (frame(CLOSE, close_payload(1001)) + frame(TEXT, b"late"), [Close(1001, "")]),
    ],
)
def test_frames_become_messages_and_events(data: bytes, expected: list[Any]) -> None:
    assert events(data) == expected


def test_a_message_split_anywhere_is_the_same_message() -> None:
    data = frame(TEXT, "snow \u2603 man".encode() * 50, fin=False) + frame(CONTINUATION, b"!")
    for cut in (1, 2, 5, 6, 7, 100, len(data) - 1):
        conn = WSConnection(1 << 20)
        conn.receive(data[:cut])
        first = conn.next_event()
        conn.receive(data[cut:])
        found = [first, conn.next_event()]
        assert [e for e in found if e is not None] == ["snow \u2603 man" * 50 + "!"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(TEXT, b"x", mask=False), 1002),  # unmasked client frame
        (frame(TEXT, b"x", rsv=4), 1002),  # RSV1 without an extension
        (frame(TEXT, b"x", rsv=1), 1002),
        (frame(0x3, b"x"), 1002),  # reserved opcode
        (frame(0xB, b"x"), 1002),  # reserved control opcode
        (frame(PING, b"x", fin=False), 1002),  # fragmented control frame
        (frame(PING, b"x" * 126), 1002),  # control frame over 125 bytes
        (frame(CONTINUATION, b"x"), 1002),  # continuation of nothing
        (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),  # new message mid-message
        (frame(CLOSE, b"\x03"), 1002),  # a one-byte close
        (frame(CLOSE, close_payload(999)), 1002),  # a code below 1000
        (frame(CLOSE, close_payload(1006)), 1002),  # a local-only code
        (frame(CLOSE, close_payload(2000)), 1002),  # reserved, unassigned
        (frame(TEXT, b"\xff\xfe"), 1007),  # not UTF-8
        (frame(TEXT, b"\xe2\x98", fin=False) + frame(CONTINUATION, b"x"), 1007),  # cut char
        (frame(CLOSE, close_payload(1000) + b"\xff"), 1007),  # reason not UTF-8
        (frame(BINARY, b"x" * 101), 1009),
        (frame(TEXT, b"x" * 60, fin=False) + frame(CONTINUATION, b"y" * 41), 1009),
        (frame(TEXT, "\u00e9".encode() * 51), 1009),  # 51 characters, 102 bytes
    ],
)
def test_a_protocol_fault_is_one_fault_with_its_close_code(data: bytes, code: int) -> None:
    found = events(data, max_size=100)
    assert len(found) == 1 and isinstance(found[0], Fault), found
    assert found[0].code == code


def test_nothing_is_read_after_a_fault_and_the_close_frame_carries_its_code() -> None:
    conn = WSConnection(100)
    conn.receive(frame(TEXT, b"x", mask=False))
    fault = conn.next_event()
    assert isinstance(fault, Fault)
    conn.receive(frame(TEXT, b"more"))
    assert conn.next_event() is None
    assert not conn.can_send
    assert conn.send_close(fault.code, "bad") == b"\x88\x05\x03\xeabad"


def test_a_message_of_exactly_max_size_passes() -> None:
    assert events(frame(BINARY, b"x" * 100), max_size=100) == [b"x" * 100]


# --------------------------------------------------------------------------- frames out


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 100_000])
def test_data_frames_have_the_shortest_length_encoding(size: int) -> None:
    conn = WSConnection(1 << 20)
    data = b"".join(conn.send_message(b"x" * size))
    if size < 126:
        assert data[:2] == bytes([0x82, size])
        body = data[2:]
    elif size < 65536:
        assert data[:2] == b"\x82\x7e" and struct.unpack("!H", data[2:4])[0] == size
        body = data[4:]
    else:
        assert data[:2] == b"\x82\x7f" and struct.unpack("!Q", data[2:10])[0] == size
        body = data[10:]
    assert body == b"x" * size


def test_a_large_payload_is_written_after_its_head_without_a_copy() -> None:
    payload = bytes(100_000)
    pieces = WSConnection(1 << 20).send_message(payload)
    assert len(pieces) == 2 and pieces[1] is payload


def test_control_frames_and_the_close_answer() -> None:
    conn = WSConnection(100)
    assert conn.send_ping(b"hi") == b"\x89\x02hi"
    assert conn.send_pong(b"hi") == b"\x8a\x02hi"
    conn.receive(frame(CLOSE, close_payload(1001, "away")))
    assert conn.next_event() == Close(1001, "away")
    # The answer echoes the code; then nothing more can be sent.
    assert conn.send_close(1001) == b"\x88\x02\x03\xe9"
    assert conn.send_close(1000) == b"" and conn.send_ping() == b""
    conn = WSConnection(100)
    conn.receive(frame(CLOSE))
    assert conn.next_event() == Close(1005, "")
    assert conn.send_close(1005) == b"\x88\x00"  # no code for no code


# --------------------------------------------------------------------------- compression


def _deflate(response: str) -> ws.Deflate:
    found = negotiate_deflate([response.encode()])
    assert found is not None
    return found


def _compressed(payload: bytes) -> bytes:
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


def test_compressed_messages_inflate_and_ours_deflate() -> None:
    deflate = _deflate("permessage-deflate; client_max_window_bits")
    text = "compress me " * 100
    assert events(frame(TEXT, _compressed(text.encode()), rsv=4), deflate=deflate) == [text]
    conn = WSConnection(1 << 20, deflate)
    [data] = conn.send_message(text)
    assert data[0] == 0xC1  # FIN, RSV1, text
    size = data[1] & 0x7F
    body = data[2:] if size < 126 else data[4:]
    assert len(body) < 100
    inflater = zlib.decompressobj(-12)
    assert inflater.decompress(body + b"\x00\x00\xff\xff").decode() == text
    # Small messages go out as they are: not worth the deflate block.
    assert conn.send_message("hi") == [b"\x81\x02hi"]


def test_a_deflate_bomb_is_refused_before_it_is_inflated() -> None:
    deflate = _deflate("permessage-deflate; client_max_window_bits")
    bomb = _compressed(bytes(64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 100_000
    conn = WSConnection(1024 * 1024, deflate)
    conn.receive(frame(BINARY, bomb, rsv=4))
    found = conn.next_event()
    assert isinstance(found, Fault) and found.code == 1009
    # wsproto was fed a slice at a time: it never held the whole bomb inflated.
    assert conn.next_event() is None


def test_bad_compressed_data_is_1007() -> None:
    deflate = _deflate("permessage-deflate")
    # 0xff: a final block of the reserved type 3 (RFC 1951 3.2.3).
    found = events(frame(BINARY, b"\xff" * 16, rsv=4), deflate=deflate)
    assert len(found) == 1 and isinstance(found[0], Fault) and found[0].code == 1007


# --------------------------------------------------------------------------- the fast path

# Simple frames (whole, final, masked, uncompressed text or binary) are read by
# WSConnection itself; everything else by wsproto, a frame at a time. Whatever
# the frames and however the bytes are cut, both ways must give the same events.

_FRAMES = st.one_of(
    st.binary(max_size=300).map(lambda b: frame(BINARY, b)),
    st.text(max_size=100).map(lambda t: frame(TEXT, t.encode())),
    st.binary(max_size=20).map(lambda b: frame(TEXT, b)),  # maybe not UTF-8
    st.binary(max_size=125).map(lambda b: frame(PING, b)),
    st.binary(max_size=125).map(lambda b: frame(PONG, b)),
    st.tuples(st.text(max_size=20), st.text(max_size=20)).map(
        lambda p: frame(TEXT, p[0].encode(), fin=False) + frame(CONTINUATION, p[1].encode())
    ),
    st.binary(max_size=200).map(lambda b: frame(BINARY, b, mask=False)),
    st.sampled_from(
        [
            frame(BINARY, b"x" * 70_000),  # past FAST_MAX: wsproto's
            frame(BINARY, b"abc", rsv=4),
            frame(0x3, b"x"),
            frame(CONTINUATION, b"x"),
            frame(CLOSE, close_payload(1000, "bye")),
            frame(BINARY, b"z" * 126),  # two-byte length
            b"\x82\xfe\x00\x05" + b"\x00" * 9,  # two-byte length for five bytes: not minimal
        ]
    ),
)


def _all_events(data: bytes, cuts: list[int], fast: bool) -> list[Any]:
    conn = WSConnection(100_000)
    conn._fast = fast
    found: list[Any] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        conn.receive(data[start:cut])
        start = cut
        while (event := conn.next_event()) is not None:
            found.append(event)
    return found


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAMES, min_size=1, max_size=12), st.data())
def test_the_fast_path_and_wsproto_agree(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    fast = _all_events(stream, cuts, True)
    slow = _all_events(stream, cuts, False)

    # A fault's reason is worded by whoever found it; its code must agree.
    def same(events: list[Any]) -> list[Any]:
        return [Fault(e.code, "") if isinstance(e, Fault) else e for e in events]

    assert same(fast) == same(slow)


def test_a_frame_longer_than_max_size_is_refused_on_its_head() -> None:
    conn = WSConnection(1000)
    conn.receive(frame(BINARY, b"", length=5000)[:10])  # the head alone
    found = conn.next_event()
    assert isinstance(found, Fault) and found.code == 1009
