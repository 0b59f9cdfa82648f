"""Sans-IO HTTP/1.1 for one server connection: everything h11 decides, no IO.

`HTTPConnection` wraps one `h11.Connection`. Bytes go in with `receive()`;
`next_event()` gives h11's events, or a `RequestError` when the request must be
refused (malformed, too large, a framing ambiguity), each with the status it
deserves. Responses go out as bytes from `send_full()`, `send_head()`,
`send_data()` and `send_end()`. The keep-alive, 100-continue and
"can this connection carry another request?" decisions live here too.

This module never imports asyncio: it is tested with tables of bytes.

Strictness. h11 stays the one parser and state machine; where it is lenient
with requests, small checks beside it refuse what RFC 9110 and RFC 9112 call
invalid (each check cites its section):
- a request head is checked once, as raw bytes, just before h11 parses it: one
  anchored regex over the head finds control characters, bare CR, bare LF and
  obsolete line folding (`lenient_framing` lets the last two through);
- the fields of h11's `Request` are checked in the pass `_inspect` makes anyway:
  version, Host, request-target form, CONNECT, Transfer-Encoding, limits;
- a chunked body's framing lines are followed as the bytes arrive
  (`_follow_chunks`), so a chunk larger than the body limit is refused before
  its data, and chunk extensions and trailers get the grammar h11 skips.
Only a chunked request pays for the last; the first two add about 3% to what
a keep-alive GET costs through this class (less than a regex pass of h11's own).

Hot path notes (measured, see benchmarks/README.md):
- h11 validates every header of every `h11.Response` with regexes unless it is
  handed an already-built `h11._headers.Headers`; response headers are checked
  once where they are made (`aserve.headers.encode_header`), so here they are
  wrapped as a ready `Headers` and h11's second pass is skipped.
- One `EndOfMessage` instance serves every response (h11 events are immutable).
- A request head is checked where it lies, in h11's receive buffer, not copied.

- A whole response in hand on a kept-alive HTTP/1.1 connection (the common
  case: a GET, a 200 with a Content-Length) is written here and h11's state
  machine is moved to where its three `send()` calls would have left it
  (`_send_whole`): those calls are about a fifth of a request's instructions,
  and nothing in them checks the request. Every other response, and any
  response that does not fit the case exactly (a length that differs from the
  body, a Connection or Transfer-Encoding header, HEAD, 204, 304...), goes
  through h11 as before, which refuses what it refuses.

- The end of a request without a body (`end_bodiless`): h11 reads nothing
  for it, and on a kept-alive connection with no upgrade on offer its client
  state is moved to DONE here instead of through an EndOfMessage event (8% of
  a keep-alive GET's instructions).

These use h11's private names (`Headers`, its `_full_items`, the receive
buffer's `_data` and `_extract`, the connection's `_cstate`, `_reader` and
`_writer`).
They are tried once at import: probes run request cycles through h11's
public API and through each private path and require the same bytes out and
the same state after each step. If a name is missing or anything differs (a
new h11 release), or the environment sets ASERVE_H11_PUBLIC_ONLY=1, the same
checks run on h11's public API instead (`trailing_data`, plain header lists,
`send()` for every response): slower, equally strict.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import FunctionType
from typing import Any, Final, TypeVar

import h11

NEED_DATA: Final = h11.NEED_DATA
PAUSED: Final = h11.PAUSED

_END: Final = h11.EndOfMessage()
_CONTINUE: Final = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")

# Reason phrases are optional on the wire (RFC 9112 4) but clients and humans read them.
REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

HeaderTriples = list[tuple[bytes, bytes, bytes]]

_CLOSE_HEADER: Final = (b"connection", b"connection", b"close")


def _private_h11() -> Any:
    """h11's `Headers` class if the private names used here work as expected, else None."""
    try:
        headers_class = importlib.import_module("h11._headers").Headers
        probe = h11.Connection(h11.SERVER)
        probe.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\nx")
        buffer = probe._receive_buffer
        if not isinstance(buffer._data, bytearray) or buffer._data[:4] != b"GET ":
            return None
        event = probe.next_event()
        if type(event) is not h11.Request or event.headers._full_items != [
            (b"Host", b"host", b"a")
        ]:
            return None
        buffer._extract(2)
        if buffer._data != b"x":
            return None
        h11.Response(
            status_code=200, headers=headers_class([(b"A", b"a", b"b")]), reason=b"", _parsed=True
        )
    except Exception:
        return None
    return headers_class


_H11Headers: Final[Any] = (
    None if os.environ.get("ASERVE_H11_PUBLIC_ONLY", "") not in ("", "0") else _private_h11()
)
#: Whether h11's private names are used (the fast path); else only its public API.
PRIVATE_H11: Final = _H11Headers is not None

# -- grammar --------------------------------------------------------------------

# RFC 9110 5.6.2 token; 5.6.4 quoted-string (qdtext / quoted-pair, obs-text allowed).
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# A parameter's value (RFC 9110 5.6.6), as in chunk extensions and transfer-codings.
_VALUE = rb"(?:" + _TOKEN + rb"|" + _QUOTED + rb")"

# A request head, matched in place before h11 parses it. Every line: no control
# character but HTAB (RFC 9110 5.5), CRLF at its end and nowhere else (RFC 9112
# 2.2: no bare CR, no bare LF), no whitespace first (RFC 9112 5.2: obs-fold; 2.2:
# whitespace before the first field line). Group 1 is the empty line ending the
# head: when it took part, the head is complete and clean; when not, the match
# stops at the first line that is unfinished or faulty.
_STRICT_HEAD: Final = re.compile(rb"(?:[\x21-\x7e\x80-\xff][\t\x20-\x7e\x80-\xff]*+\r\n)*+(\r\n)?")
# lenient_framing: bare LF ends a line and obs-fold continues one, as h11 reads
# them; control characters and bare CR are refused all the same.
_LENIENT_HEAD: Final = re.compile(rb"(?:[\t\x20-\x7e\x80-\xff]++\r?\n)*+(\r?\n)?")
_STRICT_LINE: Final = re.compile(rb"[\x21-\x7e\x80-\xff][\t\x20-\x7e\x80-\xff]*+\r\n")
_LENIENT_LINE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]++\r?\n")
_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 9112 3: request-line = method SP request-target SP HTTP-version
_VERSION_END: Final = re.compile(rb" HTTP/[0-9]\.[0-9]\r?\n")

