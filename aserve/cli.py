"""The command line: argv -> Config -> run.

Options are derived from the `Config` fields (one option per field, same name
with dashes, same default and validation), so the CLI never keeps a second
list of settings. Bad values print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from . import __version__
from .config import Config, config_fields
from .errors import ConfigError
from .exchange import Handler
from .request import Request
from .response import HTMLResponse, Response

_HELP = {
    "host": "interface to bind (default: %(default)s)",
    "port": "TCP port, 0 for any free one (default: %(default)s)",
    "loop": "event loop: auto, uvloop or asyncio (default: %(default)s)",
    "backlog": "listen() backlog (default: %(default)s)",
    "max_body_size": "largest request body in bytes, 'none' for no limit (default: %(default)s)",
    "max_head_size": "largest request head in bytes (default: %(default)s)",
    "max_url_size": "longest request target in bytes (default: %(default)s)",
    "header_timeout": "seconds allowed to send a request head (default: %(default)s)",
    "keep_alive_timeout": "seconds an idle connection stays open (default: %(default)s)",
    "max_connections": "open connections at most, 'none' for no limit (default: %(default)s)",
    "graceful_timeout": "seconds in-flight requests get at shutdown (default: %(default)s)",
    "debug": "show tracebacks in 500 answers",
    "server_header": "value of the Server header, '' for none (default: %(default)s)",
    "date_header": "send a Date header (default: on)",
    "access_log": "log one line per request (default: off)",
}


def _parse_value(name: str, hint: Any) -> Any:
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint

    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", ""):
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aserve",
        description="Serve an aserve handler (module:attribute) over HTTP/1.1.",
    )
    parser.add_argument(
        "target",
        nargs="?",
        help="what to serve, as module:attribute (default: a welcome page)",
    )
    parser.add_argument("--version", action="version", version=f"aserve {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="logging level (default: %(default)s)",
    )
    hints = typing.get_type_hints(Config)
    for field in config_fields():
        option = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        help_text = _HELP.get(field.name)
        if hint is bool:
            parser.add_argument(
                option,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=field.default,
                help=help_text,
            )
            continue
        choices = None
        origin = typing.get_origin(hint)
        if origin is typing.Literal:
            choices = list(typing.get_args(hint))
        elif origin in (typing.Union, types.UnionType) or hint in (int, float):
            parser.add_argument(
                option,
                dest=field.name,
                type=_parse_value(field.name, hint),
                default=field.default,
                metavar=field.name.upper(),
                help=help_text,
            )
            continue
        parser.add_argument(
            option, dest=field.name, default=field.default, choices=choices, help=help_text
        )
    return parser


def load_target(target: str) -> Handler:
    """Import `module:attribute` (attribute may be dotted)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"target must look like module:attribute, not {target!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(obj):
        raise ConfigError(f"{target} is not callable, so it cannot handle requests")
    return typing.cast(Handler, obj)


async def welcome(request: Request) -> Response:
    """What `aserve` serves without a target: a page that says it works."""
    return HTMLResponse(
        "<!doctype html><title>aserve</title>"
        f"<h1>aserve {__version__} is running</h1>"
        "<p>Serve your own handler with <code>aserve module:attribute</code>; "
        "see <code>aserve --help</code>.</p>"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    try:
        config = Config.build(**options)
        handler = load_target(args.target) if args.target else welcome
    except ConfigError as exc:
        parser.exit(2, f"aserve: error: {exc}\n")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from .server import run

    what = args.target or "a welcome page"
    print(
        f"aserve {__version__} serving {what} on http://{config.host}:{config.port} "
        "(press Ctrl+C to quit)",
        flush=True,
    )
    run(handler, config)
    return 0
