"""Every knob of aserve in one frozen, validated record.

`Config` holds each setting once with its default and unit; `Config.build()`
checks types and ranges and rejects unknown names with a `ConfigError`, so a
typo fails at start-up instead of being ignored. The command line derives its
options from these fields; nothing else keeps a second list of them.

Times are seconds (float), sizes are bytes (int). `None` means "no limit" where
a field allows it.
"""

from __future__ import annotations

import dataclasses
import math
import ssl as _ssl
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal

from .errors import ConfigError

LoopName = Literal["auto", "uvloop", "asyncio"]
WSName = Literal["auto", "wsproto", "none"]
CertReqs = Literal["none", "optional", "required"]

_KIB = 1024
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Config:
    #: Interface to bind.
    host: str = "127.0.0.1"
    #: TCP port; 0 lets the OS pick a free one (read it back from `Server.port`).
    port: int = 8000
    #: Listen on this Unix domain socket path instead of host/port.
    uds: str | None = None
    #: Listen on this already-open, bound socket (file descriptor) instead of host/port.
    fd: int | None = None
    #: Event loop: "uvloop" when installed under "auto", else the stdlib loop.
    loop: LoopName = "auto"
    #: listen() backlog.
    backlog: int = 2048
    #: Largest request body accepted, in bytes; a larger one gets 413. None: no limit.
    max_body_size: int | None = 10 * _MIB
    #: Largest request head (request line and headers), in bytes; larger gets 431.
    max_head_size: int = 32 * _KIB
    #: Longest request target (path and query), in bytes; longer gets 414.
    max_url_size: int = 8 * _KIB
    #: Seconds from the first byte of a request head to its end; slower gets 408.
    header_timeout: float = 10.0
    #: Seconds a connection may sit without a request (from connect or the last
    #: response) before it is closed. Longer than the 60 s idle timeout of common
    #: load balancers (nginx upstream keepalive, AWS ALB), so that the balancer,
    #: not the server, closes idle pooled connections and never races a request
    #: against our close.
    keep_alive_timeout: float = 75.0
    #: Seconds the server waits for the next piece of a request body while it
    #: needs one (the handler reads, or the rest is being discarded); slower gets
    #: 408 if no response has started, else the connection closes.
    body_timeout: float = 30.0
    #: Seconds a response write may make no progress (the client is not
    #: reading) before the connection is aborted and a streamed body closed.
    send_timeout: float = 30.0
    #: Seconds a handler may take to produce its response head, not counting
    #: waits for request body bytes; past it the handler is cancelled and the
    #: answer is 504 (or a close if the head already went out). None: no limit.
    handler_timeout: float | None = None
    #: Open connections at most; a newcomer past it gets 503 and is closed.
    max_connections: int | None = 10_000
    #: Requests handled at once across all connections; past it a request is
    #: answered 503 at once (not queued) and the connection stays open. None: no limit.
    max_concurrency: int | None = None
    #: Seconds sent in the Retry-After header of a 503 for max_concurrency;
    #: None leaves the header out.
    retry_after: int | None = 1
    #: Accept obsolete line folding and bare LF line endings in request heads
    #: (RFC 9112 5.2, 2.2) for legacy clients; by default both get 400, since
    #: behind a proxy that reads them differently they are request smuggling shapes.
    lenient_framing: bool = False
    #: Seconds in-flight requests get to finish at shutdown before they are cancelled.
    graceful_timeout: float = 30.0
    #: Show tracebacks in 500 answers.
    debug: bool = False
    #: Value of the Server header; "" leaves the header out.
    server_header: str = "aserve"
    #: Send a Date header (computed at most once a second).
    date_header: bool = True
    #: Log one line per request on the "aserve.access" logger.
    access_log: bool = False
    #: The access log's lines: "combined" (Combined Log Format and the
    #: duration), "json", or a template of {fields} (see aserve/accesslog.py).
    access_log_format: str = "combined"
    #: Answer Prometheus metrics on this path, before the application
    #: ("/metrics"); None: off. With workers, the numbers of all of them.
    metrics_path: str | None = None
    #: A listener of its own for the metrics (on metrics_path, or /metrics)
    #: and the status page, so that they need not be public; None: none.
    metrics_port: int | None = None
    #: The metrics listener's interface; None: the same as host.
    metrics_host: str | None = None
    #: Answer a live status page on this path ("/status"), before the
    #: application, and on the metrics listener; ?format=json for its data.
    status_path: str | None = None
    #: HTTPS: the certificate chain (PEM). With it the listener speaks TLS only.
    ssl_certfile: str | None = None
    #: HTTPS: the private key (PEM); None when it is in ssl_certfile.
    ssl_keyfile: str | None = None
    #: Password of an encrypted ssl_keyfile.
    ssl_keyfile_password: str | None = None
    #: CA certificates (PEM) that client certificates are verified against.
    ssl_ca_certs: str | None = None
    #: Client certificates: "none" (not asked), "optional" (verified when
    #: given) or "required" (a handshake without one fails).
    ssl_cert_reqs: CertReqs = "none"
    #: OpenSSL cipher list for TLS 1.2; None keeps OpenSSL's secure defaults.
    ssl_ciphers: str | None = None
    #: An SSLContext made by the program; it wins over the ssl_* files.
    ssl: _ssl.SSLContext | None = None
    #: Take client address, scheme and host from Forwarded / X-Forwarded-*
    #: headers of requests whose peer is in forwarded_allow_ips.
    proxy_headers: bool = False
    #: Trusted proxies: comma-separated addresses and networks (CIDR), "*" for
    #: any. Unix socket peers are always local and trusted.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    #: Every connection starts with a PROXY protocol (v1 or v2) header from a
    #: trusted proxy; the source it announces is the client.
    proxy_protocol: bool = False
    #: The path prefix a proxy serves this application under ("/api"):
    #: request.root_path, ASGI root_path, WSGI SCRIPT_NAME.
    root_path: str = ""
    #: WebSockets: "auto" serves them when wsproto is installed, "wsproto"
    #: requires it (start-up fails without), "none" never upgrades a
    #: connection (an upgrade request is answered as plain HTTP).
    ws: WSName = "auto"
    #: Largest WebSocket message, in bytes (after inflating); larger closes with 1009.
    ws_max_size: int = 16 * _MIB
    #: Unread WebSocket messages held per connection before reading pauses.
    ws_max_queue: int = 32
    #: Seconds of silence from a WebSocket client before the server pings it;
    #: None: never.
    ws_ping_interval: float | None = 20.0
    #: Seconds a pinged WebSocket client gets to answer before it is closed
    #: (1011); None: no limit.
    ws_ping_timeout: float | None = 20.0
    #: Offer WebSocket compression (permessage-deflate, RFC 7692) to clients that ask.
    ws_per_message_deflate: bool = True
    #: Worker processes; above 1 a supervisor binds once and runs them.
    workers: int = 1
    #: Give each worker its own SO_REUSEPORT socket on the same port (Linux
    #: spreads connections evenly); TCP only.
    reuse_port: bool = False
    #: Recycle a worker after this many requests (plus a random jitter); None: never.
    max_requests: int | None = None
    #: Up to this many requests are added at random to max_requests per
    #: worker, so that workers do not all recycle at once.
    max_requests_jitter: int = 0
    #: Seconds a worker's event loop may stop answering the supervisor's
    #: heartbeat before the worker is killed and replaced.
    worker_timeout: float = 30.0

    @classmethod
    def build(cls, **options: Any) -> Config:
        """Make a Config from keyword options, validating every value."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        config = cls(**options)
        config.validate()
        return config

    @property
    def where(self) -> str:
        """Where the settings say to listen, for messages: a Unix socket's path,
        ``fd N`` or ``host:port``."""
        if self.uds is not None:
            return self.uds
        if self.fd is not None:
            return f"fd {self.fd}"
        return f"{self.host}:{self.port}"

    def replace(self, **options: Any) -> Config:
        """A copy with some settings changed, validated like `build`."""
        merged = {f.name: getattr(self, f.name) for f in fields(self)}
        merged.update(options)
        return Config.build(**merged)

    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, not {self.port}")
        if self.uds is not None and self.fd is not None:
            raise ConfigError("uds and fd cannot both be given")
        if self.fd is not None and self.fd < 0:
            raise ConfigError(f"fd must be 0 or more, not {self.fd}")
        if self.backlog < 1:
            raise ConfigError(f"backlog must be at least 1, not {self.backlog}")
        if not self.host.strip():
            # An empty host would bind every interface: say so instead of doing it.
            raise ConfigError("host must not be empty (use 0.0.0.0 to listen on all interfaces)")
        if self.max_connections is not None and self.max_connections < 1:
            # 0 would answer every connection with 503.
            raise ConfigError(f"max_connections must be at least 1, not {self.max_connections}")
        for name in ("max_body_size", "retry_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be 0 or more, not {value}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, not {self.max_concurrency}")
        for name in ("max_head_size", "max_url_size"):
            if getattr(self, name) < 256:
                raise ConfigError(f"{name} must be at least 256 bytes, not {getattr(self, name)}")
        for name in (
            "header_timeout",
            "body_timeout",
            "send_timeout",
            "handler_timeout",
            "keep_alive_timeout",
            "graceful_timeout",
        ):
            value = getattr(self, name)
            if value is not None and not (0 < value < math.inf):
                raise ConfigError(f"{name} must be a finite number of seconds above 0, not {value}")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError("ssl_keyfile needs ssl_certfile")
        if self.ssl_certfile is None and self.ssl is None:
            for name in ("ssl_keyfile_password", "ssl_ca_certs", "ssl_ciphers"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} needs ssl_certfile (HTTPS is off without it)")
        if self.ssl_cert_reqs != "none" and self.ssl_ca_certs is None and self.ssl is None:
            raise ConfigError(
                f"ssl_cert_reqs={self.ssl_cert_reqs!r} needs ssl_ca_certs to verify clients with"
            )
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ConfigError(
                f"root_path must start with '/' and not end with one, not {self.root_path!r}"
            )
        if self.ws_max_size < 1:
            raise ConfigError(f"ws_max_size must be at least 1 byte, not {self.ws_max_size}")
        if self.ws_max_queue < 1:
            raise ConfigError(f"ws_max_queue must be at least 1, not {self.ws_max_queue}")
        for name in ("ws_ping_interval", "ws_ping_timeout"):
            value = getattr(self, name)
            if value is not None and not (0 < value < math.inf):
                raise ConfigError(f"{name} must be a finite number of seconds above 0, not {value}")
        if self.ws == "wsproto":
            from .wsconnection import available  # sans-IO; imports wsproto, if it is there

            if not available():
                raise ConfigError(
                    "ws='wsproto' but wsproto is not installed: pip install 'aserve[ws]'"
                )
        from .proxy import TrustedPeers  # sans-IO; parses the list or says what is wrong

        TrustedPeers(self.forwarded_allow_ips)
        for name, example in (("metrics_path", "/metrics"), ("status_path", "/status")):
            path = getattr(self, name)
            if path is not None and (
                not path.startswith("/") or any(c.isspace() or ord(c) > 126 for c in path)
            ):
                raise ConfigError(f"{name} must be a path such as {example}, not {path!r}")
        if self.metrics_path is not None and self.metrics_path == self.status_path:
            raise ConfigError(f"metrics_path and status_path are both {self.metrics_path!r}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be between 0 and 65535, not {self.metrics_port}")
        if self.metrics_host is not None and self.metrics_port is None:
            raise ConfigError("metrics_host needs metrics_port (the listener it binds)")
        if self.metrics_host == "":
            raise ConfigError("metrics_host must not be empty")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, not {self.workers}")
        if self.reuse_port and (self.uds is not None or self.fd is not None):
            raise ConfigError("reuse_port works with host and port only, not with uds or fd")
        if self.max_requests is not None and self.max_requests < 1:
            raise ConfigError(f"max_requests must be at least 1, not {self.max_requests}")
        if self.max_requests_jitter < 0:
            raise ConfigError(
                f"max_requests_jitter must be 0 or more, not {self.max_requests_jitter}"
            )
        if not 0 < self.worker_timeout < math.inf:
            raise ConfigError(
                "worker_timeout must be a finite number of seconds above 0, "
                f"not {self.worker_timeout}"
            )
        if "\r" in self.server_header or "\n" in self.server_header:
            raise ConfigError("server_header must not contain line breaks")
        try:
            self.server_header.encode("latin-1")
        except UnicodeEncodeError:
            raise ConfigError("server_header must be latin-1 text") from None


def _check_type(name: str, value: Any, hint: Any) -> None:
    if _matches(value, hint):
        return
    raise ConfigError(f"{name} must be {_describe(hint)}, not {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def config_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The Config fields, in declaration order (the CLI builds its options from them)."""
    return fields(Config)
