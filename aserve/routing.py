"""Routes, mounts and the router that finds one for a method and a path.

A route path is a pattern with parameters in braces, each with an optional
converter::

    "/items"                      exact: a dict lookup, whatever the number of routes
    "/items/{item_id:int}"        item_id=42          regex  [0-9]+
    "/price/{value:float}"        value=9.5           regex  [0-9]+(?:\\.[0-9]+)?
    "/users/{name}"               name="ann"          regex  [^/]+       (the default, str)
    "/files/{rest:path}"          rest="a/b.txt"      regex  .*
    "/obj/{key:uuid}"             key=UUID(...)       regex  8-4-4-4-12 hex digits

so ``"/items/{item_id:int}"`` compiles to ``^/items/(?P<item_id>[0-9]+)$``. A
value that matches the regex but does not convert (an int past Python's digit
limit, say) is no match: 404, not 500.

Lookup, fastest first:

1. exact paths: one dict maps the path to its methods;
2. patterned paths: every pattern is joined into one alternation, so a single
   ``fullmatch`` in C finds the first candidate whatever the number of routes;
   only when that candidate does not fit (wrong method, failed conversion) are
   the patterns scanned one by one, to find a later one that does or to
   collect the methods for ``Allow``;
3. mounts, longest prefix first.

The result says which of three things happened (starlette's NONE / PARTIAL /
FULL idea): a handler was found; the path exists but not for this method (405,
with the methods for ``Allow``); nothing matched (404). HEAD is served by the
GET handler unless a route names HEAD itself; OPTIONS is left to the caller.

This module routes; it does not call handlers, catch errors or know the server.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from .request import Request
    from .response import Response

Endpoint = Callable[["Request"], Awaitable["Response"]]

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class NoMatchFound(LookupError):
    """`url_path_for` found no route of that name taking those parameters."""


class Converter:
    """How one kind of path parameter matches, converts, and is written back."""

    __slots__ = ("regex", "convert", "to_string")

    def __init__(
        self, regex: str, convert: Callable[[str], Any], to_string: Callable[[Any], str]
    ) -> None:
        self.regex = regex
        self.convert = convert
        self.to_string = to_string


def _segment(value: Any) -> str:
    text = str(value)
    if not text:
        raise ValueError("a path parameter cannot be empty")
    return quote(text, safe="")


def _int_to_string(value: Any) -> str:
    number = int(value)
    if number < 0:
        raise ValueError("an int path parameter cannot be negative")
    return str(number)


def _float_to_string(value: Any) -> str:
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError("a float path parameter must be finite and not negative")
    text = repr(number)
    if "e" in text:
        text = f"{number:f}"
    return text


CONVERTERS: dict[str, Converter] = {
    "str": Converter(r"[^/]+", str, _segment),
    "int": Converter(r"[0-9]+", int, _int_to_string),
    "float": Converter(r"[0-9]+(?:\.[0-9]+)?", float, _float_to_string),
    "path": Converter(r".*", str, lambda value: quote(str(value), safe="/")),
    "uuid": Converter(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        uuid.UUID,
        lambda value: str(uuid.UUID(str(value))),
    ),
}

_PARAM_RE = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")


class CompiledPath:
    """A route path split into its regex, its parameters and a format for building it."""

    __slots__ = ("path", "regex_source", "regex", "params", "format", "is_static")

    def __init__(self, path: str) -> None:
        if not path.startswith("/"):
            raise ValueError(f"route path {path!r} must start with '/'")
        self.path = path
        regex = ""
        fmt = ""
        params: dict[str, Converter] = {}
        end = 0
        for match in _PARAM_RE.finditer(path):
            name, kind = match.group(1), match.group(2) or "str"
            if not name.isidentifier():
                raise ValueError(f"bad parameter name {name!r} in route path {path!r}")
            if name in params:
                raise ValueError(f"parameter {name!r} repeats in route path {path!r}")
            converter = CONVERTERS.get(kind)
            if converter is None:
                raise ValueError(
                    f"unknown converter {kind!r} in route path {path!r} "
                    f"(known: {', '.join(CONVERTERS)})"
                )
            params[name] = converter
            literal = path[end : match.start()]
            regex += re.escape(literal) + f"(?P<{name}>{converter.regex})"
            fmt += literal.replace("{", "{{").replace("}", "}}") + "{" + name + "}"
            end = match.end()
        tail = path[end:]
        if "{" in tail or "}" in tail:
            raise ValueError(f"unbalanced braces in route path {path!r}")
        regex += re.escape(tail)
        fmt += tail.replace("{", "{{").replace("}", "}}")
        self.regex_source = regex
        self.regex = re.compile(regex)
        self.params = params
        self.format = fmt
        self.is_static = not params

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted parameters when `path` matches, else None."""
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return self.convert(found.groupdict())

    def convert(self, raw: dict[str, str]) -> dict[str, Any] | None:
        try:
            return {name: self.params[name].convert(value) for name, value in raw.items()}
        except ValueError:
            return None

    def build(self, params: dict[str, Any]) -> str:
        if set(params) != set(self.params):
            raise NoMatchFound(
                f"{self.path!r} takes parameters {sorted(self.params)}, not {sorted(params)}"
            )
        try:
            values = {name: self.params[name].to_string(value) for name, value in params.items()}
        except (TypeError, ValueError) as exc:
            raise NoMatchFound(f"bad parameter for {self.path!r}: {exc}") from None
        built = self.format.format(**values)
        if self.match(built) is None:
            raise NoMatchFound(f"{params!r} do not fit {self.path!r}")
        return built