# RFC 9112 7.1 and 7.1.1: chunk-size [ chunk-ext ] CRLF, where chunk-ext is
# *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ) and a value is
# a token or a quoted-string. Nothing else, no whitespace elsewhere.
_CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*" + _VALUE + rb")?)*\r\n"
)
_HEX: Final = re.compile(rb"[0-9A-Fa-f]+")

# RFC 9112 3.2, RFC 9110 7.2: Host = uri-host [ ":" port ] (RFC 3986 3.2.2): a
# reg-name (unreserved, pct-encoded, sub-delims; possibly empty) or an IP literal
# in brackets. No userinfo, path, whitespace or second value.
_HOST: Final = re.compile(
    rb"(?:(?:[-A-Za-z0-9._~!$&'()*+,;=]++|%[0-9A-Fa-f]{2})*+"
    rb"|\[([0-9A-Fa-f:.]+)\]|\[v[0-9A-Fa-f]+\.[-A-Za-z0-9._~!$&'()*+,;=:]+\])(?::[0-9]*+)?"
)
# RFC 9112 3.2.2: absolute-form, a URI scheme (RFC 3986 3.1) and an authority;
# without "//", "host:port" would pass for one (authority-form, CONNECT only).
_ABSOLUTE_FORM: Final = re.compile(rb"[A-Za-z][-+.0-9A-Za-z]*://")

# RFC 9112 7 / 6.1: transfer-coding = token *( OWS ";" OWS transfer-parameter ),
# transfer-parameter = token BWS "=" BWS ( token / quoted-string ), in a
# comma-separated list whose empty elements are ignored (RFC 9110 5.6.1).
_CODING_ITEM: Final = re.compile(
    rb"[ \t]*(?:("
    + _TOKEN
    + rb")((?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"[ \t]*=[ \t]*"
    + _VALUE
    + rb")*))?[ \t]*(,|\Z)"
)
# Only read when h11 refused a Transfer-Encoding, from the head it refused.
_TE_LINE: Final = re.compile(rb"^(transfer-encoding:)[ \t]*(.*?)[ \t]*(\r?)$", re.I | re.M)
_CL_LINE: Final = re.compile(rb"^content-length:", re.I | re.M)
_FOLD: Final = re.compile(rb"\r?\n[ \t]+")

#: Empty lines ignored before a request line (RFC 9112 2.2 asks for one at least).
MAX_EMPTY_LINES: Final = 4
#: Longest chunk-size line, extensions included.
MAX_CHUNK_LINE: Final = 4096
#: A chunk size with more hex digits is absurd (16 already reach 2**64).
MAX_CHUNK_DIGITS: Final = 16
_BODY_LIMIT: Final = 2**63 - 1

# Where a chunked request body is, as its bytes arrive (`_follow_chunks`).
_OFF, _SIZE_LINE, _DATA, _DATA_END, _TRAILER = range(5)


@dataclass(frozen=True, slots=True)
class RequestError:
    """The request cannot be served: answer `status` with `reason`, then close."""

    status: int
    reason: str


_Next = h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED] | RequestError
_Bytes = TypeVar("_Bytes", bytes, bytearray)


