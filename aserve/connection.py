"""Sans-IO HTTP/1.1 for one server connection: everything h11 decides, no IO.

`HTTPConnection` wraps one `h11.Connection`. Bytes go in with `receive()`;
`next_event()` gives h11's events, or a `RequestError` when the request must be
refused (malformed, too large, a framing ambiguity), each with the status it
deserves. Responses go out as bytes from `send_full()`, `send_head()`,
`send_data()` and `send_end()`. The keep-alive, 100-continue and
"can this connection carry another request?" decisions live here too.

This module never imports asyncio: it is tested with tables of bytes.

Hot path notes (measured, see benchmarks/README.md):
- h11 validates every header of every `h11.Response` with regexes unless it is
  handed an already-built `h11._headers.Headers`; response headers are checked
  once where they are made (`aserve.headers.encode_header`), so here they are
  wrapped as a ready `Headers` and h11's second pass is skipped.
- One `EndOfMessage` instance serves every response (h11 events are immutable).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import h11
from h11._headers import Headers as _H11Headers

NEED_DATA: Final = h11.NEED_DATA
PAUSED: Final = h11.PAUSED

_END: Final = h11.EndOfMessage()
_CONTINUE: Final = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")

# Reason phrases are optional on the wire (RFC 9112 4) but clients and humans read them.
REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

HeaderTriples = list[tuple[bytes, bytes, bytes]]

_CLOSE_HEADER: Final = (b"connection", b"connection", b"close")
_KEEP_ALIVE_HEADER: Final = (b"connection", b"connection", b"keep-alive")


@dataclass(frozen=True, slots=True)
class RequestError:
    """The request cannot be served: answer `status` with `reason`, then close."""

    status: int
    reason: str


class HTTPConnection:
    """One server-side HTTP/1.1 connection over h11, as a sans-IO object.

    After a `h11.Request` event the attributes `content_length`, `chunked`,
    `is_head`, `keep_alive_10` and `header_pairs` describe that request.
    """

    __slots__ = (
        "_h11",
        "_max_head_size",
        "_max_url_size",
        "_max_body_size",
        "content_length",
        "chunked",
        "is_head",
        "keep_alive_10",
        "header_pairs",
    )

    def __init__(self, *, max_head_size: int, max_url_size: int, max_body_size: int | None) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size)
        self._max_head_size = max_head_size
        self._max_url_size = max_url_size
        self._max_body_size = max_body_size
        self.content_length: int | None = None
        self.chunked = False
        self.is_head = False
        self.keep_alive_10 = False
        self.header_pairs: list[tuple[bytes, bytes]] = []

    # -- bytes in ---------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Feed bytes from the socket; `b""` means the client closed its side."""
        self._h11.receive_data(data)

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED] | RequestError:
        if self.keep_alive_10 and self._h11.their_state is h11.MUST_CLOSE:
            # An HTTP/1.0 keep-alive request is complete; h11 would call the next
            # one an error, but it waits for start_next_cycle() like any other.
            return PAUSED
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            return self._refusal(exc)
        if type(event) is h11.Request:
            return self._inspect(event)
        return event

    def _inspect(self, event: h11.Request) -> h11.Request | RequestError:
        content_length = None
        chunked = False
        keep_alive_10 = False
        http_10 = event.http_version == b"1.0"
        # h11 only limits a head that is still incomplete; one that arrived whole
        # in a single read is measured here (request line + "name: value\r\n"s).
        head_size = len(event.method) + len(event.target) + 14
        pairs = []
        for _, name, value in event.headers._full_items:
            head_size += len(name) + len(value) + 4
            pairs.append((name, value))
            if name == b"content-length":
                content_length = int(value)  # h11 checked it is all digits
            elif name == b"transfer-encoding":
                chunked = True  # h11 refuses (501) anything but chunked
            elif http_10 and name == b"connection":
                keep_alive_10 = b"keep-alive" in [t.strip() for t in value.lower().split(b",")]
        # The (lowercase name, value) pairs a Request exposes, built in the pass
        # that is made anyway: h11's Headers is a Sequence whose iteration runs
        # Python code per item.
        self.header_pairs = pairs
        self.content_length = content_length
        self.chunked = chunked
        self.is_head = event.method == b"HEAD"
        self.keep_alive_10 = keep_alive_10
        if head_size > self._max_head_size:
            return RequestError(431, "Request head too large")
        if chunked and content_length is not None:
            # RFC 9112 6.1: a request with both is a smuggling attempt or a broken
            # proxy; refusing it is the only answer that cannot be mis-framed.
            return RequestError(400, "Content-Length and Transfer-Encoding together")
        if len(event.target) > self._max_url_size:
            return RequestError(414, "Request target too long")
        limit = self._max_body_size
        if limit is not None and content_length is not None and content_length > limit:
            return RequestError(413, f"Request body larger than {limit} bytes")
        return event

    def _refusal(self, exc: h11.RemoteProtocolError) -> RequestError:
        status = exc.error_status_hint
        if status == 431:
            buffered = self._h11.trailing_data[0]
            if b"\n" not in buffered[: self._max_url_size + 32]:
                return RequestError(414, "Request target too long")
            return RequestError(431, "Request head too large")
        if status == 501:
            return RequestError(501, "Transfer-Encoding not supported")
        return RequestError(400, _reason_text(str(exc)))

    # -- state ------------------------------------------------------------

    @property
    def request_complete(self) -> bool:
        """The client has sent the whole current request (body included)."""
        state = self._h11.their_state
        return state is h11.DONE or state is h11.MUST_CLOSE or state is h11.CLOSED

    @property
    def can_answer(self) -> bool:
        """A response (an error answer, say) may still be sent on this connection."""
        state = self._h11.our_state
        return state is h11.IDLE or state is h11.SEND_RESPONSE

    @property
    def waiting_for_continue(self) -> bool:
        return self._h11.they_are_waiting_for_100_continue

    @property
    def keep_alive(self) -> bool:
        """Another request may follow on this connection once this one is done."""
        return (
            self._h11.our_state is h11.DONE
            and self._h11.their_state is h11.DONE
            or (
                self.keep_alive_10
                and self._h11.our_state is h11.MUST_CLOSE
                and self.request_complete
            )
        )

    def start_next_cycle(self) -> None:
        """Reset for the next request; only after `keep_alive` said yes."""
        if self.keep_alive_10:
            # h11 never keeps an HTTP/1.0 connection alive; a fresh state machine
            # picks up the bytes already received.
            data, closed = self._h11.trailing_data
            self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head_size)
            if data:
                self._h11.receive_data(data)
            if closed:
                self._h11.receive_data(b"")
            self.keep_alive_10 = False
        else:
            self._h11.start_next_cycle()

    @property
    def response_done(self) -> bool:
        """The whole response went out and the connection may carry another."""
        return self._h11.our_state is h11.DONE

    @property
    def receiving_body(self) -> bool:
        """The client is (legitimately) still sending the current request body."""
        return self._h11.their_state is h11.SEND_BODY

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events (pipelined requests)."""
        # h11 exposes the buffer only as a copy (trailing_data); its length is
        # asked after every request, so read it directly.
        return len(self._h11._receive_buffer)

    # -- bytes out --------------------------------------------------------

    def send_continue(self) -> bytes:
        """`100 Continue`, or nothing when the client is not waiting for it."""
        if not self._h11.they_are_waiting_for_100_continue:
            return b""
        return self._h11.send(_CONTINUE)

    def send_full(
        self, status: int, headers: HeaderTriples, body: bytes, *, close: bool = False
    ) -> bytes:
        """Head, body and end of a response whose body is in hand, as one bytes."""
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
        return self._h11.send(_END)

    def _send_head(self, status: int, headers: HeaderTriples, close: bool) -> list[bytes]:
        keep_alive_10 = self.keep_alive_10
        if close:
            headers.append(_CLOSE_HEADER)
            self.keep_alive_10 = False
        elif keep_alive_10 and not _length_known_and_open(headers):
            # An HTTP/1.0 body of unknown length ends when the connection does;
            # and a handler's own "Connection: close" wins.
            self.keep_alive_10 = keep_alive_10 = False
        response = h11.Response(
            status_code=status,
            headers=_H11Headers(headers),
            reason=REASONS.get(status, b""),
            _parsed=True,
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
        return self._h11.send_with_data_passthrough(event) or []

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
