"""What the HTTP and the WebSocket protocol share about time and about leaving.

Both keep one float, ``_deadline``: the earlier of their phase deadline
``_until`` and ``_send_deadline``; the server's clock sweeps the open
connections and calls ``deadline_passed()`` on the late ones (see the
protocol module's docstring). ``send_timeout`` is the same rule on both: while
the socket takes nothing of what was written, it runs, and it is renewed
whenever the write buffer shrank.

`Watched` holds those methods and the disconnect callbacks, for classes that
declare the slots they use; `reset` aborts a connection with an RST. Nothing
here is on the per-request path.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .server import ServerState

error_log = logging.getLogger("aserve.error")

_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class _Clocked(Protocol):
    """The attributes `Watched` uses: the class that uses it declares them in
    its own ``__slots__`` (Watched has none, so no instance gets a dict)."""

    _state: ServerState
    _loop: asyncio.AbstractEventLoop
    _transport: asyncio.Transport | None
    _lost: bool
    _deadline: float | None
    _until: float | None
    _send_deadline: float | None
    _send_mark: int
    _disconnect_callbacks: list[Callable[[], object]] | None

    def _refresh_deadline(self) -> None: ...


class Watched:
    """Deadline and disconnect bookkeeping (see `_Clocked`)."""

    __slots__ = ()

    if TYPE_CHECKING:  # declared, for the type checker, by the classes that use it
        _until: float | None
        _deadline: float | None
        _send_deadline: float | None
        _disconnect_callbacks: list[Callable[[], object]] | None

    def _arm(self: _Clocked, delay: float) -> None:
        """Set the phase deadline `delay` seconds from now."""
        until = self._until = self._loop.time() + delay
        send = self._send_deadline
        self._deadline = until if send is None or until < send else send

    def _watch_send(self: _Clocked, renew: bool = False) -> None:
        """Start send_timeout (kept if running, unless `renew`): unsent bytes
        must start to leave before it passes."""
        transport = self._transport
        if self._lost or transport is None or (self._send_deadline is not None and not renew):
            return
        self._send_mark = transport.get_write_buffer_size()
        self._send_deadline = self._loop.time() + self._state.config.send_timeout
        self._refresh_deadline()

    def _send_stalled(self: _Clocked, transport: asyncio.Transport, now: float) -> bool:
        """Whether send_timeout passed with nothing taken by the socket; if
        bytes left meanwhile (the client reads, however slowly), it runs again
        or stops, and the answer is False. Counted as a send_timeout refusal."""
        size = transport.get_write_buffer_size()
        if size == 0 or size < self._send_mark:
            self._send_mark = size
            self._send_deadline = None if size == 0 else now + self._state.config.send_timeout
            return False
        self._state.refusals["send_timeout"] += 1
        return True

    def _fire_disconnect(self: _Clocked) -> None:
        callbacks, self._disconnect_callbacks = self._disconnect_callbacks, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception as exc:  # a broken callback must not break the connection
                error_log.error("disconnect callback failed", exc_info=exc)


def set_reset(transport: asyncio.BaseTransport | None) -> None:
    """Make the transport's close send an RST: a plain close would leave the
    kernel an orphan socket still trying to deliver unsent bytes to a client
    that reads nothing, and the client none the wiser."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except (OSError, AttributeError, TypeError):
            pass  # not a TCP socket (a pipe in tests): a plain abort will do