class HTTPConnection:
    """One server-side HTTP/1.1 connection over h11, as a sans-IO object.

    After a `h11.Request` event the attributes `content_length`, `chunked`,
    `is_head`, `keep_alive_10` and `header_pairs` describe that request.
    `lenient_framing` accepts obs-fold and bare LF line ends in request heads
    and trailers (RFC 9112 5.2, 2.2), which are refused by default.
    """

    __slots__ = (
        "_h11",
        "_max_head_size",
        "_max_url_size",
        "_max_body_size",
        "_lenient",
        "_head_re",
        "_line_re",
        "_at_head",
        "_scan_from",
        "_searched",
        "_empty_lines",
        "_error",
        "_host_ok",
        "_framing",
        "_left",
        "_line",
        "_body_room",
        "_trailer_size",
        "content_length",
        "chunked",
        "is_head",
        "keep_alive_10",
        "header_pairs",
        "_pool",
    )

    def __init__(
        self,
        *,
        max_head_size: int,
        max_url_size: int,
        max_body_size: int | None,
        lenient_framing: bool = False,
    ) -> None:
        # h11's state machine while a request is under way; None while the
        # connection waits for one with nothing received (see `_park`).
        self._h11: h11.Connection | None = None
        self._max_head_size = max_head_size
        # Where this connection's h11 connection waits while it is idle.
        self._pool = _PARKED.setdefault(max_head_size, [])
        self._max_url_size = max_url_size
        self._max_body_size = max_body_size
        self._lenient = lenient_framing
        self._head_re = _LENIENT_HEAD if lenient_framing else _STRICT_HEAD
        self._line_re = _LENIENT_LINE if lenient_framing else _STRICT_LINE
        # Waiting for a request head (h11's client state is IDLE).
        self._at_head = True
        # An unfinished head: its clean complete lines end at _scan_from, and
        # no LF came before _searched (neither is scanned twice).
        self._scan_from = 0
        self._searched = 0
        self._empty_lines = 0
        # Once refused, always refused: h11 is never asked to go on.
        self._error: RequestError | None = None
        # The last Host value found valid: a keep-alive client repeats it.
        self._host_ok: bytes | bytearray = b""
        self._framing = _OFF
        self._left = 0
        self._line: bytearray | None = None
        self._body_room = 0  # what the chunk sizes to come may add up to
        self._trailer_size = 0
        self.content_length: int | None = None
        self.chunked = False
        self.is_head = False
        self.keep_alive_10 = False
        self.header_pairs: Sequence[tuple[bytes, bytes]] = ()

    # -- bytes in ---------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Feed bytes from the socket; `b""` means the client closed its side."""
        h = self._h11 or self._unpark()
        if self._framing and data:
            walked = self._follow_chunks(data)
            if walked:  # else held back (an unfinished framing line) or refused
                h.receive_data(walked)
            return
        h.receive_data(data)

    def next_event(self) -> _Next:
        if self._error is not None:
            return self._error
        if self._at_head:
            return self._next_head()
        h = self._h11 or self._unpark()
        if self.keep_alive_10 and h.their_state is h11.MUST_CLOSE:
            # An HTTP/1.0 keep-alive request is complete; h11 would call the next
            # one an error, but it waits for start_next_cycle() like any other.
            return PAUSED
        try:
            return h.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 501:
                # Only a trailer field makes h11 say so after the head: framing
                # fields have no place there (RFC 9110 6.5.1).
                return self._refuse(400, "Transfer-Encoding in trailer section")
            return self._refuse(exc.error_status_hint, _reason_text(str(exc)))

    def end_bodiless(self) -> None:
        """Take the EndOfMessage of the request just read, which has no body
        (no Content-Length or 0, not chunked). h11 reads nothing for it: its
        reader for a zero length returns the event at once, and its state
        machine moves the client to DONE. On a kept-alive connection with no
        upgrade on offer, that move is made here (`_BODILESS`, held to h11's
        by the probe at the end of this module); else h11 makes it."""
        if not (_BODILESS and self._end_here()):
            self.next_event()

    def _end_here(self) -> bool:
        h = self._h11
        if h is None:
            return False
        cstate = h._cstate
        states = cstate.states
        reader = h._reader
        if (
            states[_CLIENT] is not _SEND_BODY
            or not cstate.keep_alive
            or cstate.pending_switch_proposals
            or type(reader) is not _ZERO_READER
            or reader._remaining != 0  # type: ignore[union-attr]
        ):
            return False
        states[_CLIENT] = _DONE
        h._reader = _DONE_READER
        h.client_is_waiting_for_100_continue = False
        return True

    def _next_head(self) -> _Next:
        h = self._h11
        if h is None:
            return NEED_DATA  # parked: nothing received since the last request
        buf = h._receive_buffer._data if PRIVATE_H11 else h.trailing_data[0]
        head: bytes | bytearray = b""
        if buf and buf[0] < 0x21:
            early = self._before_request_line(buf)
            if early is not None:
                return early
            buf = self._unparsed()
        if buf:
            if self._searched and buf.find(b"\n", self._searched) < 0:
                # No new line since the last look: nothing more to check yet.
                self._searched = len(buf)
            else:
                match = self._head_re.match(buf, self._scan_from)
                assert match is not None  # the pattern matches the empty string
                end = match.end()
                if match.lastindex:
                    if end > self._max_head_size:
                        return self._refuse(*self._too_large(buf))
                    # Kept only for a Transfer-Encoding that h11 refuses.
                    head = buf[:end]
                else:
                    newline = buf.find(b"\n", end)
                    if newline >= 0:
                        return self._refuse(400, self._head_fault(buf, end, newline))
                    if end and not self._scan_from:
                        # The request line is in, the head is not: h11 reads the
                        # line only with the whole head, which a line without a
                        # version (HTTP/0.9) never sends (RFC 9112 3).
                        line_end = buf.find(b"\n")
                        version = _VERSION_END.search(buf, max(0, line_end - 10), line_end + 1)
                        if version is None:
                            return self._refuse(400, "Invalid request line")
                    self._scan_from = end
                    self._searched = len(buf)
        try:
            event = (self._h11 or self._unpark()).next_event()
        except h11.RemoteProtocolError as exc:
            return self._head_refused(exc, head)
        if type(event) is h11.Request:
            return self._inspect(event, head)
        return event

    def _before_request_line(
        self, buf: bytes | bytearray
    ) -> type[h11.NEED_DATA] | RequestError | None:
        # RFC 9112 2.2: a server SHOULD ignore at least one empty line (CRLF)
        # received before the request line; a few, not an endless stream.
        skip = 0
        size = len(buf)
        while skip < size:
            byte = buf[skip]
            if byte == 10:
                skip += 1
            elif byte == 13 and skip + 1 < size and buf[skip + 1] == 10:
                skip += 2
            else:
                break
            self._empty_lines += 1
            if self._empty_lines > MAX_EMPTY_LINES:
                return self._refuse(400, "Too many empty lines before the request line")
        lone_cr = skip == size - 1 and buf[skip] == 13
        if skip:
            self._drop(skip)
        if lone_cr and not self._live().trailing_data[1]:
            return NEED_DATA  # a CR whose LF is still on its way
        return None

    def _head_fault(self, buf: bytes | bytearray, start: int, newline: int) -> str:
        line = bytes(buf[start : newline + 1])
        if line[:1] in (b" ", b"\t"):
            if start == 0:
                return "Whitespace before the request line"
            if start == buf.find(b"\n") + 1:
                # RFC 9112 2.2: whitespace between the start-line and the first field.
                return "Whitespace before the first header field"
        return _line_fault(line, "request head", self._lenient)

    def _too_large(self, buf: bytes | bytearray) -> tuple[int, str]:
        # 414 when the target is what is too long (RFC 9112 3), else 431 (RFC 6585 5).
        line_end = buf.find(b"\n")
        line = bytes(buf[: line_end if line_end >= 0 else len(buf)])
        start = line.find(b" ") + 1
        if start:
            stop = line.find(b" ", start)
            if (stop if stop >= 0 else len(line)) - start > self._max_url_size:
                return 414, "Request target too long"
        return 431, "Request head too large"

    def _head_refused(self, exc: h11.RemoteProtocolError, head: bytes | bytearray) -> _Next:
        status = exc.error_status_hint
        if status == 431:
            return self._refuse(*self._too_large(self._unparsed()))
        if status == 501 and head:
            return self._transfer_coding_refused(bytes(head))
        return self._refuse(400, _reason_text(str(exc)))

    def _transfer_coding_refused(self, head: bytes) -> _Next:
        # h11 takes exactly "chunked" and refuses (501) anything else; RFC 9112
        # says which of those deserve a 400, which a 501, and which are chunked.
        if self._lenient:
            head = _FOLD.sub(b" ", head)
        values = [m.group(2) for m in _TE_LINE.finditer(head)]
        if not values or [v.lower() for v in values] == [b"chunked"]:
            return self._refuse(501, "Transfer-Encoding not supported")
        refusal = _coding_refusal(values, _CL_LINE.search(head) is not None)
        if refusal is not None:
            return self._refuse(*refusal)
        # Plain chunked written with empty list elements (", chunked"): let h11
        # read the head again with the value it understands.
        head = _TE_LINE.sub(rb"\1 chunked\3", head)
        rest, closed = self._live().trailing_data
        self._rebuild(head + rest, closed)
        return self._next_head()

    def _inspect(self, event: h11.Request, head: bytes | bytearray) -> h11.Request | RequestError:
        self._at_head = False
        method = event.method
        # Set first: an error answer to HEAD has no body either.
        self.is_head = method == b"HEAD"
        version = event.http_version
        if version != b"1.1" and version != b"1.0":
            return self._refuse(505, _version_refusal(event))
        if method == b"CONNECT":
            # RFC 9110 9.3.6: a tunnel, which nothing here can carry; h11 would
            # switch protocols on any 2xx answer.
            return self._refuse(501, "CONNECT is not supported")
        target = event.target
        if target[0] != 0x2F:  # not origin-form
            refusal = _target_refusal(method, target)
            if refusal is not None:
                return self._refuse(400, refusal)
        content_length = None
        chunked = False
        keep_alive_10 = False
        http_10 = version == b"1.0"
        host = None
        pairs = []
        for _, name, value in (
            event.headers._full_items
            if PRIVATE_H11
            else [(name, name, value) for name, value in event.headers]
        ):
            pairs.append((name, value))
            if name == b"content-length":
                content_length = int(value)  # h11 checked it is all digits
            elif name == b"transfer-encoding":
                chunked = True  # h11 let through exactly "chunked", once
            elif name == b"host":
                host = value  # h11 refused a second one
            elif http_10 and name == b"connection":
                keep_alive_10 = b"keep-alive" in [t.strip() for t in value.lower().split(b",")]
        # The (lowercase name, value) pairs a Request exposes, built in the pass
        # that is made anyway: h11's Headers is a Sequence whose iteration runs
        # Python code per item.
        self.header_pairs = pairs
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive_10 = keep_alive_10
        if host is not None and host != self._host_ok:
            if not _valid_host(host):
                return self._refuse(400, "Malformed Host header")  # RFC 9112 3.2
            self._host_ok = host
        if chunked:
            if content_length is not None:
                # RFC 9112 6.1: a request with both is a smuggling attempt or a broken
                # proxy; refusing it is the only answer that cannot be mis-framed.
                return self._refuse(400, "Content-Length and Transfer-Encoding together")
            if http_10:
                # RFC 9112 6.1: HTTP/1.0 has no Transfer-Encoding; its framing is faulty.
                return self._refuse(400, "Transfer-Encoding in an HTTP/1.0 request")
        if len(target) > self._max_url_size:
            return self._refuse(414, "Request target too long")
        limit = self._max_body_size
        if limit is not None and content_length is not None and content_length > limit:
            return self._refuse(413, f"Request body larger than {limit} bytes")
        if chunked:
            self._start_chunks(head)
            if self._error is not None:
                return self._error
        return event

    # -- chunked request bodies -------------------------------------------
    #
    # From the head on, every byte of a chunked body reaches h11 through
    # `_follow_chunks`, which walks its framing first: a chunk-size line is
    # checked (and a chunk over the body limit refused) before h11 reads it or
    # any of its data arrives. An unfinished framing line is held back until
    # its LF comes, so h11 only ever sees lines that were checked; one that is
    # valid but beyond what h11 reads (whitespace before ";") is passed on
    # without its extensions, which h11 drops anyway.

    def _start_chunks(self, head: bytes | bytearray) -> None:
        self._framing = _SIZE_LINE
        limit = self._max_body_size
        self._body_room = _BODY_LIMIT if limit is None else limit
        if PRIVATE_H11:
            buf = self._live()._receive_buffer._data
            if buf:
                walked = self._follow_chunks(buf)
                if walked is not buf:
                    buf[:] = walked
            return
        rest, closed = self._live().trailing_data
        if rest:
            walked = self._follow_chunks(rest)
            if walked is not rest and self._error is None:
                # h11's buffer cannot be edited through its public API: read
                # the same head again on a fresh connection, then the walked bytes.
                h = self._rebuild(bytes(head), False)
                h.next_event()
                if walked:
                    h.receive_data(walked)
                if closed:
                    h.receive_data(b"")

    def _follow_chunks(self, data: _Bytes) -> _Bytes | bytes:
        """Walk the framing of a chunked body through `data` (bytes that follow
        those already walked); return what h11 may have of them: `data` itself,
        or a copy without an unfinished line or with a line made readable."""
        if self._error is not None:
            self._framing = _OFF
            return b""
        state = self._framing
        left = self._left
        size = len(data)
        i = 0
        keep = 0  # data[keep:i] goes to h11 as it is
        out: list[bytes | bytearray] | None = None
        while i < size:
            if state == _DATA:
                if size - i < left:
                    left -= size - i
                    break
                i += left
                state = _DATA_END
                left = 2
            if state == _DATA_END:
                # RFC 9112 7.1: chunk-data CRLF; anything else means the data
                # was longer than its size said.
                if left == 2 and size - i >= 2:
                    if data[i] != 13 or data[i + 1] != 10:
                        return self._chunk_fault(400, "Chunk data does not end with CRLF")
                    i += 2
                else:
                    while left and i < size:
                        if data[i] != (13 if left == 2 else 10):
                            return self._chunk_fault(400, "Chunk data does not end with CRLF")
                        i += 1
                        left -= 1
                    if left:
                        break
                state = _SIZE_LINE
                if i == size:
                    break
            # A framing line: a chunk-size line or a field line of the trailer section.
            newline = data.find(b"\n", i)
            partial = self._line
            if newline < 0:
                if out is None:
                    out = []
                out.append(data[keep:i])
                keep = size
                if partial is None:
                    partial = self._line = bytearray(data[i:])
                else:
                    partial += data[i:]
                if state == _SIZE_LINE:
                    if len(partial) > MAX_CHUNK_LINE:
                        return self._chunk_fault(400, "Chunk extension too long")
                elif self._trailer_size + len(partial) > self._max_head_size:
                    return self._chunk_fault(431, "Request trailer section too large")
                break
            start = i
            i = newline + 1
            line: bytes | bytearray
            if partial is None:
                line = data[start:i]
            else:
                partial += data[start:i]
                line = partial
                self._line = None
            if state == _SIZE_LINE:
                match = _CHUNK_LINE.fullmatch(line)
                if match is None or len(line) > MAX_CHUNK_LINE:
                    return self._chunk_line_refused(line)
                digits = match.end(1)
                if digits > MAX_CHUNK_DIGITS:
                    return self._chunk_fault(400, "Chunk size has too many digits")
                chunk = int(line[:digits], 16)
                if chunk > self._body_room:
                    return self._chunk_too_large(chunk)
                self._body_room -= chunk
                readable = None
                if line[digits] == 32 or line[digits] == 9:
                    # BWS before ";" (RFC 9112 7.1.1), which h11 does not read:
                    # it gets the size alone (it drops extensions anyway).
                    readable = bytes(line[:digits]) + b"\r\n"
                if chunk:
                    state = _DATA
                    left = chunk
                else:
                    state = _TRAILER
                    self._trailer_size = 0
            elif line == b"\r\n" or (self._lenient and line == b"\n"):
                state = _OFF  # the end of the trailer section, and of the body
                readable = None
            else:
                self._trailer_size += len(line)
                if self._trailer_size > self._max_head_size:
                    return self._chunk_fault(431, "Request trailer section too large")
                if self._line_re.fullmatch(line) is None:
                    fault = _line_fault(bytes(line), "trailer section", self._lenient)
                    return self._chunk_fault(400, fault)
                readable = None
            if partial is not None or readable is not None:
                if out is None:
                    out = []
                if partial is None:
                    out.append(data[keep:start])
                out.append(line if readable is None else readable)
                keep = i
            if state == _OFF:
                break
        self._framing = state
        self._left = left
        if out is None:
            return data
        out.append(data[keep:])
        return b"".join(out)

    def _chunk_line_refused(self, line: bytes | bytearray) -> bytes:
        if len(line) > MAX_CHUNK_LINE:
            return self._chunk_fault(400, "Chunk extension too long")
        return self._chunk_fault(400, _chunk_line_fault(bytes(line)))

    def _chunk_too_large(self, chunk: int) -> bytes:
        if chunk > _BODY_LIMIT:
            # Past 2**63 a size wraps negative in many parsers: a smuggling shape.
            return self._chunk_fault(400, "Chunk size out of range")
        limit = self._max_body_size
        if limit is None:
            return self._chunk_fault(413, "Request body too large")
        # Refused on the size line, before any of the chunk's data.
        return self._chunk_fault(413, f"Request body larger than {limit} bytes")

    def _chunk_fault(self, status: int, reason: str) -> bytes:
        self._framing = _OFF
        self._line = None
        self._refuse(status, reason)
        return b""

    # -- h11's buffer, privately or publicly -----------------------------

    def _unparsed(self) -> bytes | bytearray:
        """The bytes h11 holds and has not parsed: its own buffer when allowed
        to look (never to keep), else a copy."""
        if PRIVATE_H11:
            return self._live()._receive_buffer._data
        return self._live().trailing_data[0]

    def _drop(self, count: int) -> None:
        """Remove `count` bytes from the front of h11's buffer (only while it
        waits for a request head, where nothing else depends on them)."""
        self._scan_from = self._searched = 0
        if PRIVATE_H11:
            self._live()._receive_buffer._extract(count)
        else:
            data, closed = self._live().trailing_data
            self._rebuild(data[count:], closed)

    def _rebuild(self, data: bytes, closed: bool) -> h11.Connection:
        # Only where a fresh connection fed `data` is the state machine wanted:
        # between requests (both sides IDLE), or to read a head once more.
        h = self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head_size)
        if data:
            h.receive_data(data)
        if closed:
            h.receive_data(b"")
        self._scan_from = self._searched = 0
        return h

    # -- parking ----------------------------------------------------------
    #
    # An idle keep-alive connection needs none of h11's state: between two
    # requests, with nothing received, h11's connection is the same as a new
    # one (the probe at the end of this module checks it, attribute by
    # attribute, and parking is off if it is not so). So at the end of a
    # request cycle with nothing buffered, the h11 connection goes back to a
    # small shared pool, and the next bytes take one from it (or make one).
    # Idle connections then hold none of h11's objects (about 800 bytes
    # each), and a request costs a list append and pop instead.

    def _live(self) -> h11.Connection:
        # The per-request paths write this inline, a call fewer each.
        return self._h11 or self._unpark()

    def _unpark(self) -> h11.Connection:
        try:
            h = self._pool.pop()
        except IndexError:
            h = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head_size)
        self._h11 = h
        return h

    def _park(self, h: h11.Connection) -> None:
        """After `h.start_next_cycle()` with nothing buffered or closed: give `h` back."""
        # All that start_next_cycle leaves of the last request (the probe
        # checks that nothing else is left).
        h.their_http_version = None
        pool = self._pool
        if len(pool) < PARKED_MAX:
            pool.append(h)
        self._h11 = None

    def _refuse(self, status: int, reason: str) -> RequestError:
        error = self._error = RequestError(status, reason)
        return error

    # -- state ------------------------------------------------------------

    @property
    def request_complete(self) -> bool:
        """The client has sent the whole current request (body included)."""
        state = (self._h11 or self._unpark()).their_state
        return (
            state is h11.DONE
            or state is h11.MUST_CLOSE
            or state is h11.CLOSED
            # A request that offered an upgrade (answered in plain HTTP, h11
            # moves it on to DONE): last, so that others pay nothing for it.
            or state is h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]
        )

    @property
    def can_answer(self) -> bool:
        """A response (an error answer, say) may still be sent on this connection."""
        state = (self._h11 or self._unpark()).our_state
        return state is h11.IDLE or state is h11.SEND_RESPONSE

    @property
    def waiting_for_continue(self) -> bool:
        return (self._h11 or self._unpark()).they_are_waiting_for_100_continue

    @property
    def keep_alive(self) -> bool:
        """Another request may follow on this connection once this one is done."""
        h = self._h11 or self._unpark()
        return (
            h.our_state is h11.DONE
            and h.their_state is h11.DONE
            or (self.keep_alive_10 and h.our_state is h11.MUST_CLOSE and self.request_complete)
        )

    def start_next_cycle(self) -> None:
        """Reset for the next request; only after `keep_alive` said yes."""
        h = self._h11 or self._unpark()
        if self.keep_alive_10:
            # h11 never keeps an HTTP/1.0 connection alive; a fresh state machine
            # picks up the bytes already received.
            data, closed = h.trailing_data
            self._rebuild(data, closed)
            self.keep_alive_10 = False
        else:
            h.start_next_cycle()
            if _PARK and not h._receive_buffer._data and not h._receive_buffer_closed:
                self._park(h)
        # Nothing of the last request may shape what follows: an error answer
        # to a head that cannot be read has its body even after a HEAD.
        self.header_pairs = ()
        self.is_head = False
        self._at_head = True
        self._scan_from = self._searched = self._empty_lines = 0
        self._framing = _OFF

    @property
    def response_done(self) -> bool:
        """The whole response went out and the connection may carry another."""
        return (self._h11 or self._unpark()).our_state is h11.DONE

    @property
    def receiving_body(self) -> bool:
        """The client is (legitimately) still sending the current request body."""
        return (self._h11 or self._unpark()).their_state is h11.SEND_BODY

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events (pipelined requests)."""
        # h11 exposes the buffer only as a copy (trailing_data); its length is
        # asked after every request, so read it directly when allowed.
        h = self._h11
        if h is None:
            return 0
        if PRIVATE_H11:
            return len(h._receive_buffer._data)
        return len(h.trailing_data[0])

    @property
    def switch_offered(self) -> bool:
        """The whole request is in and it asked to switch protocols (an
        `Upgrade` header): h11 holds the connection until we answer. Asked
        only by a handler that would switch (a WebSocket), never per request."""
        # A public state of h11's that its __all__ leaves out.
        return self._live().their_state is h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]

    def switch_protocols(self, headers: HeaderTriples) -> tuple[bytes, bytes] | None:
        """`101 Switching Protocols` with `headers`, and the bytes received
        after the request (the start of the new protocol); h11 then leaves the
        connection. None when no switch is on offer or a response has begun."""
        h = self._live()
        if not self.switch_offered or h.our_state is not h11.SEND_RESPONSE:
            return None
        head = h.send(
            h11.InformationalResponse(
                status_code=101,
                headers=[(raw, value) for raw, _, value in headers],
                reason=b"Switching Protocols",
            )
        )
        return head or b"", h.trailing_data[0]

    # -- bytes out --------------------------------------------------------

    def send_continue(self) -> bytes:
        """`100 Continue`, or nothing when the client is not waiting for it."""
        h = self._live()
        if not h.they_are_waiting_for_100_continue:
            return b""
        return h.send(_CONTINUE)

    def send_full(
        self, status: int, headers: HeaderTriples, body: bytes, *, close: bool = False
    ) -> bytes:
        """Head, body and end of a response whose body is in hand, as one bytes."""
        if _WHOLE and not close:
            whole = self._send_whole(status, headers, body)
            if whole is not None:
                return whole
        return self._send_parts(status, headers, body, close)

    def _send_whole(self, status: int, headers: HeaderTriples, body: bytes) -> bytes | None:
        """The common response written here, or None when it is not the common
        case. The common case: the whole request is in (h11's client state is
        DONE, no upgrade on offer), keep-alive holds (HTTP/1.1, no "close" on
        either side), not HEAD, a status with a body, one Content-Length equal
        to the body's length, no Transfer-Encoding, Connection or Host among
        the headers (h11 writes a Host first). h11 would write exactly these
        bytes and end with its server state DONE, its writer None and no
        100-continue pending (the import-time probe holds it to that)."""
        h = self._h11 or self._unpark()
        cstate = h._cstate
        states = cstate.states
        if (
            states[_SERVER] is not _SEND_RESPONSE
            or states[_CLIENT] is not _DONE
            or not cstate.keep_alive
            or self.is_head
            or status < 200
            or status == 204
            or status == 304
            or status > 999
        ):
            return None
        out = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b""))]
        length = None
        for raw, name, value in headers:
            if name == b"content-length":
                if length is not None:
                    return None
                length = value
            elif name in _NOT_WHOLE:
                return None
            out.append(b"%s: %s\r\n" % (raw, value))
        if length != b"%d" % len(body):
            return None
        out.append(b"\r\n")
        out.append(body)
        states[_SERVER] = _DONE
        h._writer = None
        h.client_is_waiting_for_100_continue = False
        return b"".join(out)

    def _send_parts(self, status: int, headers: HeaderTriples, body: bytes, close: bool) -> bytes:
        """A whole response through h11's `send()`: head, data, end."""
        out = self._send_head(status, headers, close)
        if body and not self.is_head:
            out += self._emit(h11.Data(data=body))
        out += self._emit(_END)
        return b"".join(out)

    def send_head(self, status: int, headers: HeaderTriples, *, close: bool = False) -> bytes:
        return b"".join(self._send_head(status, headers, close))

    def send_data(self, data: bytes) -> bytes:
        if self.is_head or not data:
            return b""
        return b"".join(self._emit(h11.Data(data=data)))

    def send_data_pieces(self, data: Any) -> list[Any]:
        """Framing bytes around `data`, which is passed through untouched (a
        FileSegment to sendfile, say); empty for a HEAD response."""
        if self.is_head or not len(data):
            return []
        return self._emit(h11.Data(data=data))

    def send_end(self) -> bytes:
        return (self._h11 or self._unpark()).send(_END)

    def _send_head(self, status: int, headers: HeaderTriples, close: bool) -> list[bytes]:
        keep_alive_10 = self.keep_alive_10
        if close:
            headers.append(_CLOSE_HEADER)
            self.keep_alive_10 = False
        elif keep_alive_10 and not _length_known_and_open(headers):
            # An HTTP/1.0 body of unknown length ends when the connection does;
            # and a handler's own "Connection: close" wins.
            self.keep_alive_10 = keep_alive_10 = False
        if PRIVATE_H11:
            response = h11.Response(
                status_code=status,
                headers=_H11Headers(headers),
                reason=REASONS.get(status, b""),
                _parsed=True,
            )
        else:
            response = h11.Response(
                status_code=status,
                headers=[(raw, value) for raw, _, value in headers],
                reason=REASONS.get(status, b""),
            )
        out = self._emit(response)
        if keep_alive_10:
            # h11 writes "Connection: close" to every HTTP/1.0 peer; this one asked
            # for keep-alive and the body has a length, so say keep-alive instead.
            out = [
                b"".join(out).replace(
                    b"\r\nConnection: close\r\n", b"\r\nConnection: keep-alive\r\n", 1
                )
            ]
        return out

    def _emit(self, event: h11.Event) -> list[bytes]:
        # Returns None only for ConnectionClosed, which is never sent here.
        return (self._h11 or self._unpark()).send_with_data_passthrough(event) or []

    def send_error(
        self, status: int, reason: str, extra_headers: HeaderTriples | None = None
    ) -> bytes:
        """A plain-text error answer that closes the connection, if one can still be sent."""
        if not self.can_answer:
            return b""
        self.keep_alive_10 = False
        body = reason.encode("utf-8", "replace") + b"\n"
        headers: HeaderTriples = [
            (b"content-type", b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"content-length", b"%d" % len(body)),
        ]
        if extra_headers:
            headers += extra_headers
        try:
            return self.send_full(status, headers, body, close=True)
        except h11.LocalProtocolError:
            return b""


