"""Header collections: a read-only view over a request's raw header list, and a
mutable one over a response's.

Both store what goes on the wire, a list of ``(lowercase name, value)`` byte
pairs, and decode to ``str`` (latin-1, as RFC 9110 allows) only when asked, so
a handler that never looks at a header costs nothing. Names are compared
case-insensitively; a name may repeat.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping

RawHeaders = list[tuple[bytes, bytes]]

#: What an answer made by other code (a CGI script, an http.server handler
#: class) must not pass on as it is: the fields about one hop, which aserve's
#: own framing replaces, and the ones the server sends itself.
REFRAMED_FIELDS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"server",
        b"date",
    }
)
HeadersInput = Mapping[str, str] | Iterable[tuple[str, str]] | None

# RFC 9110 5.1 token characters for a name; a value must not carry CR, LF or NUL
# (the characters that would let a value split a response: header injection).
HEADER_NAME_RE = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_BAD_VALUE_RE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")


def encode_header(name: str, value: str) -> tuple[bytes, bytes]:
    """Encode and check one header pair; raise ValueError on a bad name or value."""
    raw_name = name.lower().encode("latin-1")
    raw_value = value.encode("latin-1") if isinstance(value, str) else str(value).encode("latin-1")
    if HEADER_NAME_RE.fullmatch(raw_name) is None:
        raise ValueError(f"invalid header name {name!r}")
    if _BAD_VALUE_RE.search(raw_value) is not None:
        raise ValueError(f"invalid value for header {name!r}: {value!r}")
    return raw_name, raw_value


def encode_headers(headers: HeadersInput) -> RawHeaders:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [encode_header(name, value) for name, value in items]


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive multi-dict of header values.

    ``headers["content-type"]`` gives the first value; ``getall(name)`` every
    value in order; iteration yields each distinct name once.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: RawHeaders | None = None) -> None:
        self._raw: RawHeaders = raw if raw is not None else []

    @property
    def raw(self) -> RawHeaders:
        """The ``(lowercase name, value)`` byte pairs, as on the wire."""
        return self._raw

    def __getitem__(self, name: str) -> str:
        key = name.lower().encode("latin-1")
        for raw_name, raw_value in self._raw:
            if raw_name == key:
                return raw_value.decode("latin-1")
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower().encode("latin-1")
        return any(raw_name == key for raw_name, _ in self._raw)

    def __iter__(self) -> Iterator[str]:
        seen: dict[bytes, None] = {}
        for raw_name, _ in self._raw:
            seen.setdefault(raw_name)
        return (name.decode("latin-1") for name in seen)

    def __len__(self) -> int:
        return len({raw_name for raw_name, _ in self._raw})

    def get_raw(self, name: bytes) -> bytes | None:
        """The first value of `name` (lowercase bytes) as sent, undecoded, or None."""
        for raw_name, raw_value in self._raw:
            if raw_name == name:
                return raw_value
        return None

    def getall(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self._raw if n == key]

    def multi_items(self) -> list[tuple[str, str]]:
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._raw]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return sorted(self._raw) == sorted(other._raw)
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.multi_items()!r})"


class MutableHeaders(Headers, MutableMapping[str, str]):
    """Case-insensitive headers of a response, changed in place.

    Setting a name replaces every value it had; ``append`` adds one more.
    Every name and value is checked on the way in, so nothing set here can
    split the response.
    """

    __slots__ = ()

    def __setitem__(self, name: str, value: str) -> None:
        raw_name, raw_value = encode_header(name, value)
        raw = self._raw
        index = None
        for i in range(len(raw) - 1, -1, -1):
            if raw[i][0] == raw_name:
                if index is not None:
                    del raw[index]
                index = i
        if index is None:
            raw.append((raw_name, raw_value))
        else:
            raw[index] = (raw_name, raw_value)

    def __delitem__(self, name: str) -> None:
        key = name.lower().encode("latin-1")
        before = len(self._raw)
        self._raw[:] = [pair for pair in self._raw if pair[0] != key]
        if len(self._raw) == before:
            raise KeyError(name)

    def append(self, name: str, value: str) -> None:
        self._raw.append(encode_header(name, value))

    def setdefault(self, name: str, value: str = "") -> str:
        if name in self:
            return self[name]
        self.append(name, value)
        return value
