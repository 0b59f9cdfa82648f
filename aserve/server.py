"""Server: bind, accept, track connections, tick the Date header, shut down.

`Server` is the embedded form: it runs on the caller's loop, never installs
signal handlers and never changes the loop policy. `run()` is the blocking
form for programs and the command line: it picks the loop (`uvloop` when
installed, unless told otherwise), installs SIGINT/SIGTERM handlers (the first
one shuts down gracefully, the second forces it) and returns when the server
has stopped.

Graceful shutdown: stop listening at once; close idle connections; let
in-flight exchanges finish (their responses carry `Connection: close`); after
`graceful_timeout` cancel what is left and abort those connections.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Sequence
from email.utils import formatdate
from types import TracebackType
from typing import Any

from .accesslog import AccessLog
from .app import App, as_async_handler
from .config import Config
from .connection import HeaderTriples
from .errors import ConfigError, HTTPException, ListenError
from .exchange import Handler, Observer
from .front import FrontProtocol
from .metrics import MetricsEndpoint, Monitor, Share
from .protocol import LINGER_S, HTTPProtocol, MeteredHTTPProtocol
from .proxy import TrustedPeers
from .request import Request
from .response import Response
from .tls import make_context, reload_context
from .wsprotocol import Acceptor, WebSocketProtocol, make_acceptor

logger = logging.getLogger("aserve.error")
#: Life-cycle lines (shutting down, certificates reloaded); aserve.error has
#: only errors and warnings.
lifecycle = logging.getLogger("aserve")

#: Loop turns a shutdown waits, after the listener closed, for connections the
#: loop had accepted but not yet made (asyncio makes them in a task).
_ACCEPT_TURNS = 5


class ServerState:
    """What every connection of one server shares."""

    __slots__ = (
        "config",
        "loop",
        "handler",
        "shed_handler",
        "handler_timeout",
        "max_concurrency",
        "active",
        "requests",
        "shed",
        "refused",
        "refusals",
        "opened",
        "served_connections",
        "started",
        "debug",
        "observer",
        "protocol_class",
        "scheme",
        "ssl_context",
        "trusted",
        "proxy_headers",
        "root_path",
        "adjust",
        "connections",
        "rejected",
        "shutting_down",
        "base_headers",
        "all_closed",
        "websockets",
    )

    def __init__(
        self,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        handler: Handler,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.config = config
        self.loop = loop
        self.handler = handler
        self.shed_handler = _overloaded(config.retry_after)
        self.handler_timeout = config.handler_timeout
        self.max_concurrency = config.max_concurrency
        #: Requests being handled now (counted by the connections).
        self.active = 0
        #: Requests started since the server started (max_requests reads it).
        self.requests = 0
        #: Requests refused with 503 by max_concurrency since the clock last logged.
        self.shed = 0
        #: Connections refused with 503 by max_connections since the clock last logged.
        self.refused = 0
        #: Refused connections and requests since the start, by reason
        #: (max_connections, max_concurrency, header_timeout, body_timeout,
        #: send_timeout, handler_timeout, bad_request, too_large): metrics.
        self.refusals: collections.Counter[str] = collections.Counter()
        #: Connections accepted since the start.
        self.opened = 0
        #: Connections that have had a request (requests less these came on a
        #: kept-alive connection).
        self.served_connections = 0
        #: When the server started (wall clock), for uptime.
        self.started = time.time()
        self.debug = config.debug
        #: Told of every finished exchange: the access log when it is on, and
        #: the program's own observers.
        told: list[Observer] = list(observers)
        if config.access_log:
            told.insert(0, AccessLog(config.access_log_format))
        self.observer: Observer | None = (
            None if not told else told[0] if len(told) == 1 else _Observers(told)
        )
        #: Counting bytes costs a little per write: only with an observer.
        self.protocol_class: type[HTTPProtocol] = (
            HTTPProtocol if self.observer is None else MeteredHTTPProtocol
        )
        self.ssl_context = make_context(config)
        self.scheme = "http" if self.ssl_context is None else "https"
        self.trusted = TrustedPeers(config.forwarded_allow_ips)
        self.proxy_headers = config.proxy_headers
        self.root_path = config.root_path
        #: Whether requests need their client, scheme or root path adjusted.
        self.adjust = config.proxy_headers or bool(config.root_path)
        self.connections: set[HTTPProtocol | FrontProtocol | WebSocketProtocol] = set()
        self.rejected: set[HTTPProtocol] = set()
        self.shutting_down = False
        self.base_headers: HeaderTriples = []
        self.all_closed = asyncio.Event()
        #: Accepts WebSocket handshakes; None when the server serves none
        #: (ws="none", or wsproto is not installed).
        self.websockets: Acceptor | None = make_acceptor(self)
        self.refresh_base_headers()

    def refresh_base_headers(self) -> None:
        headers: HeaderTriples = []
        if self.config.date_header:
            date = formatdate(usegmt=True).encode("ascii")
            headers.append((b"date", b"date", date))
        if self.config.server_header:
            server = self.config.server_header.encode("latin-1")
            headers.append((b"server", b"server", server))
        self.base_headers = headers

    def connection_closed(self) -> None:
        if self.shutting_down and not self.connections:
            self.all_closed.set()


class _Observers:
    """Several observers told in turn; one that fails is logged and the others
    are still told."""

    __slots__ = ("observers",)

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = tuple(observers)

    def exchange_done(self, done: Any) -> None:
        for observer in self.observers:
            try:
                observer.exchange_done(done)
            except Exception as exc:
                logger.error("observer %r failed", observer, exc_info=exc)

    def websocket_done(self, session: Any) -> None:
        for observer in self.observers:
            told = getattr(observer, "websocket_done", None)
            if told is None:
                continue
            try:
                told(session)
            except Exception as exc:
                logger.error("observer %r failed", observer, exc_info=exc)


def _overloaded(retry_after: int | None) -> Handler:
    """The handler of a request past max_concurrency: 503 at once, answered
    like any HTTPException."""
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None

    async def overloaded(request: Request) -> Response:
        raise HTTPException(503, "Server busy, try again later", headers)

    return overloaded


class Server:
    """An HTTP/1.1 server for `handler`, run on the current event loop.

    ``options`` are `Config` field names (see `aserve.Config`)::

        async with aserve.Server(handler, port=0) as server:
            print(server.port)
            await server.serve_forever()
    """

    def __init__(
        self,
        handler: Handler,
        config: Config | None = None,
        *,
        observers: Sequence[Observer] = (),
        share: Share | None = None,
        **options: Any,
    ) -> None:
        # A plain `def handler(request)` runs in a worker thread; a bare ASGI or
        # WSGI app is refused here with the wrapper to use, not a 500 a request.
        handler = as_async_handler(handler)
        for observer in observers:
            if not callable(getattr(observer, "exchange_done", None)):
                raise TypeError(f"an observer needs an exchange_done(done) method: {observer!r}")
        #: Told of every finished exchange (see aserve.Observer).
        self.observers = tuple(observers)
        if config is None:
            config = Config.build(**options)
        elif options:
            config = config.replace(**options)
        self.handler = handler
        self.config = config
        #: With workers, from the supervisor: the metrics board and this
        #: process's slot in it, and the metrics listener it bound.
        self._share = share
        self._monitor: Monitor | None = None
        self._metrics_server: asyncio.Server | None = None
        self._metrics_state: ServerState | None = None
        self._state: ServerState | None = None
        self._server: asyncio.Server | None = None
        self._clock: asyncio.TimerHandle | None = None
        self._clock_interval = 1.0
        self._date_second = 0
        self._stopped: asyncio.Event | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        # (device, inode) of the Unix socket file we bound, removed at shutdown
        # only if that file is still the one there.
        self._uds_file: tuple[int, int] | None = None

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Bind and start accepting. Returns once the socket listens."""
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        config = self.config
        handler: Handler = self.handler
        observers: tuple[Observer, ...] = self.observers
        monitor = None
        if config.metrics_path or config.status_path or config.metrics_port is not None:
            monitor = self._monitor = Monitor(self._share)
            observers = (*observers, monitor.counts)
            if config.metrics_path or config.status_path:
                handler = MetricsEndpoint(handler, monitor, config.metrics_path, config.status_path)
        state = self._state = ServerState(config, loop, handler, observers)
        if monitor is not None:
            monitor.state = state
            if config.metrics_port is not None:
                await self._start_metrics_listener(monitor)
        self._stopped = asyncio.Event()
        front = state.ssl_context is not None or config.proxy_protocol
        factory = functools.partial(FrontProtocol if front else state.protocol_class, state)
        try:
            if config.uds is not None:
                server = await loop.create_unix_server(
                    factory, path=config.uds, backlog=config.backlog, start_serving=False
                )
                found = os.stat(config.uds)
                self._uds_file = (found.st_dev, found.st_ino)
            elif config.fd is not None:
                sock = socket.socket(fileno=config.fd)
                server = await loop.create_server(
                    factory, sock=sock, backlog=config.backlog, start_serving=False
                )
            else:
                server = await loop.create_server(
                    factory,
                    host=config.host,
                    port=config.port,
                    backlog=config.backlog,
                    reuse_address=True,
                    start_serving=False,
                )
        except OSError as exc:
            self._close_metrics_listener()
            raise listen_error(exc, config.where) from exc
        if config.debug and isinstance(self.handler, App):
            # The server's debug setting reaches the App (and, through its
            # start-up, the Apps mounted in it), which answers its own 500s.
            self.handler.debug = True
        startup = getattr(self.handler, "startup", None)
        if startup is not None:
            # The handler's own start-up (an App's on_startup hooks, an ASGI
            # app's lifespan) runs once the address is ours and before the
            # socket accepts anything; if it fails, the socket is let go.
            try:
                await startup()
            except BaseException:
                server.close()
                self._close_metrics_listener()
                raise
        self._server = server
        await server.start_serving()
        for sock in self._server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # Responses go out in one write; Nagle would only delay them.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._clock_interval = clock_interval(config)
        self._clock = loop.call_later(self._clock_interval, self._tick)
        if monitor is not None:
            monitor.publish()

    async def _start_metrics_listener(self, monitor: Monitor) -> None:
        """The metrics and status paths on a plain-HTTP listener of their own
        (metrics_port): nothing else is answered there, and nothing there is
        counted or logged."""
        config = self.config
        assert self._state is not None
        loop = self._state.loop
        handler = MetricsEndpoint(
            None, monitor, config.metrics_path or "/metrics", config.status_path
        )
        metrics_config = Config.build(
            host=config.metrics_host or config.host,
            port=config.metrics_port or 0,
            loop=config.loop,
            max_connections=64,
            max_concurrency=None,
            handler_timeout=None,
            header_timeout=config.header_timeout,
            keep_alive_timeout=config.keep_alive_timeout,
            server_header=config.server_header,
            date_header=config.date_header,
        )
        state = self._metrics_state = ServerState(metrics_config, loop, handler)
        factory = functools.partial(HTTPProtocol, state)
        sock = self._share.metrics_socket if self._share is not None else None
        try:
            if sock is not None:
                server = await loop.create_server(factory, sock=sock, backlog=config.backlog)
            else:
                server = await loop.create_server(
                    factory,
                    host=metrics_config.host,
                    port=metrics_config.port,
                    backlog=config.backlog,
                    reuse_address=True,
                )
        except OSError as exc:
            where = f"{metrics_config.host}:{metrics_config.port} (metrics_port)"
            raise listen_error(exc, where) from exc
        self._metrics_server = server
        if sock is None:  # with workers, the supervisor says where it listens
            lifecycle.info("metrics on %s", metrics_url(server.sockets[0], config))

    def _close_metrics_listener(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        state = self._metrics_state
        if state is not None:
            state.shutting_down = True
            for protocol in list(state.connections):
                protocol.abort()

    @property
    def metrics_port(self) -> int | None:
        """The metrics listener's port (useful with ``metrics_port=0``)."""
        if self._metrics_server is None:
            return None
        for sock in self._metrics_server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        return None

    def reload_certificates(self) -> bool:
        """Load the certificate files again (SIGHUP does this): connections
        opened from now on get the new certificate. False, with one log line,
        when they do not load; the old certificate then stays."""
        state = self._state
        if state is None or state.ssl_context is None or self.config.ssl is not None:
            return False
        try:
            reload_context(state.ssl_context, self.config)
        except ConfigError as exc:
            logger.error("certificates not reloaded, the old ones stay: %s", exc)
            return False
        lifecycle.info("certificates reloaded from %s", self.config.ssl_certfile)
        return True

    def on_sighup(self) -> None:
        """SIGHUP to a single process: reload the certificates when there are
        files to reload from; otherwise say that there is nothing to do (the
        default action would end the server)."""
        if self.config.ssl_certfile is not None and self.config.ssl is None:
            self.reload_certificates()
        else:
            lifecycle.info(
                "SIGHUP: nothing to reload (certificates reload under HTTPS; "
                "a new version of the code with --workers or --reload)"
            )

    def stop_accepting(self) -> None:
        """Close the listener: no new connections; those open are served on.
        (`shutdown` does this first; a worker process that hands over to a
        new one may want it alone.)"""
        if self._server is not None:
            self._server.close()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        if self._server is None:
            return ()
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        for sock in self.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        raise RuntimeError("server is not listening")

    @property
    def tls(self) -> bool:
        """Whether the listener speaks HTTPS."""
        return self._state is not None and self._state.ssl_context is not None

    @property
    def requests(self) -> int:
        """Requests received since the server started."""
        return self._state.requests if self._state is not None else 0

    @property
    def started(self) -> bool:
        return self._server is not None

    async def serve_forever(self) -> None:
        """Wait until the server has been shut down (starting it if needed)."""
        if self._server is None:
            await self.start()
        assert self._stopped is not None
        await self._stopped.wait()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop gracefully: in-flight requests get `timeout` seconds
        (default `graceful_timeout`) to finish; then they are cancelled."""
        if self._server is None or self._stopped is None:
            return
        if self._shutdown_task is None:
            grace = self.config.graceful_timeout if timeout is None else timeout
            self._shutdown_task = asyncio.ensure_future(self._shutdown(grace))
        elif timeout is not None and timeout <= 0:
            self.force_close()
        await asyncio.shield(self._shutdown_task)

    def force_close(self) -> None:
        """Cancel every exchange and abort every connection now."""
        state = self._state
        if state is None:
            return
        state.shutting_down = True
        if self._server is not None:
            self._server.close()
        for protocol in list(state.connections) + list(state.rejected):
            protocol.abort()

    async def _shutdown(self, grace: float) -> None:
        state = self._state
        server = self._server
        assert state is not None and server is not None and self._stopped is not None
        state.shutting_down = True
        server.close()
        # Connections accepted just before the close are still being made (a
        # few loop turns on asyncio): let them arrive and be counted, so that
        # they are served instead of cut when the process ends.
        for _ in range(_ACCEPT_TURNS):
            await asyncio.sleep(0)
        for rejected in list(state.rejected):
            rejected.abort()
        for protocol in list(state.connections):
            protocol.shutdown()
        if state.connections:
            try:
                async with asyncio.timeout(grace):
                    await state.all_closed.wait()
            except TimeoutError:
                logger.warning(
                    "graceful shutdown: %d connection(s) still busy after %.1fs, cancelling",
                    len(state.connections),
                    grace,
                )
        tasks = [
            p._exchange.task
            for p in state.connections
            if p._exchange is not None and p._exchange.task is not None
        ]
        self.force_close()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if state.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await state.all_closed.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await server.wait_closed()
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        self._close_metrics_listener()
        if self._monitor is not None:
            self._monitor.publish()  # the last numbers, for the supervisor to fold
            self._monitor.close()
        self._remove_uds_file()
        shutdown = getattr(self.handler, "shutdown", None)
        try:
            if shutdown is not None:
                await shutdown()
        finally:
            self._stopped.set()

    def _remove_uds_file(self) -> None:
        path = self.config.uds
        if path is None or self._uds_file is None:
            return
        try:
            found = os.stat(path)
            if (found.st_dev, found.st_ino) == self._uds_file and stat.S_ISSOCK(found.st_mode):
                os.unlink(path)
        except OSError:
            pass  # already gone, or not ours to remove
        self._uds_file = None

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    # -- the clock: Date header and connection deadlines -------------------

    def _tick(self) -> None:
        state = self._state
        if state is None or (self._stopped is not None and self._stopped.is_set()):
            return
        loop = state.loop
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            state.refresh_base_headers()
            if self._metrics_state is not None:
                self._metrics_state.refresh_base_headers()
            if self._monitor is not None:
                self._monitor.publish()
        if state.shed:
            logger.warning(
                "refused %d request(s) with 503: %d being handled (max_concurrency)",
                state.shed,
                state.max_concurrency or 0,
            )
            state.shed = 0
        if state.refused:
            logger.warning(
                "refused %d connection(s) with 503: %d open (max_connections)",
                state.refused,
                len(state.connections),
            )
            state.refused = 0
        now = loop.time()
        _sweep(state, now)
        if self._metrics_state is not None:
            _sweep(self._metrics_state, now)
        # Aligned to the wall clock's next second when that comes first, so the
        # Date header changes on time.
        delay = min(self._clock_interval, 1.0 - time.time() % 1.0 + 0.001)
        self._clock = loop.call_later(delay, self._tick)


def _sweep(state: ServerState, now: float) -> None:
    """Tell the connections of `state` whose deadline is behind `now`."""
    for protocol in (*state.connections, *state.rejected):
        deadline = protocol._deadline
        if deadline is not None and deadline <= now:
            protocol.deadline_passed()


def metrics_url(sock: socket.socket, config: Config) -> str:
    """Where the metrics listener answers (what the life-cycle line says)."""
    url = listen_url(sock, False)
    paths = [config.metrics_path or "/metrics"]
    if config.status_path:
        paths.append(config.status_path)
    return " and ".join(url + path for path in paths)


def listen_error(exc: OSError, where: str) -> ListenError:
    """The one line for a socket that cannot listen (the loop's own text
    repeats the address: the reason alone is enough)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return ListenError(exc.errno, f"cannot listen on {where}: {reason[:1].lower()}{reason[1:]}")


def listen_url(sock: socket.socket, tls: bool = False) -> str:
    """Where `sock` listens, as a URL (``http+unix://PATH`` for a Unix socket;
    ``https`` with `tls`)."""
    scheme = "https" if tls else "http"
    name = sock.getsockname()
    if sock.family == getattr(socket, "AF_UNIX", None):
        path = name.decode() if isinstance(name, bytes) else name
        return f"{scheme}+unix://{path}"
    host, port = name[0], name[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def clock_interval(config: Config) -> float:
    """How often deadlines are checked: a quarter of the shortest timeout, so a
    timeout fires at most 25% late, between 10 ms and 1 s."""
    timeouts = [
        config.header_timeout,
        config.body_timeout,
        config.send_timeout,
        config.keep_alive_timeout,
        LINGER_S,
    ]
    if config.handler_timeout is not None:
        timeouts.append(config.handler_timeout)
    if config.ws != "none":
        timeouts += [t for t in (config.ws_ping_interval, config.ws_ping_timeout) if t is not None]
    shortest = min(timeouts)
    return max(0.01, min(1.0, shortest / 4))


def new_event_loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop constructor `loop` names ("auto", "uvloop" or "asyncio")."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise ConfigError("loop='uvloop' but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop  # type: ignore[no-any-return, unused-ignore]
    return asyncio.new_event_loop


#: How the command line (and `run`, unless told not to) sets up logging.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int | str = logging.INFO, config_file: str | None = None) -> None:
    """Log to standard error as the command line does: the time, the level
    (in colour on a terminal), the logger (aserve, aserve.error, aserve.access)
    and the message. With `config_file`, a `logging.config.dictConfig` in JSON
    (or YAML, when PyYAML is installed) instead; ConfigError when it does not
    load."""
    if config_file is not None:
        _dict_config(config_file)
        return
    handler = logging.StreamHandler()
    colour = wants_colour(sys.stderr)
    handler.setFormatter(_ColourFormatter(LOG_FORMAT) if colour else logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


def wants_colour(stream: Any) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty()) and not os.environ.get("NO_COLOR")


class _ColourFormatter(logging.Formatter):
    """The level name in colour (only ever used on a terminal)."""

    _COLOURS = {
        logging.DEBUG: "\x1b[2m",
        logging.INFO: "\x1b[32m",
        logging.WARNING: "\x1b[33m",
        logging.ERROR: "\x1b[31m",
        logging.CRITICAL: "\x1b[1;31m",
    }

    def format(self, record: logging.LogRecord) -> str:
        colour = self._COLOURS.get(record.levelno)
        if colour is None:
            return super().format(record)
        plain = record.levelname
        record.levelname = f"{colour}{plain}\x1b[0m"
        try:
            return super().format(record)
        finally:
            record.levelname = plain


def _dict_config(path: str) -> None:
    import json
    import logging.config

    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the log config {path!r}: {exc.strerror or exc}") from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise ConfigError(
                f"{path!r} is YAML, and PyYAML is not installed (pip install pyyaml), "
                "or give the same in JSON"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"the log config {path!r} is not YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"the log config {path!r} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the log config {path!r} must be a dictConfig mapping")
    data.setdefault("version", 1)
    try:
        logging.config.dictConfig(data)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError(f"the log config {path!r} does not apply: {exc}") from None


def start_line(server: Server, what: str) -> str:
    """The one line that says the server listens: the same from `run` and
    from the command line."""
    from . import __version__

    where = listen_url(server.sockets[0], server.tls) if server.sockets else "(no socket)"
    return f"aserve {__version__} serving {what} on {where} (press Ctrl+C to quit)"


def run(
    handler: Handler,
    config: Config | None = None,
    *,
    on_started: Callable[[Server], None] | None = None,
    log_config: bool = True,
    **options: Any,
) -> None:
    """Serve `handler` until SIGINT or SIGTERM; the first shuts down gracefully,
    the second at once. Blocks; picks the event loop from `config.loop`.

    `on_started(server)` is called once the socket listens and the signal
    handlers are in place; by default it prints the command line's start line.
    Logging is set up as the command line does it (to standard error) unless
    the program set it up already or passes ``log_config=False``."""
    if config is None:
        config = Config.build(**options)
    elif options:
        config = config.replace(**options)
    if config.workers > 1 or config.max_requests is not None:
        if on_started is not None:
            raise ConfigError("on_started cannot be used with workers: each worker has its server")
        from .supervisor import run as run_workers  # forks: imported only here

        run_workers(handler, config)
        return
    if log_config and not logging.getLogger().handlers:
        configure_logging()
    if on_started is None:
        what = getattr(handler, "__qualname__", None) or type(handler).__qualname__

        def on_started(server: Server) -> None:
            print(start_line(server, what), flush=True)

    factory = new_event_loop_factory(config.loop)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(handler, config, on_started))
    except ListenError as exc:
        # A busy port is the user's to fix, not a bug: one line, as the
        # command line says it, and exit status 1.
        print(f"aserve: error: {exc.args[1] if len(exc.args) > 1 else exc}", file=sys.stderr)
        raise SystemExit(1) from None


async def serve(
    handler: Handler, config: Config, on_started: Callable[[Server], None] | None = None
) -> None:
    """`run()` inside a running loop: start, handle SIGINT/SIGTERM, serve until stopped."""
    server = Server(handler, config)
    await server.start()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            lifecycle.info("shutting down (send the signal again to force)")
            loop.create_task(server.shutdown())
        else:
            server.force_close()

    installed = []
    if sys.platform != "win32":
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        loop.add_signal_handler(signal.SIGHUP, server.on_sighup)
        installed.append(signal.SIGHUP)
    try:
        if on_started is not None:
            on_started(server)
        await server.serve_forever()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