# h11's states, as the fast path compares them.
_CLIENT: Final = h11.CLIENT
_SERVER: Final = h11.SERVER
_DONE: Final = h11.DONE
_SEND_RESPONSE: Final = h11.SEND_RESPONSE
_SEND_BODY: Final = h11.SEND_BODY
# Headers that take a response off the common case (`_send_whole`).
_NOT_WHOLE: Final = frozenset({b"transfer-encoding", b"connection", b"host"})
_WHOLE = False  # until the probe at the end of this module has run
#: h11 connections of idle keep-alive connections, by max_incomplete_event_size.
_PARKED: dict[int, list[h11.Connection]] = {}
#: At most this many wait in each pool; beyond, they are freed.
PARKED_MAX: Final = 256
_PARK = False  # until the probe at the end of this module has run
_BODILESS = False  # until the probe at the end of this module has run
# h11's reader of a request body of known length, and its reader once the
# request is done, as the probe finds them.
_ZERO_READER: Any = None
_DONE_READER: Any = None


def _valid_host(host: bytes | bytearray) -> bool:
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    literal = match.group(1)
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except ValueError:
            return False
    return True


def _version_refusal(event: h11.Request) -> str:
    # RFC 9110 15.6.6 (and 2.5, which would also allow serving HTTP/1.2 as 1.1:
    # refused all the same, as any version this server does not speak).
    version = bytes(event.http_version)
    if version[:1] == b"2":
        # RFC 9113 3.4: "PRI * HTTP/2.0" opens a client's HTTP/2 connection preface.
        return "HTTP/2 is not supported; use HTTP/1.1"
    return f"HTTP/{version.decode('ascii')} is not supported; use HTTP/1.1"


