"""The floor of any h11 server: the least work h11's public API allows per request.

An ``asyncio.Protocol`` on uvloop with one ``h11.Connection`` per connection.
``data_received`` feeds h11 and drains its events; when a request has been read
to its end it sends a canned reply (``Response``, ``Data``, ``EndOfMessage``)
with one ``transport.write`` and starts the next cycle, or closes when h11 says
the connection must close. No task per request, no routing, no timers but the
once-a-second Date refresh. A real server on h11 cannot do less than this.
"""

from __future__ import annotations

import asyncio
import signal
from email.utils import formatdate
from typing import cast

import h11
import settings

BODY = b"Hello, World!"
_date = b""


def _refresh_date(loop: asyncio.AbstractEventLoop) -> None:
    """Recompute the Date header value, then again in a second."""
    global _date
    _date = formatdate(usegmt=True).encode("ascii")
    loop.call_later(1.0, _refresh_date, loop)


class HelloProtocol(asyncio.Protocol):
    __slots__ = ("conn", "transport")

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.SERVER)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self._drain_events()

    def eof_received(self) -> bool | None:
        self.conn.receive_data(b"")
        self._drain_events()
        return None  # close the transport

    def _drain_events(self) -> None:
        conn = self.conn
        transport = self.transport
        assert transport is not None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.EndOfMessage):
                self._reply(transport)
                if conn.our_state is h11.MUST_CLOSE:
                    transport.close()
                    return
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                transport.close()
                return
            # Request and Data events need nothing: the reply is canned.

    def _reply(self, transport: asyncio.Transport) -> None:
        conn = self.conn
        head = conn.send(
            h11.Response(
                status_code=200,
                reason=b"OK",
                headers=[
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"13"),
                    (b"date", _date),
                    (b"server", b"bare"),
                ],
            )
        )
        body = conn.send(h11.Data(data=BODY))
        end = conn.send(h11.EndOfMessage())
        assert head is not None and body is not None and end is not None
        transport.write(head + body + end)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    _refresh_date(loop)
    server = await loop.create_server(HelloProtocol, settings.HOST, port, backlog=2048)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is in benchmarks/requirements.txt
        asyncio.run(serve(settings.port()))
    else:
        uvloop.run(serve(settings.port()))


if __name__ == "__main__":
    main()
