"""The command line: argv and environment -> Config and a handler -> a running server.

``aserve`` alone serves the current directory (``--directory``) with
`StaticFiles`, listing on; ``aserve module:attribute`` imports an application
and serves it, whether it is an aserve App or handler, an ASGI app or a WSGI
app (detected by `aserve.asgi.detect_interface`; ``--interface`` forces it).

Settings come from three places, the later winning: each `Config` field's
default, an ``ASERVE_<FIELD>`` environment variable, and the option of the
same name (``--keep-alive-timeout`` for ``keep_alive_timeout``). The options
are derived from the Config fields, so the CLI keeps no second list of
settings; the handful that are not server settings (``--directory``,
``--app-dir``, ``--factory``, ``--interface``, ``--lifespan``,
``--log-level``) take environment variables the same way.

Errors a user can fix by changing a value (an unknown option, a bad number, a
target that does not import, a missing directory, a port in use) print one
line, ``aserve: error: ...``, and exit with status 2 (1 for a failure to
listen). Never a traceback: those are kept for exceptions raised by the
application's own code while it is imported or started.

The server runs here rather than through `aserve.run`, so that the start line
can be printed once the socket is bound (with port 0 it shows the real port).
Signals are handled as `run` does: SIGINT or SIGTERM shuts down gracefully, a
second one forces it; the exit status is then 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import inspect
import logging
import os
import re
import socket
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from . import __version__
from . import server as server_module
from .config import Config, config_fields
from .errors import ConfigError, ListenError
from .exchange import Handler
from .server import Server, new_event_loop_factory

logger = logging.getLogger("aserve.error")

ENV_PREFIX = "ASERVE_"

_HELP = {
    "host": "interface to bind (default: %(default)s)",
    "port": "TCP port, 0 for any free one (default: %(default)s)",
    "uds": "listen on this Unix domain socket instead of host and port",
    "fd": "listen on this already bound socket, given by file descriptor",
    "loop": "event loop (default: %(default)s: uvloop when installed)",
    "backlog": "listen() backlog (default: %(default)s)",
    "max_body_size": "largest request body in bytes, 'none' for no limit (default: %(default)s)",
    "max_head_size": "largest request head in bytes (default: %(default)s)",
    "max_url_size": "longest request target in bytes (default: %(default)s)",
    "header_timeout": "seconds allowed to send a request head (default: %(default)s)",
    "keep_alive_timeout": "seconds an idle connection stays open (default: %(default)s)",
    "body_timeout": "seconds to wait for more of a request body (default: %(default)s)",
    "send_timeout": "seconds a response write may stall before a close (default: %(default)s)",
    "handler_timeout": "seconds a handler gets to answer, then 504; 'none' for no limit "
    "(default: %(default)s)",
    "max_connections": "open connections at most, 'none' for no limit (default: %(default)s)",
    "max_concurrency": "requests handled at once, past it 503; 'none' for no limit "
    "(default: %(default)s)",
    "retry_after": "Retry-After seconds of a max-concurrency 503, 'none' to omit "
    "(default: %(default)s)",
    "lenient_framing": "accept obs-fold and bare LF line endings in request heads (default: off)",
    "graceful_timeout": "seconds in-flight requests get at shutdown (default: %(default)s)",
    "debug": "show tracebacks in 500 answers",
    "server_header": "value of the Server header, '' for none (default: %(default)s)",
    "date_header": "send a Date header (default: on)",
    "access_log": "log one line per request (default: off)",
    "ssl_certfile": "certificate chain (PEM): serve HTTPS",
    "ssl_keyfile": "private key (PEM), when it is not in --ssl-certfile",
    "ssl_keyfile_password": "password of an encrypted --ssl-keyfile",
    "ssl_ca_certs": "CA certificates (PEM) to verify client certificates with",
    "ssl_cert_reqs": "ask clients for a certificate (default: %(default)s)",
    "ssl_ciphers": "OpenSSL cipher list for TLS 1.2 (default: OpenSSL's)",
    "proxy_headers": "trust Forwarded / X-Forwarded-* from --forwarded-allow-ips (default: off)",
    "forwarded_allow_ips": "trusted proxies: addresses and CIDR networks, comma-separated, "
    "'*' for all (default: %(default)s)",
    "proxy_protocol": "read a PROXY protocol v1/v2 header on every connection, "
    "from --forwarded-allow-ips only (default: off)",
    "root_path": "path prefix the proxy serves the app under, e.g. /api (default: none)",
    "workers": "worker processes (default: %(default)s)",
    "reuse_port": "a SO_REUSEPORT socket per worker (default: off)",
    "max_requests": "recycle a worker after N requests, 'none' for never (default: %(default)s)",
    "max_requests_jitter": "add up to N at random to --max-requests (default: %(default)s)",
    "worker_timeout": "seconds a worker may stop answering before it is replaced "
    "(default: %(default)s)",
}

# Config fields that only a program can set (not text on a command line).
_NOT_OPTIONS = frozenset({"ssl"})

# Which help section each Config field is listed under; a field not named here
# (a new one) goes under "server".
_GROUPS = {
    "host": "socket",
    "port": "socket",
    "uds": "socket",
    "fd": "socket",
    "backlog": "socket",
    "loop": "socket",
    "max_body_size": "limits",
    "max_head_size": "limits",
    "max_url_size": "limits",
    "header_timeout": "limits",
    "body_timeout": "limits",
    "send_timeout": "limits",
    "handler_timeout": "limits",
    "keep_alive_timeout": "limits",
    "max_connections": "limits",
    "max_concurrency": "limits",
    "retry_after": "limits",
    "lenient_framing": "limits",
    "graceful_timeout": "limits",
    "ssl_certfile": "https",
    "ssl_keyfile": "https",
    "ssl_keyfile_password": "https",
    "ssl_ca_certs": "https",
    "ssl_cert_reqs": "https",
    "ssl_ciphers": "https",
    "proxy_headers": "proxy",
    "forwarded_allow_ips": "proxy",
    "proxy_protocol": "proxy",
    "root_path": "proxy",
    "workers": "workers",
    "reuse_port": "workers",
    "max_requests": "workers",
    "max_requests_jitter": "workers",
    "worker_timeout": "workers",
}

_EPILOG = """\
examples:
  aserve                          serve the current directory on http://127.0.0.1:8000
  aserve -d public --port 8080    serve ./public on port 8080
  aserve myapp:app                serve an aserve App, ASGI app or WSGI app
  aserve myapp:create_app --factory
                                  call create_app() and serve what it returns