def _target_refusal(method: bytes, target: bytes) -> str | None:
    if target == b"*":
        # RFC 9112 3.2.4: asterisk-form is only for a server-wide OPTIONS.
        return None if method == b"OPTIONS" else "Asterisk target is only for OPTIONS"
    if _ABSOLUTE_FORM.match(target):
        return None  # RFC 9112 3.2.2: a server MUST accept absolute-form
    return "Invalid request target"  # RFC 9112 3.2: none of the four forms


def _coding_refusal(values: list[bytes], has_length: bool) -> tuple[int, str] | None:
    """The answer to a Transfer-Encoding h11 refused, or None when it is plain chunked."""
    # RFC 9112 6.3 (4): chunked not final, or any invalid framing: 400, close.
    if len(values) > 1:
        return 400, "Transfer-Encoding repeated"
    if has_length:
        return 400, "Content-Length and Transfer-Encoding together"  # RFC 9112 6.1
    value = values[0]
    codings: list[tuple[bytes, bytes]] = []
    pos = 0
    while True:
        match = _CODING_ITEM.match(value, pos)
        if match is None:
            return 400, "Invalid Transfer-Encoding"
        if match.group(1):
            codings.append((match.group(1).lower(), match.group(2)))
        pos = match.end()
        if not match.group(3):
            break
    if not codings:
        return 400, "Empty Transfer-Encoding"
    name, parameters = codings[-1]
    if name != b"chunked":
        return 400, "Transfer-Encoding does not end with chunked"
    if parameters:
        return 400, "chunked takes no parameters"  # RFC 9112 7.1
    if any(other == b"chunked" for other, _ in codings[:-1]):
        return 400, "chunked applied more than once"  # RFC 9112 6.1
    if len(codings) > 1:
        # RFC 9112 6.1: a transfer coding the server does not understand: 501.
        names = ", ".join(other.decode("ascii") for other, _ in codings[:-1])
        return 501, f"Transfer-Encoding {names} not supported"
    return None