class Route:
    """One path pattern, the methods it answers, its handler and its name."""

    __slots__ = ("path", "endpoint", "methods", "name", "compiled")

    def __init__(
        self, path: str, endpoint: Endpoint, methods: Iterable[str], name: str | None = None
    ) -> None:
        self.path = path
        self.endpoint = endpoint
        self.methods = tuple(dict.fromkeys(m.upper() for m in methods))
        if not self.methods:
            raise ValueError(f"route {path!r} answers no method")
        self.name = name if name is not None else getattr(endpoint, "__name__", None)
        self.compiled = CompiledPath(path)

    def __repr__(self) -> str:
        return f"Route({self.path!r}, methods={list(self.methods)}, name={self.name!r})"


class Mount:
    """A handler that serves every path under `prefix` (a sub-app, static files...)."""

    __slots__ = ("prefix", "handler", "name")

    def __init__(self, prefix: str, handler: Any, name: str | None = None) -> None:
        prefix = prefix.rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise ValueError(f"mount prefix {prefix!r} must start with '/'")
        if "{" in prefix:
            raise ValueError("a mount prefix cannot take parameters")
        self.prefix = prefix
        self.handler = handler
        self.name = name

    def matches(self, path: str) -> bool:
        prefix = self.prefix
        return not prefix or path == prefix or path.startswith(prefix + "/")

    def __repr__(self) -> str:
        return f"Mount({self.prefix or '/'!r}, {self.handler!r})"


class Methods(dict[str, Endpoint]):
    """The handlers of one path by method, and the ``Allow`` value for it."""

    __slots__ = ("allow", "explicit")

    def __init__(self) -> None:
        super().__init__()
        self.allow = ""
        self.explicit: set[str] = set()

    def add(self, route: Route) -> None:
        for method in route.methods:
            if method in self.explicit:
                joined = _join_websocket(self[method], route.endpoint)
                if joined is None:
                    raise ValueError(f"{method} {route.path} is already routed")
                self[method] = joined
                continue
            self.explicit.add(method)
            self[method] = route.endpoint
        if "GET" in self and "HEAD" not in self.explicit:
            self["HEAD"] = self["GET"]
        self.update_allow()

    def update_allow(self) -> None:
        known = [m for m in METHODS if m in self or m == "OPTIONS"]
        self.allow = ", ".join(known + sorted(m for m in self if m not in METHODS))


class _Pattern:
    """A patterned path and its handlers by method."""

    __slots__ = ("compiled", "methods", "group")

    def __init__(self, compiled: CompiledPath, group: str) -> None:
        self.compiled = compiled
        self.methods = Methods()
        self.group = group


#: What `Router.resolve` found: the handler (or None), path parameters, the
#: `Methods` of the path when it exists for other methods only, or the `Mount`.
FOUND, NOT_ALLOWED, MOUNTED, NOT_FOUND = range(4)