Every option can also be set in the environment as ASERVE_<OPTION>, e.g.
ASERVE_PORT=8080 or ASERVE_ACCESS_LOG=1; an option on the command line wins.
"""

_TARGET_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*(\(\))?")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

Converter = Callable[[str], Any]


class UsageError(Exception):
    """A value the user gave is wrong; the message is the one line to show."""


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"aserve: error: {message} (see aserve --help)\n")


# --------------------------------------------------------------------------- options


def _value_parser(name: str, hint: Any) -> Converter:
    """A converter for an int / float / str field, optional ones taking 'none'."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint

    def parse(text: str) -> Any:
        if optional and text.strip().lower() in ("none", ""):
            return None
        try:
            if base is int:
                return int(text)
            if base is float:
                return float(text)
        except ValueError:
            expected = "an integer" if base is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        return text

    parse.__name__ = name
    return parse


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected 1/0, true/false, yes/no or on/off, got {text!r}")


def _choice(choices: Sequence[str]) -> Converter:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Converter]]:
    """The parser, and for each option's destination the converter that reads
    the same setting from the environment."""
    parser = _Parser(
        prog="aserve",
        usage="aserve [TARGET] [options]",
        description=(
            "Serve a directory, or an application, over HTTP/1.1.\n"
            "Without TARGET, serve --directory (the current one by default) with a file listing."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env: dict[str, Converter] = {}
    parser.add_argument(
        "target",
        nargs="?",
        metavar="TARGET",
        help="module:attribute of an aserve App or handler, an ASGI app or a WSGI app",
    )
    parser.add_argument("--version", action="version", version=f"aserve {__version__}")

    app = parser.add_argument_group("what to serve")
    app.add_argument(
        "-d",
        "--directory",
        default=".",
        metavar="DIR",
        help="folder to serve when there is no TARGET (default: the current one)",
    )
    app.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="folder put first on the import path for TARGET (default: the current one)",
    )
    app.add_argument(
        "--factory",
        action="store_true",
        default=False,
        help="TARGET is a function that returns the application: call it",
    )
    interfaces = ["auto", "native", "asgi", "wsgi"]
    app.add_argument(
        "--interface",
        default="auto",
        choices=interfaces,
        help="how TARGET is called (default: auto, detected from its signature)",
    )
    lifespans = ["auto", "on", "off"]
    app.add_argument(
        "--lifespan",
        default="auto",
        choices=lifespans,
        help="run an ASGI app's lifespan start-up and shutdown (default: %(default)s)",
    )
    app.add_argument(
        "--threads",
        default=None,
        type=_threads,
        metavar="N",
        help="worker threads for a WSGI app (default: 10)",
    )
    env.update(
        directory=str,
        app_dir=str,
        factory=_parse_bool,
        interface=_choice(interfaces),
        lifespan=_choice(lifespans),
        threads=_threads,
    )

    groups = {
        "socket": parser.add_argument_group("socket"),
        "limits": parser.add_argument_group("limits and timeouts"),
        "server": parser.add_argument_group("server"),
        "https": parser.add_argument_group("HTTPS"),
        "proxy": parser.add_argument_group("behind a proxy"),
        "workers": parser.add_argument_group("worker processes"),
    }
    log_levels = ["critical", "error", "warning", "info", "debug"]
    groups["server"].add_argument(
        "--log-level",
        default="info",
        choices=log_levels,
        help="logging level (default: %(default)s)",
    )
    env["log_level"] = _choice(log_levels)

    hints = typing.get_type_hints(Config)
    for field in config_fields():
        if field.name in _NOT_OPTIONS:
            continue
        group = groups[_GROUPS.get(field.name, "server")]
        option = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        help_text = _HELP.get(field.name, field.name.replace("_", " "))
        origin = typing.get_origin(hint)
        if hint is bool:
            group.add_argument(
                option,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=field.default,
                help=help_text,
            )
            env[field.name] = _parse_bool
        elif origin is typing.Literal:
            choices = [str(c) for c in typing.get_args(hint)]
            group.add_argument(
                option, dest=field.name, default=field.default, choices=choices, help=help_text
            )
            env[field.name] = _choice(choices)
        else:
            convert = _value_parser(field.name, hint)
            optional = origin in (typing.Union, types.UnionType)
            group.add_argument(
                option,
                dest=field.name,
                type=convert if (optional or hint in (int, float)) else str,
                default=field.default,
                metavar=_metavar(field.name, hint),
                help=help_text,
            )
            env[field.name] = convert
    return parser, env


def _metavar(name: str, hint: Any) -> str:
    args = typing.get_args(hint) or (hint,)
    if name == "uds" or name.startswith("ssl_") and name not in ("ssl_ciphers",):
        return "PATH" if name != "ssl_keyfile_password" else "PASSWORD"
    if name == "forwarded_allow_ips":
        return "IPS"
    if name == "ssl_ciphers":
        return "CIPHERS"
    if float in args:
        return "SECONDS"
    if int in args:
        return "BYTES" if name.endswith("_size") else "N"
    return name.upper()


def environment_defaults(
    converters: Mapping[str, Converter], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Option values from ``ASERVE_*`` variables; UsageError names the bad one."""
    values: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        dest = name[len(ENV_PREFIX) :].lower()
        convert = converters.get(dest)
        if convert is None:
            print(f"aserve: warning: ignoring unknown setting {name}", file=sys.stderr)
            continue
        try:
            values[dest] = convert(text)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{name}: {exc}") from None
    return values


# --------------------------------------------------------------------------- the target


def load_target(target: str, *, app_dir: str = ".", factory: bool = False) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted); with `factory`
    or a trailing ``()``, call it and return what it returns."""
    if _TARGET_RE.fullmatch(target) is None:
        raise ConfigError(f"TARGET must look like module:attribute, not {target!r}")
    module_name, _, attribute = target.partition(":")
    if attribute.endswith("()"):
        attribute = attribute[:-2]
        factory = True
    folder = os.path.abspath(app_dir)
    if not os.path.isdir(folder):
        raise ConfigError(f"--app-dir {app_dir!r} is not a directory")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ConfigError(
                f"cannot import {module_name!r}: no module named {exc.name!r} "
                f"(looked in {folder} and the import path)"
            ) from None
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if factory:
        if not callable(obj):
            raise ConfigError(f"{target} is not callable, so it cannot be a factory")
        obj = obj()
        if inspect.isawaitable(obj):
            if inspect.iscoroutine(obj):
                obj.close()
            raise ConfigError(f"{target} returned an awaitable; a factory must be a plain function")
    return obj


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1024, not {value}")
    return value


def as_handler(
    obj: Any, interface: str = "auto", lifespan: str = "auto", threads: int | None = None
) -> tuple[Handler, str]:
    """`obj` as an aserve handler, and the interface it speaks."""
    from . import asgi

    if interface == "auto":
        kind: str = asgi.detect_interface(obj)
    elif interface == "asgi":
        try:
            kind = asgi.detect_interface(obj)
        except ConfigError:
            kind = "asgi3"
        if kind not in ("asgi2", "asgi3"):
            kind = "asgi3"
    else:
        kind = interface
    handler = asgi.wrap(obj, interface=kind, lifespan=lifespan, threads=threads)  # type: ignore[arg-type]
    return typing.cast(Handler, handler), kind


def _directory_handler(directory: str) -> tuple[Handler, str]:
    from .static import StaticFiles

    static = StaticFiles(directory, listing=True)
    return static, f"directory {static.directory}"


# --------------------------------------------------------------------------- running


def address(server: Server) -> str:
    """Where `server` listens, as a URL (``http+unix://PATH`` for a Unix socket)."""
    for sock in server.sockets:
        name = sock.getsockname()
        if sock.family == getattr(socket, "AF_UNIX", None):
            path = name.decode() if isinstance(name, bytes) else name
            return f"http+unix://{path}"
        host, port = name[0], name[1]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"
    return "(no socket)"  # pragma: no cover - start() always binds one


class StartError(Exception):
    """The server could not start listening; the message is the one line to show."""


async def serve(handler: Handler, config: Config, what: str) -> None:
    """Serve until SIGINT/SIGTERM (a second forces), printing the start line
    once the socket listens and the signals are ours: whoever reads that line
    may connect, or send SIGINT, at once."""

    def started(server: Server) -> None:
        print(
            f"aserve {__version__} serving {what} on {address(server)} (press Ctrl+C to quit)",
            flush=True,
        )

    try:
        await server_module.serve(handler, config, started)
    except ListenError as exc:
        raise StartError(str(exc.args[1] if len(exc.args) > 1 else exc)) from None


def _fail(message: str, status: int = 2) -> int:
    print(f"aserve: error: {message}", file=sys.stderr, flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser, converters = build_parser()
    try:
        parser.set_defaults(**environment_defaults(converters, os.environ))
    except UsageError as exc:
        return _fail(str(exc))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Config)
        if f.name not in _NOT_OPTIONS
    }
    try:
        config = Config.build(**options)
        loop_factory = new_event_loop_factory(config.loop)
        if args.target:
            obj = load_target(args.target, app_dir=args.app_dir, factory=args.factory)
            handler, kind = as_handler(obj, args.interface, args.lifespan, args.threads)
            what = f"{args.target} ({kind})"
        else:
            handler, what = _directory_handler(args.directory)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # The application's own code failed while being imported or built:
        # its traceback is what the user needs.
        traceback.print_exc()
        return _fail(f"loading {args.target} failed: {type(exc).__name__}: {exc}", 1)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(handler, config, what))
    except StartError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:  # pragma: no cover - only where signal handlers are missing
        return 0
    except Exception as exc:
        logger.critical("server failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return _fail(f"server failed: {type(exc).__name__}: {exc}", 1)
    return 0