def _line_fault(line: bytes, where: str, lenient: bool) -> str:
    """Why a complete line (ending in LF) of a head or trailer section is refused."""
    content = line[:-1]
    if content.endswith(b"\r"):
        content = content[:-1]
    elif not lenient:
        return f"Bare LF in {where}"  # RFC 9112 2.2
    if b"\r" in content:
        return f"Bare CR in {where}"  # RFC 9112 2.2
    if _CONTROL.search(content):
        return f"Control character in {where}"  # RFC 9110 5.5
    if content[:1] in (b" ", b"\t"):
        return f"Obsolete line folding in {where}"  # RFC 9112 5.2
    return f"Malformed {where}"


def _chunk_line_fault(line: bytes) -> str:
    """Why a chunk-size line (ending in LF) is refused (RFC 9112 7.1, 7.1.1, 2.2)."""
    if not line.endswith(b"\r\n"):
        return "Bare LF in chunk size line"
    content = line[:-2]
    if b"\r" in content:
        return "Bare CR in chunk size line"
    if _CONTROL.search(content):
        return "Control character in chunk size line"
    digits = _HEX.match(content)
    if digits is None:
        return "Invalid chunk size"
    rest = content[digits.end() :]
    if not rest.strip(b" \t"):
        return "Whitespace after chunk size"
    if rest.lstrip(b" \t")[:1] != b";":
        return "Invalid chunk size"
    return "Invalid chunk extension"


