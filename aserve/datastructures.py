"""Small value types of the handler library: a multi-dict, per-request state, a URL.

Also the two parsers of the request head that are not headers: the query
string (``a=1&b=2``, shared with ``application/x-www-form-urlencoded`` bodies)
and the ``Cookie`` header. Both are strict about encoding and lenient about
shape: a byte sequence that does not decode as UTF-8 after percent-decoding is a
`BadRequest` (400), while an empty pair (``a=1&&b=2``) or a cookie without ``=``
is skipped, as browsers do. Nothing here does IO.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import SplitResult, unquote_to_bytes, urlsplit, urlunsplit

from .errors import BadRequest

_V = TypeVar("_V")


class MultiDict(Mapping[str, _V]):
    """An immutable mapping where a key may repeat, in the order given.

    ``d[key]`` and ``d.get(key)`` give the *first* value (as in Flask);
    ``d.getall(key)`` every value; ``d.multi_items()`` every pair in order.
    """

    __slots__ = ("_items", "_first")

    def __init__(self, items: Mapping[str, _V] | Iterable[tuple[str, _V]] | None = None) -> None:
        if items is None:
            pairs: list[tuple[str, _V]] = []
        elif isinstance(items, MultiDict):
            pairs = items.multi_items()
        elif isinstance(items, Mapping):
            pairs = list(items.items())
        else:
            pairs = list(items)
        self._items = pairs
        self._first: dict[str, _V] | None = None

    def _index(self) -> dict[str, _V]:
        first = self._first
        if first is None:
            # Walk backwards so that the first occurrence of a key is the one kept.
            first = self._first = {key: value for key, value in reversed(self._items)}
        return first

    def __getitem__(self, key: str) -> _V:
        return self._index()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._index()

    def __iter__(self) -> Iterator[str]:
        seen: dict[str, None] = {}
        for key, _ in self._items:
            seen.setdefault(key)
        return iter(seen)

    def __len__(self) -> int:
        return len(self._index())

    def getall(self, key: str) -> list[_V]:
        return [value for k, value in self._items if k == key]

    def multi_items(self) -> list[tuple[str, _V]]:
        return list(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MultiDict):
            return sorted(self._items, key=_key) == sorted(other._items, key=_key)
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


def _key(pair: tuple[str, Any]) -> tuple[str, str]:
    return pair[0], repr(pair[1])


class QueryParams(MultiDict[str]):
    """The query string as a multi-dict of str (see `parse_query`)."""

    __slots__ = ()


def parse_query(
    raw: bytes, *, max_fields: int | None = None, what: str = "query string"
) -> list[tuple[str, str]]:
    """``a=1&b=x%20y&b=+z`` -> ``[("a", "1"), ("b", "x y"), ("b", " z")]``.

    ``+`` is a space; percent-escapes decode to bytes that must be UTF-8. A
    malformed escape (``%zz``) is kept as it is, as every browser does. More
    than `max_fields` pairs is a `BadRequest`.
    """
    pairs: list[tuple[str, str]] = []
    if not raw:
        return pairs
    for piece in raw.split(b"&"):
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        if max_fields is not None and len(pairs) >= max_fields:
            raise BadRequest(f"Too many fields in the {what} (more than {max_fields})")
        pairs.append((_decode_component(name, what), _decode_component(value, what)))
    return pairs


def _decode_component(raw: bytes, what: str) -> str:
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"Malformed {what}: not UTF-8 after percent-decoding") from None


def parse_cookies(header: str) -> dict[str, str]:
    """``a=1; b="two"`` -> ``{"a": "1", "b": "two"}``; the first of a repeated name wins.

    Pairs without ``=`` and empty names are skipped (browsers send odd things
    and a cookie the app does not know about must not break its requests).
    """
    cookies: dict[str, str] = {}
    for piece in header.split(";"):
        name, sep, value = piece.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, value)
    return cookies


class State:
    """Free-form attributes, also reachable as items: ``state.user`` is ``state["user"]``."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", {} if data is None else data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"state has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._data[name] = value

    def __delitem__(self, name: str) -> None:
        del self._data[name]

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def get(self, name: str, default: Any = None) -> Any:
        return self._data.get(name, default)

    def setdefault(self, name: str, default: Any = None) -> Any:
        return self._data.setdefault(name, default)

    def update(self, values: Mapping[str, Any]) -> None:
        self._data.update(values)

    def __repr__(self) -> str:
        return f"State({self._data!r})"


# A Host header: a name or an IPv4/IPv6 literal with an optional port. Anything
# else (a path, credentials, spaces) could make `request.url` point elsewhere.
_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.%a-zA-Z]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]*)(?::[0-9]*)?")


def check_host(host: str) -> str:
    if _HOST_RE.fullmatch(host) is None:
        raise BadRequest("Malformed Host header")
    return host


class URL(str):
    """A URL that is also its own string: ``request.url == "http://h/p?q"``.

    The parts are the ones of `urllib.parse.urlsplit`, still percent-encoded.
    """

    __slots__ = ()

    @property
    def components(self) -> SplitResult:
        return urlsplit(self)

    @property
    def scheme(self) -> str:
        return self.components.scheme

    @property
    def netloc(self) -> str:
        return self.components.netloc

    @property
    def hostname(self) -> str | None:
        return self.components.hostname

    @property
    def port(self) -> int | None:
        return self.components.port

    @property
    def path(self) -> str:
        return self.components.path

    @property
    def query(self) -> str:
        return self.components.query

    @property
    def fragment(self) -> str:
        return self.components.fragment

    def copy_with(self, **parts: str) -> URL:
        """A copy with some of `scheme`, `netloc`, `path`, `query`, `fragment` changed."""
        return URL(urlunsplit(self.components._replace(**parts)))

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"
