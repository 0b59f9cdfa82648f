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
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal

from .errors import ConfigError

LoopName = Literal["auto", "uvloop", "asyncio"]

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