def _length_known_and_open(headers: HeaderTriples) -> bool:
    has_length = False
    for _, name, value in headers:
        if name == b"content-length":
            has_length = True
        elif name == b"connection" and b"close" in value.lower():
            return False
    return has_length


def _reason_text(message: str) -> str:
    # h11's messages are short and safe to show ("illegal request line", ...);
    # keep the first line only and cap it.
    text = message.splitlines()[0] if message else "Bad request"
    return ("Bad request: " + text)[:200]


def _probe_connection() -> HTTPConnection:
    """A connection for the probes, with a pool of its own: what they park
    never reaches a server's connections."""
    conn = HTTPConnection(max_head_size=16384, max_url_size=8192, max_body_size=None)
    conn._pool = []
    return conn


def _snapshot(h: h11.Connection) -> dict[str, Any]:
    """What an h11 connection holds, comparable between two connections."""
    shot: dict[str, Any] = {}
    for name, value in vars(h).items():
        if name == "_cstate":
            state = vars(value).items()
            value = {k: v.copy() if isinstance(v, dict | set) else v for k, v in state}
        elif name == "_receive_buffer":
            value = bytes(value)
        elif hasattr(value, "__dict__") and not isinstance(value, type | FunctionType):
            # A body reader or writer: its class and what it counts.
            value = (type(value), dict(vars(value)))
        shot[name] = value
    return shot


