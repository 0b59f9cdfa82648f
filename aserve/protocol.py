"""HTTPProtocol: one per connection. Moves bytes, owns the timers, pauses reading.

Everything HTTP decides is in `connection.HTTPConnection` (sans-IO); this class
feeds it the socket's bytes, starts an `Exchange` task per request, writes what
the exchange produces, and keeps the connection's phase:

    IDLE    waiting for a request       deadline: keep_alive_timeout (quiet close)
    HEAD    part of a head has arrived  deadline: header_timeout (408, close)
    BUSY    an exchange is running      deadlines: handler_timeout until the
                                        response head (504, close); while the
                                        handler waits for body bytes,
                                        body_timeout instead (408, or a close
                                        once the response started)
    DISCARD response sent, unread body  deadline: body_timeout between pieces
            still arriving; dropped     (close)
    CLOSING an answer went out, the     deadline: LINGER_S (close)
            write side is shut; reading
            and dropping until EOF

In any phase, while the socket takes nothing of what we wrote (writing is
paused, or a closed transport still holds unsent bytes), send_timeout runs: it
is renewed whenever the write buffer shrank, and when it passes without
progress the connection is aborted. A download that keeps moving is never cut.

Timers: none per connection. A connection only sets `_deadline` (one float, the
earliest of its phase deadline `_until`, `_body_deadline` and `_send_deadline`);
the server's clock (`server.py`) sweeps the open connections a few times per
shortest timeout and calls `deadline_passed()` on the late ones. A TimerHandle
per connection cost about 600 bytes of an idle connection's memory and a
`call_at`/`cancel` pair per request; the sweep costs about 0.1 ms per thousand
connections, a few times a second.

When a deadline or bad framing ends an exchange whose response has not
started, the connection answers itself (408, 504, 400...) and detaches the
exchange (`Exchange.detach`): whatever the handler still does goes nowhere.

Reading pauses for two reasons, kept as bits so that one never undoes the
other: the request body stream is above its high-water mark, or a client has
pipelined more than `PIPELINE_LIMIT` bytes past the request being served.

Pipelining: requests a client sent ahead are answered in order, back to back.
When an exchange finishes and the next request is already in, its exchange
runs on in the same task (`exchange_finished` hands it over), so a handler
that does not suspend costs no task and no loop turn. While more requests are
buffered, responses are *corked*: gathered and written in one
`transport.write` at the end of the batch, or sooner when a handler suspends
(a `call_soon` flush), when `CORK_LIMIT` bytes are gathered, before any wait
for the socket and before a close. So a deep pipeline costs one write per
batch, never unbounded memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from types import coroutine
from typing import TYPE_CHECKING, Any, cast

import h11

from .connection import NEED_DATA, PAUSED, HeaderTriples, HTTPConnection, RequestError
from .errors import BadRequestBody, ClientDisconnected, HTTPException
from .exchange import Exchange
from .flow import BodyStream, WriteGate
from .proxy import resolve_forwarded
from .request import Request
from .watch import Watched, set_reset

if TYPE_CHECKING:
    from .server import ServerState
    from .tls import TLSInfo

error_log = logging.getLogger("aserve.error")

IDLE, HEAD, BUSY, DISCARD, CLOSING = range(5)

LINGER_S = 2.0
#: At shutdown, how long a connection that has not sent its first request yet
#: is given to send it.
FRESH_AT_SHUTDOWN_S = 1.0
PIPELINE_LIMIT = 64 * 1024
#: Most bytes of pipelined responses gathered before they are written.
CORK_LIMIT = 64 * 1024
DRAIN_LIMIT = 256 * 1024

_PAUSE_BODY = 1
_PAUSE_PIPELINE = 2
_PAUSE_LINGER = 4

_EAGER_TASKS = sys.version_info >= (3, 12)
_HAS_SENDFILE = hasattr(os, "sendfile")
SENDFILE_CHUNK = 1024 * 1024
READ_CHUNK = 256 * 1024
_BODY_LATE = RequestError(408, "Request body not received in time")
_HANDLER_LATE = RequestError(504, "Handler did not answer in time")
#: How an exchange ended when the connection answered in its place.
_OUTCOMES = {408: "body-timeout", 504: "handler-timeout"}


@coroutine
def _yield() -> Any:
    """One turn of the event loop (what asyncio.sleep(0) does, without its checks)."""
    yield


class HTTPProtocol(Watched, asyncio.Protocol):
    __slots__ = (
        "_state",
        "_loop",
        "_transport",
        "_conn",
        "_phase",
        "_exchange",
        "_body",
        "_deadline",
        "_until",
        "_body_deadline",
        "_send_deadline",
        "_send_mark",
        "_handler_left",
        "_gate",
        "_lost",
        "_read_paused",
        "_pipelined",
        "_processing",
        "_client",
        "_discard_from",
        "_pending",
        "_eof",
        "_disconnect_callbacks",
        "_server_address",
        "_fresh",
        "_cork",
        "_cork_size",
        "_chaining",
        "_chained",
    )

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._loop = state.loop
        self._transport: asyncio.Transport | None = None
        config = state.config
        self._conn = HTTPConnection(
            max_head_size=config.max_head_size,
            max_url_size=config.max_url_size,
            max_body_size=config.max_body_size,
            lenient_framing=config.lenient_framing,
        )
        self._phase = IDLE
        self._exchange: Exchange | None = None
        self._body: BodyStream | None = None
        self._deadline: float | None = None
        self._until: float | None = None
        self._body_deadline: float | None = None
        self._send_deadline: float | None = None
        self._send_mark = 0
        self._handler_left: float | None = None
        self._gate: WriteGate | None = None
        self._lost = False
        self._read_paused = 0
        self._pipelined = 0
        self._processing = False
        self._client: tuple[str, int] | None = None
        self._discard_from = 0
        self._pending = False
        self._eof = False
        self._disconnect_callbacks: list[Callable[[], object]] | None = None
        self._server_address: tuple[str, int] | None | bool = False
        #: No request has started on this connection yet.
        self._fresh = True
        #: Pipelined responses gathered for one write (see the module docstring).
        self._cork: list[Any] | None = None
        self._cork_size = 0
        #: An exchange is finishing: the next one runs on in its task.
        self._chaining = False
        self._chained: Exchange | None = None

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both fit.
        self._transport = transport = cast(asyncio.Transport, transport)
        state = self._state
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._client = peer if len(peer) == 2 else (peer[0], peer[1])
        limit = state.config.max_connections
        if limit is not None and len(state.connections) >= limit:
            # One write and no Request; the server's clock logs the count once
            # a second, so that a flood of connections is not a flood of lines.
            state.rejected.add(self)
            state.refused += 1
            state.refusals["max_connections"] += 1
            self._refuse(RequestError(503, "Server busy, try again later"), log=False)
            return
        state.connections.add(self)
        state.opened += 1
        if state.shutting_down:
            # Accepted just before the listener closed: its request is on the
            # way and gets served (then the connection closes), not refused.
            self._arm(min(state.config.keep_alive_timeout, FRESH_AT_SHUTDOWN_S))
        else:
            self._arm(state.config.keep_alive_timeout)

    def set_client(self, client: tuple[str, int] | None) -> None:
        """The client as a PROXY protocol header announced it."""
        self._client = client

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == CLOSING:
            return
        self._conn.receive(data)
        if phase == BUSY and self._body is None:
            # The request is in; this is the next one, pipelined. h11 holds it
            # until our response is done; past a limit, stop reading.
            self._pending = True
            self._pipelined += len(data)
            if self._pipelined > PIPELINE_LIMIT:
                self._pause_reading(_PAUSE_PIPELINE)
            return
        self._process()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._fire_disconnect()
        if self._phase == CLOSING:
            return False
        self._conn.receive(b"")
        self._process()
        # A client that half-closes after a whole request still reads the answer
        # (keep the write side open); one that stops mid-request has left.
        return self._exchange is not None and self._phase != CLOSING and self._conn.request_complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._fire_disconnect()
        state = self._state
        state.connections.discard(self)
        state.rejected.discard(self)
        self._deadline = self._until = self._body_deadline = self._send_deadline = None
        if self._body is not None:
            self._body.fail(ClientDisconnected("client disconnected"))
            self._body = None
        if self._gate is not None:
            self._gate.connection_lost()
        if self._exchange is not None:
            self._exchange.connection_lost()
        state.connection_closed()

    def pause_writing(self) -> None:
        if self._gate is None:
            self._gate = WriteGate()
        self._gate.pause()
        self._watch_send()

    def resume_writing(self) -> None:
        if self._gate is not None:
            self._gate.resume()
        if self._phase == CLOSING:
            self._watch_send(renew=True)  # a closed transport still flushing
        elif self._send_deadline is not None:
            self._send_deadline = None
            self._refresh_deadline()

    # -- reading ----------------------------------------------------------

    def _process(self) -> None:
        if self._processing:
            return  # re-entered from an exchange that finished eagerly: the loop below goes on
        self._processing = True
        try:
            conn = self._conn
            while not self._lost:
                phase = self._phase
                if phase == BUSY and self._body is None:
                    # The request is in and its exchange runs. Bytes after it are
                    # the next request, pipelined: they wait until we answered,
                    # and the answers go out together.
                    if conn.buffered:
                        self._pending = True
                        if self._cork is None:
                            self._cork = []
                            self._loop.call_soon(self._uncork)
                    return
                if phase == CLOSING:
                    return
                event = conn.next_event()
                kind = type(event)
                if kind is h11.Data:
                    body = self._body
                    if body is not None:
                        body.feed(event.data)  # type: ignore[union-attr]
                        if phase == DISCARD:
                            if body.received - self._discard_from > DRAIN_LIMIT:
                                self._close(linger=False)
                                return
                            self._arm(self._state.config.body_timeout)
                elif kind is h11.EndOfMessage:
                    self._end_of_body()
                elif kind is h11.Request:
                    self._start_exchange(event)  # type: ignore[arg-type]
                elif event is NEED_DATA:
                    if phase == IDLE and conn.buffered:
                        self._phase = HEAD
                        self._arm(self._state.config.header_timeout)
                    return
                elif event is PAUSED:
                    self._pending = True
                    return
                elif kind is RequestError:
                    self._on_bad_request(event)  # type: ignore[arg-type]
                    return
                elif kind is h11.ConnectionClosed:
                    self._on_client_eof()
                    return
                else:  # pragma: no cover - h11 gives a server no other events
                    return
        finally:
            self._processing = False

    def _start_exchange(self, event: h11.Request) -> None:
        conn = self._conn
        state = self._state
        self._phase = BUSY
        timeout = state.handler_timeout
        if timeout is None:
            self._until = None
            self._deadline = self._send_deadline
        else:
            self._arm(timeout)
        self._pipelined = 0
        self._pending = False
        if self._fresh:
            self._fresh = False
            state.served_connections += 1
        state.requests += 1
        body = None
        if conn.chunked or conn.content_length:
            body = self._body = BodyStream(self, state.config.max_body_size)
        else:
            conn.end_bodiless()  # the EndOfMessage of a request without a body
        request = Request(
            event.method,
            event.target,
            conn.header_pairs,
            event.http_version,
            body=body,
            peer=self,
            client=self._client,
            scheme=state.scheme,
        )
        if state.adjust:
            self._adjust(request)
        limit = state.max_concurrency
        if limit is not None and state.active >= limit:
            # Load shedding: answered at once, never queued; the connection
            # stays usable. The server's clock logs the count once a second.
            state.shed += 1
            state.refusals["max_concurrency"] += 1
            exchange = Exchange(self, conn, state, request, state.shed_handler, counted=False)
        else:
            state.active += 1
            exchange = Exchange(self, conn, state, request, state.handler)
        self._exchange = exchange
        if state.observer is not None:
            exchange.measure(self)  # type: ignore[arg-type]  # a MeteredHTTPProtocol
        if self._chaining:
            self._chained = exchange  # runs on in the task of the one finishing
            return
        if _EAGER_TASKS:
            exchange.task = asyncio.Task(  # type: ignore[call-arg]
                exchange.run(), loop=self._loop, eager_start=True
            )
        else:
            exchange.task = self._loop.create_task(exchange.run())

    def _adjust(self, request: Request) -> None:
        """What the settings say of every request: the root path a proxy
        serves us under, and the client, scheme and host that a trusted proxy
        announces in its headers."""
        state = self._state
        if state.root_path:
            request.root_path = state.root_path
        if not state.proxy_headers:
            return
        peer = self._client
        raw = request._raw_headers
        found = resolve_forwarded(raw, peer[0] if peer else None, state.trusted)
        if found is None:
            return
        if found.client is not None:
            request.client = (found.client, 0)
        if found.scheme is not None:
            request.scheme = found.scheme
        if found.host is not None:
            host = found.host.encode("ascii")
            request._raw_headers = [(n, host if n == b"host" else v) for n, v in raw]

    def _end_of_body(self) -> None:
        body = self._body
        if body is not None:
            self._body = None
            body.end()
        if self._phase == DISCARD:
            self._next_request()

    def _on_client_eof(self) -> None:
        if self._body is not None:
            self._body.fail(ClientDisconnected("client closed the connection mid-body"))
            self._body = None
        if self._exchange is None:
            self._close(linger=False)

    def _on_bad_request(self, error: RequestError) -> None:
        if self._exchange is not None:
            # Bad framing in the body of a request being handled: the handler's
            # reads fail with the error. If no response has started, the
            # connection answers it now; otherwise the response in progress
            # ends and the connection closes (nothing after it can be framed).
            body = self._body
            if self._eof:
                # The client closed its side mid-body: it left, it did not lie.
                if body is not None:
                    self._body = None
                    body.fail(ClientDisconnected("client closed the connection mid-body"))
                self._pause_reading(_PAUSE_PIPELINE)
                return
            if body is not None:
                self._body = None
                body.fail(
                    BadRequestBody(error.reason)
                    if error.status == 400
                    else HTTPException(error.status, error.reason)
                )
            if not self._answer_instead(error):
                self._log_refusal(error)
                self._pause_reading(_PAUSE_PIPELINE)
            return
        if self._eof and self._phase in (IDLE, HEAD):
            # The client closed mid-head; it may still read, but an answer to
            # half a request helps nobody.
            self._close(linger=False)
            return
        self._refuse(error)

    def _refuse(self, error: RequestError, log: bool = True) -> None:
        if log:
            self._log_refusal(error)
        data = self._conn.send_error(error.status, error.reason, self.base_headers())
        if data:
            self.write(data)
        self._close(linger=True)

    def _log_refusal(self, error: RequestError) -> None:
        status = error.status
        if error is _BODY_LATE:
            reason = "body_timeout"
        elif status == 408:
            reason = "header_timeout"
        elif status in (413, 414, 431):
            reason = "too_large"
        else:
            reason = "bad_request"
        self._state.refusals[reason] += 1
        error_log.warning(
            "%s from %s: %s", error.status, self._client[0] if self._client else "-", error.reason
        )

    def _answer_instead(
        self, error: RequestError, *, cancel: bool = False, log: bool = True
    ) -> bool:
        """If the exchange's response has not started, detach the exchange (and
        cancel its handler with `cancel`), answer `error` and close: True.
        False when the response is under way and can no longer be replaced."""
        if not self._conn.can_answer:
            return False
        exchange = self._exchange
        if exchange is not None:
            self._exchange = None
            exchange.status = error.status
            exchange.outcome = _OUTCOMES.get(error.status, "bad-request")
            exchange.detach(cancel)
        self._refuse(error, log=log)
        return True

    # -- the exchange's channel -------------------------------------------

    @property
    def disconnected(self) -> bool:
        # A client that closed its sending side is taken as gone, as most
        # servers do: it may still read the answer, which is still written.
        return self._lost or self._eof

    @property
    def server_address(self) -> tuple[str, int] | None:
        # Asked per request by the adapters (ASGI scope["server"], WSGI
        # SERVER_NAME): looked up once per connection.
        address = self._server_address
        if address is not False:
            return address  # type: ignore[return-value]
        found = None
        if self._transport is not None:
            name = self._transport.get_extra_info("sockname")
            if isinstance(name, tuple) and len(name) >= 2:
                found = (str(name[0]), int(name[1]))
        self._server_address = found
        return found

    @property
    def tls(self) -> TLSInfo | None:
        """The TLS facts of this connection, or None over plain TCP."""
        transport = self._transport
        return transport.get_extra_info("aserve.tls") if transport is not None else None

    def on_disconnect(self, callback: Callable[[], object]) -> None:
        if self._lost or self._eof:
            callback()
        elif self._disconnect_callbacks is None:
            self._disconnect_callbacks = [callback]
        else:
            self._disconnect_callbacks.append(callback)

    @property
    def write_paused(self) -> bool:
        gate = self._gate
        return gate is not None and gate.paused

    def write(self, data: Any) -> None:
        if data and not self._lost and self._transport is not None:
            if self._cork is None:
                self._transport.write(data)
            else:
                self._gather(data)

    def _gather(self, data: Any) -> None:
        """Keep `data` for the write at the end of a pipelined batch."""
        assert self._cork is not None
        self._cork.append(data)
        self._cork_size += len(data)
        if self._cork_size > CORK_LIMIT:
            self._uncork()

    def _uncork(self) -> None:
        """Write the gathered pipelined responses, in one write."""
        cork = self._cork
        if cork is None:
            return
        self._cork = None
        self._cork_size = 0
        if cork and not self._lost and self._transport is not None:
            self._transport.write(cork[0] if len(cork) == 1 else b"".join(cork))

    async def drain(self) -> None:
        if self._cork is not None:
            self._uncork()
        gate = self._gate
        if gate is not None:
            await gate.wait()
        # A reset can surface inside transport.write(): the transport is then
        # closing while connection_lost is only scheduled. Count it as gone,
        # or a writer that never awaits would spin on a dead socket.
        transport = self._transport
        if self._lost or transport is None or transport.is_closing():
            raise ClientDisconnected("client disconnected")
        # One loop turn per chunk even when the socket takes everything: a
        # body that never waits must not starve the other connections.
        await _yield()

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """Send `count` bytes of file `fd` from `offset`: zero-copy with
        os.sendfile while the socket takes them, else read-and-write with
        backpressure (TLS, or a socket that is momentarily full)."""
        transport = self._transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        native = (
            _HAS_SENDFILE
            and sock is not None
            and transport.get_extra_info("sslcontext") is None
            and transport.get_extra_info("ssl_object") is None
        )
        while count > 0:
            await self.drain()
            if self._lost:
                raise ClientDisconnected("client disconnected")
            if native and transport.get_write_buffer_size() == 0:
                try:
                    sent = os.sendfile(sock.fileno(), fd, offset, min(count, SENDFILE_CHUNK))
                except BlockingIOError:
                    sent = -1  # the socket is full: let the transport wait for it
                except OSError as exc:
                    raise ClientDisconnected(f"sendfile failed: {exc}") from exc
                if sent == 0:
                    raise OSError("file ended before the promised length")
                if sent > 0:
                    offset += sent
                    count -= sent
                    continue
            chunk = os.pread(fd, min(count, READ_CHUNK), offset)
            if not chunk:
                raise OSError("file ended before the promised length")
            transport.write(chunk)
            offset += len(chunk)
            count -= len(chunk)

    def base_headers(self) -> HeaderTriples:
        return self._state.base_headers

    def must_close(self) -> bool:
        """Whether this response must carry `Connection: close`."""
        if self._state.shutting_down or self._lost:
            return True
        conn = self._conn
        body = self._body
        if body is None:
            return not conn.request_complete  # the body's framing broke

        if conn.waiting_for_continue or body.over_limit:
            # No 100 went out: the client may send the body or not, so nothing
            # that follows on this connection could be framed with certainty.
            return True
        if conn.content_length is not None:
            return conn.content_length - body.received > DRAIN_LIMIT
        return False

    def exchange_finished(self, clean: bool) -> Exchange | None:
        finished = self._exchange
        self._exchange = None
        self._body_deadline = self._handler_left = None
        if self._lost:
            return None
        conn = self._conn
        if not clean or self._state.shutting_down:
            self._close(linger=not conn.request_complete)
        elif conn.keep_alive:
            self._chaining = True
            try:
                self._next_request()
            finally:
                self._chaining = False
            chained = self._chained
            if chained is not None:
                self._chained = None
                chained.task = finished.task if finished is not None else None
                return chained
        elif conn.response_done and conn.receiving_body and self._body is not None:
            # Answered before the body was read: drop the rest of it as it comes,
            # then serve the next request (must_close() already ruled out bodies
            # too large to be worth it).
            body = self._body
            self._phase = DISCARD
            self._discard_from = body.received
            body.discard()
            self._arm(self._state.config.body_timeout)
        else:
            self._close(linger=not conn.request_complete)
        if self._cork is not None:
            self._uncork()  # the end of a batch of pipelined answers
        return None

    def _next_request(self) -> None:
        if self._state.shutting_down:
            self._close(linger=False)
            return
        self._conn.start_next_cycle()
        self._phase = IDLE
        self._arm(self._state.config.keep_alive_timeout)
        if self._read_paused & _PAUSE_PIPELINE:
            self._resume_reading(_PAUSE_PIPELINE)
        if self._pending or self._eof:
            self._pending = False
            self._process()

    # -- body stream channel ----------------------------------------------

    def pause_body(self) -> None:
        self._pause_reading(_PAUSE_BODY)

    def resume_body(self) -> None:
        self._resume_reading(_PAUSE_BODY)

    def send_continue(self) -> None:
        if self._conn.waiting_for_continue:
            self.write(self._conn.send_continue())

    def body_wait(self, waiting: bool) -> None:
        """A handler starts or stops waiting for body bytes: body_timeout runs
        for the gap, and the handler's own clock stops meanwhile."""
        if self._lost:
            return
        now = self._loop.time()
        busy = self._phase == BUSY
        if waiting:
            until = self._until
            if busy and until is not None:
                self._handler_left = max(0.0, until - now)
                self._until = None
            self._body_deadline = now + self._state.config.body_timeout
        else:
            self._body_deadline = None
            left = self._handler_left
            if left is not None:
                self._handler_left = None
                if busy:
                    self._until = now + left
        self._refresh_deadline()

    def _pause_reading(self, reason: int) -> None:
        if not self._read_paused and not self._lost and self._transport is not None:
            self._transport.pause_reading()
        self._read_paused |= reason

    def _resume_reading(self, reason: int) -> None:
        if not self._read_paused & reason:
            return
        self._read_paused &= ~reason
        if not self._read_paused and not self._lost and self._transport is not None:
            self._transport.resume_reading()

    # -- timers and closing -----------------------------------------------

    def _refresh_deadline(self) -> None:
        best = self._until
        for deadline in (self._body_deadline, self._send_deadline):
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        self._deadline = best

    def deadline_passed(self) -> None:
        """Called by the server's clock once `_deadline` is behind it."""
        self._deadline = None
        transport = self._transport
        if self._lost or transport is None:
            return
        config = self._state.config
        now = self._loop.time()
        send = self._send_deadline
        if send is not None and send <= now and self._send_stalled(transport, now):
            error_log.warning(
                "closing the connection of %s: it read nothing for %gs (send_timeout)",
                self._client[0] if self._client else "-",
                config.send_timeout,
            )
            self._reset()
            return
        phase = self._phase
        until = self._until
        if phase == BUSY:
            body = self._body_deadline
            if body is not None and body <= now:
                self._body_timed_out()
                return
            if until is not None and until <= now:
                self._until = None
                if self._handler_timed_out():
                    return
        elif until is not None and until <= now:
            self._until = None
            if phase == HEAD:
                self._refuse(RequestError(408, "Request head not received in time"))
                return
            if phase == IDLE:
                self._close(linger=False)
                return
            if phase == DISCARD:
                self._log_refusal(_BODY_LATE)
                self._close(linger=False)
                return
            if phase == CLOSING:
                transport.close()
                if transport.get_write_buffer_size():
                    self._watch_send()
        self._refresh_deadline()

    def _body_timed_out(self) -> None:
        self._body_deadline = None
        body = self._body
        if body is not None:
            self._body = None
            body.fail(ClientDisconnected("request body not received in time"))
        if not self._answer_instead(_BODY_LATE):
            self._log_refusal(_BODY_LATE)
            self._close(linger=False)

    def _handler_timed_out(self) -> bool:
        """Cancel a handler that did not produce its response head in time and
        answer 504; False when the head already went out (no longer its time)."""
        exchange = self._exchange
        if exchange is None or not self._conn.can_answer:
            return False
        request = exchange.request
        self._state.refusals["handler_timeout"] += 1
        error_log.warning(
            "handler did not answer %s %s within %gs (handler_timeout): cancelled, 504",
            request.method,
            request.target.decode("latin-1"),
            self._state.handler_timeout,
        )
        return self._answer_instead(_HANDLER_LATE, cancel=True, log=False)

    def _close(self, linger: bool) -> None:
        """Close after what was written is sent. With `linger`, shut the write
        side first and drop whatever the client still sends for a moment, so it
        reads our answer instead of a reset (RFC 9112 9.6)."""
        transport = self._transport
        if transport is None or self._lost or self._phase == CLOSING:
            return
        if self._cork is not None:
            self._uncork()
        self._phase = CLOSING
        if self._body is not None:
            self._body.fail(ClientDisconnected("connection closing"))
            self._body = None
        if linger and transport.can_write_eof():
            try:
                transport.write_eof()
            except (OSError, RuntimeError):
                transport.close()
                return
            if self._read_paused:
                self._read_paused = 0
                transport.resume_reading()
            self._arm(LINGER_S)
        else:
            self._until = None
            transport.close()
            if transport.get_write_buffer_size():
                self._watch_send()
            else:
                self._refresh_deadline()

    def shutdown(self) -> None:
        """The server is stopping: close now if idle or lingering, else after
        this response. A head under way is a request the client has started to
        send: it is served (under header_timeout), then the connection closes."""
        phase = self._phase
        if phase == CLOSING:
            if self._transport is not None and not self._lost:
                self._transport.close()
        elif phase == IDLE and self._fresh:
            # A new connection whose request has not come yet (the client
            # connected a moment ago): a short wait for it, not a close that
            # would fail a request the client could not know to retry.
            grace = min(self._state.config.keep_alive_timeout, FRESH_AT_SHUTDOWN_S)
            if self._until is None or self._until > self._loop.time() + grace:
                self._arm(grace)
        elif phase != BUSY and phase != HEAD:
            self._close(linger=False)

    def _reset(self) -> None:
        """Abort with a reset (RST), and cancel the handler."""
        set_reset(self._transport)
        self.abort()

    def abort(self) -> None:
        if self._exchange is not None and self._exchange.task is not None:
            self._exchange.task.cancel()
        if self._transport is not None and not self._lost:
            self._transport.abort()

    def phase_name(self) -> str:
        """What the connection is doing, for metrics and the status page:
        idle, reading (a head, or a body the handler waits for), handling,
        writing (the response started) or closing."""
        phase = self._phase
        if phase == IDLE:
            return "idle"
        if phase == HEAD:
            return "reading"
        if phase == BUSY:
            exchange = self._exchange
            if exchange is not None and exchange.status:
                return "writing"
            body = self._body
            if body is not None and self._body_deadline is not None:
                return "reading"
            return "handling"
        return "closing"

    # -- switching protocols (a WebSocket: aserve/wsprotocol.py) -----------

    @property
    def websockets(self) -> Any:
        """What accepts the WebSocket the request being handled asks for (the
        server's `wsprotocol.Acceptor`), or None: the request asked for no
        switch of protocols, or the server serves no WebSockets. Asked only by
        a handler that would accept one, never per request."""
        acceptor = self._state.websockets
        if acceptor is None or self._phase != BUSY or not self._conn.switch_offered:
            return None
        return acceptor if acceptor.ready() else None

    def switch_protocols(self, headers: HeaderTriples, successor: Any) -> bool:
        """Answer the request being handled with `101 Switching Protocols`
        (`headers` and the server's own) and hand the connection to
        `successor` (a `WebSocketProtocol`) with what the client sent after
        the request. This protocol then leaves the connection: the successor
        takes its place in the server's set, and the exchange runs on as the
        session. False when that can no longer be done (the client left or
        shut its side, a response has begun)."""
        transport = self._transport
        exchange = self._exchange
        if (
            self._lost
            or self._eof
            or transport is None
            or exchange is None
            or self._phase != BUSY
            or transport.is_closing()
        ):
            return False
        switched = self._conn.switch_protocols(headers + self._state.base_headers)
        if switched is None:
            return False
        head, rest = switched
        if self._cork is not None:
            self._uncork()  # answers before this one go first
        transport.write(head)
        self._exchange = None
        exchange.switched()
        self._phase = CLOSING  # nothing more comes here: the transport calls the successor
        self._deadline = self._until = self._body_deadline = self._send_deadline = None
        self._disconnect_callbacks = None
        self._state.connections.discard(self)
        transport.set_protocol(successor)
        successor.take_over(
            transport,
            rest,
            exchange,
            head_bytes=len(head),
            reading_paused=bool(self._read_paused),
            writing_paused=self.write_paused,
        )
        return True

    def __repr__(self) -> str:
        return f"<HTTPProtocol {self._client} phase={self._phase}>"


class MeteredHTTPProtocol(HTTPProtocol):
    """An HTTPProtocol that counts the bytes it writes, for the access log and
    metrics; the server uses it only when an observer is on, so that a server
    without one pays nothing for the count."""

    __slots__ = ("sent",)

    def __init__(self, state: ServerState) -> None:
        super().__init__(state)
        self.sent = 0

    def write(self, data: Any) -> None:
        if data and not self._lost and self._transport is not None:
            self.sent += len(data)
            if self._cork is None:
                self._transport.write(data)
            else:
                self._gather(data)

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        await super().send_file(fd, offset, count)
        self.sent += count