class Router:
    __slots__ = ("routes", "mounts", "static", "_patterns", "_by_source", "_matcher")

    def __init__(self) -> None:
        #: Every route and mount in the order added, for `url_path_for`.
        self.routes: list[Route | Mount] = []
        self.mounts: list[Mount] = []
        #: Exact paths: path -> Methods. Read directly by `App` on the hot path.
        self.static: dict[str, Methods] = {}
        self._patterns: list[_Pattern] = []
        self._by_source: dict[str, _Pattern] = {}
        self._matcher: re.Pattern[str] | None = None

    def add(self, route: Route) -> None:
        compiled = route.compiled
        if compiled.is_static:
            methods = self.static.get(route.path)
            if methods is None:
                methods = Methods()
            methods.add(route)
            self.static[route.path] = methods
        else:
            pattern = self._by_source.get(compiled.regex_source)
            if pattern is None:
                pattern = _Pattern(compiled, f"r{len(self._patterns)}")
                pattern.methods.add(route)
                self._patterns.append(pattern)
                self._by_source[compiled.regex_source] = pattern
                self._compile()
            else:
                pattern.methods.add(route)
        self.routes.append(route)

    def mount(self, mount: Mount) -> None:
        self.mounts.append(mount)
        self.mounts.sort(key=lambda m: len(m.prefix), reverse=True)
        self.routes.append(mount)

    def _compile(self) -> None:
        # One alternation of every pattern; each alternative is a named group
        # whose parameters are renamed `<group>_<name>` to stay unique. After a
        # match, `lastgroup` names the outer group of the alternative that won.
        parts = []
        for pattern in self._patterns:
            source = pattern.compiled.regex_source.replace("(?P<", f"(?P<{pattern.group}_")
            parts.append(f"(?P<{pattern.group}>{source})")
        self._matcher = re.compile("|".join(parts))

    def resolve(self, method: str, path: str) -> tuple[int, Any, dict[str, Any], Methods | None]:
        """Find what serves `method` `path`: ``(kind, handler, params, methods)``."""
        methods = self.static.get(path)
        if methods is not None:
            endpoint = methods.get(method)
            if endpoint is not None:
                return FOUND, endpoint, {}, methods
        allowed = methods
        matcher = self._matcher
        if matcher is not None:
            found = matcher.fullmatch(path)
            if found is not None:
                group = found.lastgroup or ""
                pattern = self._patterns[int(group[1:])]
                endpoint = pattern.methods.get(method)
                if endpoint is not None:
                    prefix = group + "_"
                    params = pattern.compiled.convert(
                        {name: found.group(prefix + name) for name in pattern.compiled.params}
                    )
                    if params is not None:
                        return FOUND, endpoint, params, pattern.methods
                # The first candidate does not fit: look at every pattern in turn.
                for pattern in self._patterns:
                    params = pattern.compiled.match(path)
                    if params is None:
                        continue
                    endpoint = pattern.methods.get(method)
                    if endpoint is not None:
                        return FOUND, endpoint, params, pattern.methods
                    allowed = _merge(allowed, pattern.methods)
        for mount in self.mounts:
            if mount.matches(path):
                return MOUNTED, mount, {}, None
        if allowed is not None:
            return NOT_ALLOWED, None, {}, allowed
        return NOT_FOUND, None, {}, None

    def url_path_for(self, name: str, params: dict[str, Any]) -> str:
        for entry in self.routes:
            if isinstance(entry, Route):
                if entry.name == name:
                    try:
                        return entry.compiled.build(params)
                    except NoMatchFound:
                        continue
            elif entry.name is not None and name.startswith(entry.name + ":"):
                inner = getattr(entry.handler, "url_path_for", None)
                if inner is None:
                    continue
                try:
                    path: str = inner(name[len(entry.name) + 1 :], **params)
                except NoMatchFound:
                    continue
                return entry.prefix + path
        raise NoMatchFound(f"no route named {name!r} takes parameters {sorted(params)}")


def _join_websocket(first: Any, second: Any) -> Any:
    """A WebSocket route and a plain GET route on one path: the WebSocket
    endpoint (aserve/websocket.py) answers upgrades and passes every other
    request to the plain one. None when the two are not such a pair."""
    for websocket, plain in ((first, second), (second, first)):
        if (
            getattr(websocket, "websocket", False)
            and not getattr(plain, "websocket", False)
            and websocket.fallback is None
        ):
            websocket.fallback = plain
            return websocket
    return None


def _merge(first: Methods | None, second: Methods) -> Methods:
    if first is None:
        return second
    merged = Methods()
    merged.update(first)
    merged.update(second)
    merged.update_allow()
    return merged
