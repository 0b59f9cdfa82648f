"""The command line: argv and environment -> Config and a handler -> a running server.

``aserve`` alone serves the current directory (``--directory``) with
`StaticFiles`, listing on; ``aserve module:attribute`` imports an application
and serves it, whether it is an aserve App or handler, an ASGI app or a WSGI
app (detected by `aserve.asgi.detect_interface`; ``--interface`` forces it),
or an ``http.server`` handler class (`aserve.httpserver.is_handler_class`).
``--cgi-dir`` puts CGI scripts beside either, ``--https-redirect`` and
``--hsts`` an `HTTPSRedirectMiddleware` in front (`_add_extras`).

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

With ``--workers`` above 1, ``--max-requests`` or ``--reload`` the command
hands over to `aserve.supervisor` instead, which binds the socket and forks
the workers; each worker imports TARGET itself (this process never does), so a
TARGET that does not import still gives one line and status 2, from the first
worker. ``--reload`` without TARGET serves the directory and restarts it when a
watched file changes (harmless, if of little use). Without those options the
supervisor is never imported.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import importlib
import inspect
import logging
import os
import re
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from . import server as server_module
from .accesslog import compile_format
from .config import Config, config_fields
from .errors import ConfigError, ListenError
from .exchange import Handler
from .server import Server, new_event_loop_factory
from .tls import make_context

if TYPE_CHECKING:
    from .supervisor import ReloadOptions

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
    "metrics_path": "answer Prometheus metrics on this path, e.g. /metrics, summed over "
    "every worker (default: off)",
    "metrics_port": "serve the metrics (and the status page) on a listener of their own, "
    "at this port (default: none)",
    "metrics_host": "interface of the --metrics-port listener (default: as --host)",
    "status_path": "answer a live status page on this path, e.g. /status; ?format=json "
    "for its data (default: off)",
    "access_log_format": "'combined' (with the duration), 'json', or a template such as "
    "'{client} {method} {path} {status} {duration_ms}' (default: %(default)s)",
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
    "ws": "WebSockets: auto (when wsproto is installed), wsproto (required), or none "
    "(upgrade requests are answered as plain HTTP) (default: %(default)s)",
    "ws_max_size": "largest WebSocket message in bytes; larger closes with 1009 "
    "(default: %(default)s)",
    "ws_max_queue": "unread WebSocket messages held before reading pauses (default: %(default)s)",
    "ws_ping_interval": "seconds of WebSocket silence before a ping, 'none' for never "
    "(default: %(default)s)",
    "ws_ping_timeout": "seconds a ping may go unanswered before a close (1011), 'none' for "
    "no limit (default: %(default)s)",
    "ws_per_message_deflate": "WebSocket compression (permessage-deflate) for clients that "
    "ask (default: on)",
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
    "ws": "websockets",
    "ws_max_size": "websockets",
    "ws_max_queue": "websockets",
    "ws_ping_interval": "websockets",
    "ws_ping_timeout": "websockets",
    "ws_per_message_deflate": "websockets",
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
        help="module:attribute of an aserve App or handler, an ASGI app, a WSGI app "
        "or an http.server handler class",
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
    interfaces = ["auto", "native", "asgi", "wsgi", "httpserver"]
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
        help="worker threads for a WSGI app or an http.server handler class (default: 10)",
    )
    env.update(
        directory=str,
        app_dir=str,
        factory=_parse_bool,
        interface=_choice(interfaces),
        lifespan=_choice(lifespans),
        threads=_threads,
    )

    folder = parser.add_argument_group("serving a directory (without TARGET)")
    folder.add_argument(
        "--listing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="list folders that have no index.html (default: on)",
    )
    folder.add_argument(
        "--show-hidden",
        action="store_true",
        default=False,
        help="serve and list names starting with '.' (.git, .env...), hidden by default",
    )
    folder.add_argument(
        "--cache-control",
        action="append",
        metavar="RULE",
        help="Cache-Control for every file ('public, max-age=3600'), or for some "
        "('*.html: no-cache'); repeatable (default: no-cache, immutable for fingerprinted names)",
    )
    folder.add_argument(
        "--error-page",
        dest="error_pages",
        action="append",
        metavar="STATUS=FILE",
        help="a file of the folder as the body of an error: 404=404.html (403, 404, 405, 500); "
        "repeatable",
    )
    folder.add_argument(
        "--spa",
        action="store_true",
        default=False,
        help="single-page app: a missing page gets index.html with 200 (not a missing asset)",
    )
    folder.add_argument(
        "--fallback",
        metavar="FILE",
        help="like --spa with another file than index.html",
    )
    folder.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        help="ask for this user and password (HTTP Basic); visible to ps: prefer "
        "ASERVE_AUTH or --auth-file",
    )
    folder.add_argument(
        "--auth-file",
        metavar="FILE",
        help="users and hashed passwords, one USER:HASH a line (make one with --hash-password)",
    )
    folder.add_argument(
        "--hash-password",
        metavar="USER",
        help="ask for a password, print the USER:HASH line of an --auth-file, and exit",
    )
    folder.add_argument(
        "--cors",
        action="append",
        metavar="ORIGIN",
        help="let pages of this origin fetch the files ('*' for any); repeatable",
    )
    env.update(
        listing=_parse_bool,
        show_hidden=_parse_bool,
        cache_control=lambda text: [text],
        error_pages=lambda text: [text],
        spa=_parse_bool,
        fallback=str,
        auth=str,
        auth_file=str,
        cors=lambda text: [text],
    )

    groups = {
        "socket": parser.add_argument_group("socket"),
        "limits": parser.add_argument_group("limits and timeouts"),
        "server": parser.add_argument_group("server"),
        "https": parser.add_argument_group("HTTPS"),
        "proxy": parser.add_argument_group("behind a proxy"),
        "websockets": parser.add_argument_group("WebSockets"),
        "workers": parser.add_argument_group("worker processes"),
    }
    reload = parser.add_argument_group("reload (development)")
    reload.add_argument(
        "--reload",
        action="store_true",
        default=False,
        help="run one worker and restart it when a watched file changes; a change that "
        "does not import is logged and the running worker stays",
    )
    reload.add_argument(
        "--reload-dir",
        dest="reload_dirs",
        action="append",
        metavar="DIR",
        help="folder to watch, repeatable (default: --app-dir)",
    )
    reload.add_argument(
        "--reload-include",
        dest="reload_includes",
        action="append",
        metavar="GLOB",
        help="watch files matching GLOB too, repeatable (*.py always)",
    )
    reload.add_argument(
        "--reload-exclude",
        dest="reload_excludes",
        action="append",
        metavar="GLOB",
        help="never watch files or folders matching GLOB, repeatable (never: hidden ones, "
        "__pycache__, .venv, venv, node_modules, *.pyc)",
    )
    reload.add_argument(
        "--reload-poll",
        action="store_true",
        default=False,
        help="read the files' times every 0.5 s even when watchfiles is installed "
        "(for file systems that send no change events)",
    )
    env.update(reload=_parse_bool, reload_poll=_parse_bool)

    legacy = parser.add_argument_group("CGI scripts and HTTPS redirects")
    legacy.add_argument(
        "--cgi-dir",
        metavar="[PREFIX=]DIR",
        help="run the executable scripts of DIR as CGI/1.1 under /DIR's name "
        "(or PREFIX: /scripts=DIR), with TARGET or the directory around them",
    )
    legacy.add_argument(
        "--cgi-max-processes",
        type=_threads,
        metavar="N",
        help="CGI scripts running at once, past it 503 (default: 16)",
    )
    legacy.add_argument(
        "--cgi-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="seconds a CGI script may go without writing, then it is killed: 504 (default: 30)",
    )
    legacy.add_argument(
        "--https-redirect",
        action="store_true",
        default=False,
        help="answer plain-HTTP requests with 308 to the https URL (the scheme a trusted "
        "proxy announces with --proxy-headers)",
    )
    legacy.add_argument(
        "--hsts",
        metavar="SECONDS|VALUE",
        help="Strict-Transport-Security on HTTPS answers: max-age seconds, or a whole "
        "value ('max-age=63072000; includeSubDomains')",
    )
    env.update(
        cgi_dir=str,
        cgi_max_processes=_threads,
        cgi_timeout=_seconds,
        https_redirect=_parse_bool,
        hsts=str,
    )

    log_levels = ["critical", "error", "warning", "info", "debug"]
    groups["server"].add_argument(
        "--log-level",
        default="info",
        choices=log_levels,
        help="logging level (default: %(default)s)",
    )
    env["log_level"] = _choice(log_levels)
    groups["server"].add_argument(
        "--log-config",
        metavar="FILE",
        help="logging set up from a dictConfig in JSON (or YAML with PyYAML), "
        "instead of lines on standard error",
    )
    env["log_config"] = str

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
        hint = ""
        if target.isdigit():
            hint = f": did you mean --port {target}?"
        elif os.path.isdir(target):
            hint = f": did you mean -d {target}?"
        raise ConfigError(f"TARGET must look like module:attribute, not {target!r}{hint}")
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
        needed = _required_arguments(obj)
        if needed:
            raise ConfigError(
                f"--factory calls {target}() with no arguments, but it takes "
                f"({', '.join(needed)}): it looks like the application itself; drop --factory"
            )
        obj = obj()
        if inspect.isawaitable(obj):
            if inspect.iscoroutine(obj):
                obj.close()
            raise ConfigError(f"{target} returned an awaitable; a factory must be a plain function")
    return obj


def _required_arguments(obj: Any) -> list[str]:
    """The names of the arguments `obj` cannot be called without."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        p.name
        for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty
        and (p.kind in kinds or p.kind is inspect.Parameter.KEYWORD_ONLY)
    ]


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1024, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def as_handler(
    obj: Any, interface: str = "auto", lifespan: str = "auto", threads: int | None = None
) -> tuple[Handler, str]:
    """`obj` as an aserve handler, and the interface it speaks."""
    from . import asgi
    from .httpserver import HTTPServerHandler, is_handler_class

    if is_handler_class(obj):  # asgi.detect_interface knows no classes of this kind
        if interface not in ("auto", "httpserver"):
            raise ConfigError(
                f"--interface {interface}, but {_name_of(obj)} is {_KINDS['httpserver']}: "
                "drop --interface (it is detected) or check TARGET"
            )
        served = (
            HTTPServerHandler(obj) if threads is None else HTTPServerHandler(obj, threads=threads)
        )
        return typing.cast(Handler, served), "httpserver"
    if interface == "httpserver":
        raise ConfigError(
            f"--interface httpserver, but {_name_of(obj)} is no http.server handler class "
            "(a subclass of http.server.BaseHTTPRequestHandler)"
        )
    if interface == "auto":
        kind: str = asgi.detect_interface(obj)
    else:
        try:
            detected: str | None = asgi.detect_interface(obj)
        except ConfigError:
            detected = None  # undetectable: forcing is what --interface is for
        if detected is not None and not _may_force(interface, detected, obj):
            raise ConfigError(
                f"--interface {interface}, but {_name_of(obj)} is {_KINDS[detected]}: "
                "drop --interface (it is detected) or check TARGET"
            )
        if interface == "asgi":
            kind = detected if detected in ("asgi2", "asgi3") else "asgi3"
        else:
            kind = interface
    handler = asgi.wrap(obj, interface=kind, lifespan=lifespan, threads=threads)  # type: ignore[arg-type]
    return typing.cast(Handler, handler), kind