def _probe_whole() -> bool:
    """Whether `_send_whole` leaves h11 exactly as its `send()` calls do: two
    request cycles each way, the bytes and the state compared after every step."""
    if not PRIVATE_H11:
        return False
    try:
        runs = []
        for whole in (False, True):
            conn = _probe_connection()
            steps: list[Any] = []
            for request in (
                b"GET /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
                b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
            ):
                conn.receive(request)
                while type(conn.next_event()) is not h11.EndOfMessage:
                    pass
                steps.append(_snapshot(conn._live()))
                headers: HeaderTriples = [
                    (b"Content-Type", b"content-type", b"text/plain"),
                    (b"content-length", b"content-length", b"5"),
                ]
                if whole:
                    out = conn._send_whole(404, headers, b"hello")
                else:
                    out = conn._send_parts(404, headers, b"hello", False)
                steps.append((out, _snapshot(conn._live()), conn.keep_alive, conn.response_done))
                conn.start_next_cycle()
                steps.append(_snapshot(conn._live()))
            runs.append(steps)
        return runs[0] == runs[1]
    except Exception:
        return False


_WHOLE = _probe_whole()
#: Whether whole responses skip h11's send() on the common case (see `_send_whole`).
WHOLE_FAST: Final = _WHOLE


def _probe_park() -> bool:
    """Whether an h11 connection at the end of a request cycle, as `_park`
    leaves it, is the same as a new one, attribute by attribute: after a GET,
    a HEAD, and a POST that asked for 100-continue."""
    if not PRIVATE_H11:
        return False
    try:
        fresh = _snapshot(h11.Connection(h11.SERVER, max_incomplete_event_size=16384))
        for request in (
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HEAD /a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /b HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
        ):
            conn = _probe_connection()
            conn.receive(request)
            while type(conn.next_event()) is not h11.EndOfMessage:
                pass
            headers: HeaderTriples = [(b"content-length", b"content-length", b"5")]
            conn._send_parts(200, headers, b"hello", False)
            h = conn._live()
            h.start_next_cycle()
            conn._park(h)
            if conn._h11 is not None or _snapshot(h) != fresh:
                return False
        return True
    except Exception:
        return False


_PARK = _probe_park()
#: Whether idle keep-alive connections give their h11 connection back (see `_park`).
PARK: Final = _PARK


def _probe_bodiless() -> bool:
    """Whether `end_bodiless` leaves h11 exactly as its own EndOfMessage does:
    for a GET, a HEAD, a DELETE with Content-Length: 0 and a GET with
    Expect: 100-continue, the state compared after the end of the request,
    after the response and after the next request's head."""
    global _ZERO_READER, _DONE_READER
    if not PRIVATE_H11:
        return False
    try:
        probe = h11.Connection(h11.SERVER)
        probe.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        probe.next_event()
        _ZERO_READER = type(probe._reader)
        probe.next_event()
        _DONE_READER = probe._reader
        for request in (
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HEAD /a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"DELETE /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        ):
            runs = []
            for fast in (False, True):
                conn = _probe_connection()
                conn.receive(request + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
                if type(conn.next_event()) is not h11.Request:
                    return False
                h = conn._live()
                if fast:
                    if not conn._end_here():
                        return False
                else:
                    event = h.next_event()
                    if type(event) is not h11.EndOfMessage:
                        return False
                steps: list[Any] = [_snapshot(h)]
                headers: HeaderTriples = [(b"content-length", b"content-length", b"2")]
                steps.append(conn._send_parts(200, headers, b"ok", False))
                steps.append(_snapshot(h))
                conn.start_next_cycle()
                steps.append(repr(conn.next_event()))
                steps.append(_snapshot(conn._live()))
                runs.append(steps)
            if runs[0] != runs[1]:
                return False
        return True
    except Exception:
        return False


_BODILESS = _probe_bodiless()
#: Whether the end of a request without a body skips h11's event (see `end_bodiless`).
BODILESS_FAST: Final = _BODILESS