_KINDS = {
    "native": "an aserve handler",
    "asgi2": "an ASGI 2 app",
    "asgi3": "an ASGI 3 app (scope, receive, send)",
    "wsgi": "a WSGI app (environ, start_response)",
    "httpserver": "an http.server handler class",
}


def _may_force(interface: str, detected: str, obj: Any) -> bool:
    """Whether --interface may overrule detection: only where detection could
    be wrong (a plain one-argument function is a handler or an ASGI 2 app)."""
    if interface == "wsgi":
        return detected == "wsgi"
    ambiguous = detected in ("native", "asgi2") and not inspect.iscoroutinefunction(obj)
    if interface == "asgi":
        return detected in ("asgi2", "asgi3") or ambiguous
    return detected == "native" or ambiguous  # native


def _name_of(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return str(name)


def _load_application(
    target: str, app_dir: str, factory: bool, interface: str, lifespan: str, threads: int | None
) -> tuple[Handler, str]:
    """TARGET imported and made a handler, and what it is ("myapp:app (asgi3)")."""
    obj = load_target(target, app_dir=app_dir, factory=factory)
    handler, kind = as_handler(obj, interface, lifespan, threads)
    if lifespan != "auto" and kind not in ("asgi2", "asgi3"):
        raise ConfigError(f"--lifespan is for ASGI apps; {target} is {_KINDS[kind]}")
    if threads is not None and kind not in ("wsgi", "httpserver"):
        raise ConfigError(
            f"--threads is for WSGI apps and http.server handler classes; "
            f"{target} is {_KINDS[kind]}"
        )
    return handler, f"{target} ({kind})"


#: The options that shape what a directory server does; refused with a TARGET.
DIRECTORY_OPTIONS = {
    "directory": "-d/--directory",
    "listing": "--listing/--no-listing",
    "show_hidden": "--show-hidden",
    "cache_control": "--cache-control",
    "error_pages": "--error-page",
    "spa": "--spa",
    "fallback": "--fallback",
    "auth": "--auth",
    "auth_file": "--auth-file",
    "cors": "--cors",
}


def _directory_handler(args: argparse.Namespace) -> tuple[Handler, str]:
    """The directory server the options describe: StaticFiles, behind Basic
    auth and CORS when asked. ConfigError for a value that does not work."""
    from .middleware import BasicAuthMiddleware, CORSMiddleware, CredentialCheck, basic_auth_users
    from .static import StaticFiles

    if args.spa and args.fallback:
        raise ConfigError("--spa is --fallback index.html: give one of them")
    if args.auth and args.auth_file:
        raise ConfigError("--auth and --auth-file: give one of them")
    fallback = "index.html" if args.spa else args.fallback
    static = StaticFiles(
        args.directory or ".",
        # A single-page app shows its index, not a listing, for a folder.
        listing=args.listing and fallback is None,
        hidden=args.show_hidden,
        cache_control=args.cache_control,
        error_pages=args.error_pages,
        fallback=fallback,
    )
    handler: Handler = static
    what = f"directory {static.directory}"
    check: CredentialCheck | None = None
    if args.auth:
        user, colon, password = args.auth.partition(":")
        if not colon or not user:
            raise ConfigError("--auth must be USER:PASSWORD")
        check = basic_auth_users({user: password})
    elif args.auth_file:
        from .passwords import basic_auth_file

        check = basic_auth_file(args.auth_file)
    if check is not None:
        handler = _Behind(BasicAuthMiddleware(check), handler)
        what += " (password protected)"
    if args.cors:
        methods = ["GET", "HEAD"]
        handler = _Behind(CORSMiddleware(args.cors, allow_methods=methods), handler)
    return handler, what


def _add_extras(args: argparse.Namespace, handler: Handler, what: str) -> tuple[Handler, str]:
    """`handler` with the CGI scripts of --cgi-dir beside it and the HTTPS
    redirect of --https-redirect / --hsts in front, in Apps (which start and
    stop what they mount). ConfigError for a value that does not work."""
    from .app import App
    from .routing import Mount

    if args.cgi_dir:
        from .cgi import CGIHandler

        prefix, _, folder = args.cgi_dir.rpartition("=")
        if not prefix:
            prefix = "/" + os.path.basename(os.path.realpath(folder))
        prefix = prefix.rstrip("/")
        if not prefix.startswith("/") or prefix == "/":
            raise ConfigError(f"--cgi-dir {args.cgi_dir!r}: PREFIX must be a path such as /cgi-bin")
        options: dict[str, Any] = {}
        if args.cgi_max_processes is not None:
            options["max_processes"] = args.cgi_max_processes
        if args.cgi_timeout is not None:
            options["timeout"] = args.cgi_timeout
        scripts = CGIHandler(folder, **options)
        handler = App(routes=[Mount(prefix, scripts), Mount("", handler)])
        what += f" and CGI scripts of {scripts.directory} at {prefix}"
    if args.https_redirect or args.hsts is not None:
        from .middleware import HTTPSRedirectMiddleware

        try:
            redirect = HTTPSRedirectMiddleware(redirect=args.https_redirect, hsts=args.hsts)
        except ValueError as exc:
            raise ConfigError(f"--hsts: {exc}") from None
        handler = App(middleware=[redirect], routes=[Mount("", handler)])
    return handler, what


def _with_extras(
    args: argparse.Namespace, load: Callable[[], tuple[Handler, str]]
) -> tuple[Handler, str]:
    handler, what = load()
    return _add_extras(args, handler, what)


class _Behind:
    """A handler behind one middleware, without an App."""

    __slots__ = ("middleware", "handler")

    def __init__(self, middleware: Any, handler: Handler) -> None:
        self.middleware = middleware
        self.handler = handler

    async def __call__(self, request: Any) -> Any:
        return await self.middleware(request, self.handler)


def _hash_password(user: str) -> int:
    """--hash-password: the USER:HASH line of an --auth-file, for a password
    typed twice (or one line of standard input, when it is not a terminal)."""
    import getpass

    from .passwords import hash_password

    if ":" in user or not user:
        return _fail("--hash-password USER: a user name without ':'")
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {user}: ")
        if getpass.getpass("again: ") != password:
            return _fail("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        return _fail("an empty password")
    print(f"{user}:{hash_password(password)}")
    return 0


# --------------------------------------------------------------------------- running


class StartError(Exception):
    """The server could not start listening; the message is the one line to show."""


async def serve(handler: Handler, config: Config, what: str) -> None:
    """Serve until SIGINT/SIGTERM (a second forces), printing the start line
    once the socket listens and the signals are ours: whoever reads that line
    may connect, or send SIGINT, at once."""

    def started(server: Server) -> None:
        print(server_module.start_line(server, what), flush=True)

    try:
        await server_module.serve(handler, config, started)
    except ListenError as exc:
        raise StartError(str(exc.args[1] if len(exc.args) > 1 else exc)) from None


def _reload_options(args: argparse.Namespace, config: Config) -> ReloadOptions | None:
    """What --reload watches; None without --reload. ConfigError for options
    that do not go together."""
    given = [
        option
        for option, value in (
            ("--reload-dir", args.reload_dirs),
            ("--reload-include", args.reload_includes),
            ("--reload-exclude", args.reload_excludes),
            ("--reload-poll", args.reload_poll),
        )
        if value
    ]
    if not args.reload:
        if given:
            raise ConfigError(f"{given[0]} needs --reload")
        return None
    if config.workers > 1:
        raise ConfigError(
            f"--reload runs one worker and restarts it: not with --workers {config.workers}"
        )
    from .supervisor import DEFAULT_RELOAD_EXCLUDES, DEFAULT_RELOAD_INCLUDES, ReloadOptions

    option, dirs = (
        ("--reload-dir", args.reload_dirs) if args.reload_dirs else ("--app-dir", [args.app_dir])
    )
    for folder in dirs:
        if not os.path.isdir(folder):
            raise ConfigError(f"{option} {folder!r} is not a directory")
    return ReloadOptions(
        dirs=tuple(dirs),
        includes=(*DEFAULT_RELOAD_INCLUDES, *(args.reload_includes or ())),
        excludes=(*DEFAULT_RELOAD_EXCLUDES, *(args.reload_excludes or ())),
        poll=args.reload_poll,
    )


def _supervise(args: argparse.Namespace, config: Config, reload: ReloadOptions | None) -> int:
    """Run the workers under `aserve.supervisor` until SIGINT/SIGTERM; the exit status."""
    from .supervisor import Application, Supervisor

    if args.target:
        load = functools.partial(
            _load_application,
            args.target,
            args.app_dir,
            args.factory,
            args.interface,
            args.lifespan,
            args.threads,
        )
        app = Application(functools.partial(_with_extras, args, load), args.target)
    else:
        directory = functools.partial(_directory_handler, args)
        app = Application(functools.partial(_with_extras, args, directory), "the directory")

    def started(description: str) -> None:
        print(f"aserve {__version__} serving {description} (press Ctrl+C to quit)", flush=True)

    try:
        return Supervisor(config, app, reload=reload, on_started=started).run()
    except ListenError as exc:
        return _fail(str(exc.args[1] if len(exc.args) > 1 else exc), 1)
    except KeyboardInterrupt:  # before the supervisor's signal handlers are in place
        return 130


def given_options(argv: Sequence[str] | None) -> set[str]:
    """The destinations of the options written on the command line (not
    defaults): the parser again, with every default suppressed."""
    quiet, _ = build_parser()
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return set(vars(quiet.parse_args(argv)))


def _check_combinations(args: argparse.Namespace, given: set[str]) -> None:
    """Options that say nothing in the company they are in: refused, so that
    none is silently ignored."""
    if args.target:
        for dest, option in DIRECTORY_OPTIONS.items():
            if dest in given:
                raise ConfigError(
                    f"{option} is for serving a directory (no TARGET); "
                    f"with {args.target} it would do nothing"
                )
    elif "factory" in given and args.factory:
        raise ConfigError("--factory calls TARGET to make the application, and there is no TARGET")
    elif "interface" in given or "lifespan" in given or "threads" in given:
        option = next(o for o in ("interface", "lifespan", "threads") if o in given)
        raise ConfigError(f"--{option} is about TARGET, and there is no TARGET")
    if not args.cgi_dir:
        for dest in ("cgi_max_processes", "cgi_timeout"):
            if dest in given:
                raise ConfigError(f"--{dest.replace('_', '-')} is about --cgi-dir, not given")
    for listener in ("uds", "fd"):
        if getattr(args, listener) is None:
            continue
        for dest in ("port", "host"):
            if dest in given:
                raise ConfigError(
                    f"--{dest} with --{listener}: the server listens on the "
                    f"{'Unix socket' if listener == 'uds' else 'inherited socket'} only "
                    f"(drop --{dest})"
                )


def _fail(message: str, status: int = 2) -> int:
    print(f"aserve: error: {message}", file=sys.stderr, flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser, converters = build_parser()
    try:
        from_environment = environment_defaults(converters, os.environ)
    except UsageError as exc:
        return _fail(str(exc))
    parser.set_defaults(**from_environment)
    args = parser.parse_args(argv)
    if args.hash_password is not None:
        return _hash_password(args.hash_password)
    try:
        _check_combinations(args, given_options(argv) | set(from_environment))
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        server_module.configure_logging(args.log_level.upper(), args.log_config)
    except ConfigError as exc:
        return _fail(str(exc))
    options = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Config)
        if f.name not in _NOT_OPTIONS
    }
    try:
        config = Config.build(**options)
        loop_factory = new_event_loop_factory(config.loop)
        make_context(config)  # certificate files that do not load: one line, before the app
        compile_format(config.access_log_format)
        reload = _reload_options(args, config)
    except ConfigError as exc:
        return _fail(str(exc))
    if reload is not None or config.workers > 1 or config.max_requests is not None:
        return _supervise(args, config, reload)
    try:
        if args.target:
            handler, what = _load_application(
                args.target, args.app_dir, args.factory, args.interface, args.lifespan, args.threads
            )
        else:
            handler, what = _directory_handler(args)
        handler, what = _add_extras(args, handler, what)
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
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:  # pragma: no cover - only where signal handlers are missing
        return 0
    except Exception as exc:
        logger.critical("server failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return _fail(f"server failed: {type(exc).__name__}: {exc}", 1)
    return 0
