"""The request a handler receives.

A `Request` is a thin, lazy view over the parsed h11 head: nothing is decoded
until a handler asks for it, and each decoded value is kept. The body is read
through the `BodyStream` the connection feeds (`stream()`, `body()`, `text()`,
`json()`, `form()`); a request without a body has none and reads as `b""` at once.

Malformed input never surfaces as a crash: a path or query that is not UTF-8
after percent-decoding, a bad Host header, a body that is not the JSON, text or
form it claims to be -- each raises an `HTTPException` subclass (400, or 413
past a limit) with a short reason, which becomes the answer.

Root path and mounts
--------------------
`root_path` is the prefix the request was routed through: the server's root
path (the prefix a proxy serves us under, set by the server before any handler
runs) followed by each `App.mount` prefix. Mounting does not copy the request:
it extends `root_path` while the mounted handler runs, and a mounted handler
routes on `route_path`, the part of `path` below `root_path`.

A proxy may pass the path on with its prefix (``/api/items``) or strip it first
(``/items``). Both work: when `path` starts with `root_path` (segment by
segment) the prefix is taken to be in it; when it does not, the server's root
path is taken to have been stripped before the request reached us, and the path
lies wholly below it. This is decided once per request, the first time it is
asked, so mounts below a stripped prefix route right too. (The one ambiguous
case: a stripping proxy in front of an app whose own paths start with the
prefix again, ``/api/api/...``.) `stripped_root` is the part of the root path
that was stripped ("" when none), and `url` puts it back. `split_root` gives an
adapter what the ASGI scope and the WSGI environ need: the full root path and
the rest of the path, decoded and as sent.

This module knows nothing of sockets or of the event loop beyond awaiting the
body stream; `Request` objects can be built in tests from bytes alone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import quote, unquote

from .datastructures import URL, QueryParams, State, check_host, parse_cookies, parse_query
from .errors import BadRequest, BadRequestBody
from .flow import BodyStream
from .forms import FormData, FormLimits, parse_form
from .headers import Headers

if TYPE_CHECKING:
    from .app import App
    from .tls import TLSInfo


class Peer(Protocol):
    """What a request can ask of its connection."""

    @property
    def disconnected(self) -> bool: ...
    @property
    def server_address(self) -> tuple[str, int] | None: ...
    def on_disconnect(self, callback: Callable[[], object]) -> None: ...
    @property
    def tls(self) -> TLSInfo | None: ...


class Request:
    __slots__ = (
        "_method",
        "_target",
        "_raw_headers",
        "_http_version",
        "_body_stream",
        "_peer",
        "client",
        "scheme",
        "_headers",
        "_path",
        "_body",
        "_path_params",
        "_state",
        "_query",
        "_cookies",
        "_form",
        "root_path",
        "_root_missing",
        "app",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        raw_headers: Sequence[tuple[bytes, bytes]],
        http_version: bytes = b"1.1",
        *,
        body: BodyStream | None = None,
        peer: Peer | None = None,
        client: tuple[str, int] | None = None,
        scheme: str = "http",
    ) -> None:
        self._method = method
        self._target = target
        self._raw_headers = raw_headers
        self._http_version = http_version
        self._body_stream = body
        self._peer = peer
        self.client = client
        self.scheme = scheme
        self._headers: Headers | None = None
        self._path: str | None = None
        self._body: bytes | None = None
        self._path_params: dict[str, Any] | None = None
        self._state: State | None = None
        self._query: QueryParams | None = None
        self._cookies: dict[str, str] | None = None
        self._form: FormData | None = None
        #: The prefix this request was routed through: the server's root path
        #: and the App mount prefixes ("" for none). See the module docstring.
        self.root_path = ""
        # The leading part of root_path that path lacks (a proxy stripped it);
        # None until first asked, with a root path, by route_path or split_root.
        self._root_missing: str | None = None
        #: The innermost `App` that routed this request, if any.
        self.app: App | None = None

    # -- head -------------------------------------------------------------

    @property
    def method(self) -> str:
        return self._method.decode("ascii")

    @property
    def tls(self) -> TLSInfo | None:
        """The TLS facts (version, cipher, the client's verified certificate)
        of an HTTPS request; None over plain HTTP."""
        peer = self._peer
        return peer.tls if peer is not None else None

    @property
    def http_version(self) -> str:
        return self._http_version.decode("ascii")

    @property
    def target(self) -> bytes:
        """The request target exactly as sent: path and query, still encoded."""
        return self._target

    @property
    def raw_path(self) -> bytes:
        """The path as sent, percent-encoded, without the query."""
        return self._target.partition(b"?")[0]

    @property
    def query_string(self) -> bytes:
        return self._target.partition(b"?")[2]

    @property
    def path(self) -> str:
        """The percent-decoded path; `BadRequest` (400) when that is not UTF-8."""
        path = self._path
        if path is None:
            raw = self._target.partition(b"?")[0].decode("latin-1")
            if "%" in raw:
                try:
                    raw = unquote(raw, errors="strict")
                except UnicodeDecodeError:
                    raise BadRequest("Malformed path: not UTF-8 after percent-decoding") from None
            path = self._path = raw
        return path

    @property
    def path_params(self) -> dict[str, Any]:
        """Converted path parameters of the route that matched (empty without one)."""
        # Made on first use: most requests never match a patterned route.
        if self._path_params is None:
            self._path_params = {}
        return self._path_params

    @path_params.setter
    def path_params(self, params: dict[str, Any]) -> None:
        self._path_params = params

    @property
    def route_path(self) -> str:
        """`path` below `root_path` ("/" for the root itself): what a mounted
        handler routes on."""
        root = self.root_path
        if not root:
            return self.path
        path = self.path
        missing = self._root_missing
        if missing is None:
            missing = self._missing(path, root)
        return path[len(root) - len(missing) :] or "/"

    @property
    def stripped_root(self) -> str:
        """The leading part of `root_path` that `path` lacks: the server's root
        path when the proxy in front strips it before passing the request on,
        else "". (``stripped_root + path`` is the path the client asked for.)"""
        root = self.root_path
        return self._missing(self.path, root) if root else ""

    def _missing(self, path: str, root: str) -> str:
        missing = self._root_missing
        if missing is None:
            # The first root path asked about is the one the request arrived
            # with: mounts only ever add prefixes that are in the path.
            size = len(root)
            within = path.startswith(root) and (len(path) == size or path[size] == "/")
            missing = self._root_missing = "" if within else root
        return missing

    def split_root(self, extra: str = "") -> RootSplit:
        """`root_path`, then `extra` (an adapter's own prefix, without a
        trailing slash), and the path below them, as an ASGI scope and a WSGI
        environ need them.

        `extra` counts as part of the path when the path below `root_path`
        starts with it, and as stripped before us otherwise (as a server's root
        path). ``intact`` is true when nothing was stripped: `path` is then
        the root path and the rest, and `raw_path` their form as sent.
        """
        path = self.path
        outer = self.root_path
        rest = path
        intact = True
        if outer:
            missing = self._missing(path, outer)
            rest = path[len(outer) - len(missing) :]
            intact = not missing
        root = outer
        if extra:
            root = outer + extra
            if _has_prefix(rest, extra):
                rest = rest[len(extra) :]
            else:
                intact = False
        raw = self.raw_path
        present = len(path) - len(rest)  # decoded characters before `rest`
        if present:
            raw = _raw_below(raw, path[:present], rest)
        return RootSplit(root, rest, raw, intact)

    @property
    def query(self) -> QueryParams:
        """The query string as a multi-dict: ``query["a"]``, ``query.getall("a")``."""
        if self._query is None:
            self._query = QueryParams(parse_query(self.query_string))
        return self._query

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            self._cookies = {}
            for value in self.headers.getall("cookie"):
                for name, cookie in parse_cookies(value).items():
                    self._cookies.setdefault(name, cookie)
        return self._cookies

    @property
    def url(self) -> URL:
        """The full URL: scheme, Host header (checked), and the target as sent
        -- after the root path, when a proxy in front stripped it
        (`stripped_root`), so that the URL is the one the client used."""
        target = self._target.decode("latin-1")
        if target.startswith(("http://", "https://")):
            return URL(target)  # absolute-form (RFC 9112 3.2.2), as sent to proxies
        host = check_host(self.headers.get("host", "")) or "localhost"
        if not target.startswith("/"):
            target = "/" + target if target != "*" else ""
        if self.root_path:
            stripped = self.stripped_root
            if stripped:
                target = quote(stripped, safe=_PATH_SAFE) + target
        return URL(f"{self.scheme}://{host}{target}")

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            raw = self._raw_headers
            self._headers = Headers(raw if isinstance(raw, list) else list(raw))
        return self._headers

    @property
    def state(self) -> State:
        """Free space for middleware and handlers: ``state.user`` or ``state["user"]``."""
        if self._state is None:
            self._state = State()
        return self._state

    # -- body -------------------------------------------------------------

    async def stream(self) -> AsyncIterator[bytes]:
        """The body chunk by chunk, as it arrives, without holding it all."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        stream = self._body_stream
        if stream is None:
            return
        while chunk := await stream.read():
            yield chunk

    async def body(self) -> bytes:
        """The whole body (bounded by the server's `max_body_size`)."""
        if self._body is None:
            stream = self._body_stream
            self._body = b"" if stream is None else await stream.read_all()
        return self._body

    async def text(self) -> str:
        raw = await self.body()
        charset = _charset(self.headers.get("content-type", "")) or "utf-8"
        try:
            return raw.decode(charset)
        except LookupError:
            raise BadRequestBody(f"Unknown charset {charset!r}") from None
        except (UnicodeError, ValueError):
            raise BadRequestBody(f"Body is not valid {charset}") from None

    async def json(self) -> Any:
        raw = await self.body()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequestBody(f"Malformed JSON body: {exc}") from None
        except RecursionError:
            raise BadRequestBody("Malformed JSON body: nested too deeply") from None

    async def form(
        self,
        *,
        max_size: int | None = None,
        max_fields: int = 1000,
        max_files: int = 1000,
        max_field_size: int = 1024 * 1024,
        spool_size: int = 1024 * 1024,
    ) -> FormData:
        """The body as a form (urlencoded or multipart), parsed once and kept.

        Plain fields are ``str``; file fields `aserve.UploadFile` (spooled to disk
        past `spool_size` bytes). `max_size` bounds the whole form (the server's
        `max_body_size` always does), `max_field_size` one plain field; more
        than `max_fields` fields or `max_files` files is a 413 too.
        """
        if self._form is None:
            limits = FormLimits(
                max_size=max_size,
                max_fields=max_fields,
                max_files=max_files,
                max_field_size=max_field_size,
                spool_size=spool_size,
            )
            content_type = self.headers.get("content-type", "")
            self._form = await parse_form(content_type, self.stream(), limits)
        return self._form

    async def is_disconnected(self) -> bool:
        """True once the client has gone away (or closed its sending side)."""
        return self._peer is not None and self._peer.disconnected

    @property
    def disconnected(self) -> bool:
        """`is_disconnected()` for code that cannot await (callbacks, threads)."""
        return self._peer is not None and self._peer.disconnected

    def on_disconnect(self, callback: Callable[[], object]) -> None:
        """Call `callback()` once when the client goes away (at once if it has)."""
        if self._peer is not None:
            self._peer.on_disconnect(callback)

    @property
    def server(self) -> tuple[str, int] | None:
        """The local (host, port) the request arrived on; None on a Unix socket."""
        return self._peer.server_address if self._peer is not None else None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._target.decode('latin-1')!r}>"


class RootSplit(NamedTuple):
    """A request path split at its root path (`Request.split_root`)."""

    #: The whole prefix: the server's root path, mount prefixes, an adapter's own.
    root_path: str
    #: The decoded path below it: "" for the root itself, else it starts with "/".
    rest: str
    #: `rest` as sent, still percent-encoded.
    raw_rest: bytes
    #: Nothing of the root path was stripped before us: `Request.path` is
    #: ``root_path + rest`` and `Request.raw_path` its form as sent.
    intact: bool


def _has_prefix(path: str, prefix: str) -> bool:
    """Whether `path` starts with `prefix` at a segment boundary."""
    return path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")


# Characters left as they are when a decoded path must be encoded again.
_PATH_SAFE = "/:@!$&'()*+,;=~"


def _raw_below(raw: bytes, prefix: str, rest: str) -> bytes:
    """The part of the raw path `raw` below the decoded `prefix` that starts
    the path. A prefix segment holding an encoded slash (``%2F``) has no raw
    boundary of its own: then the decoded `rest` is encoded again."""
    end = -1
    for _ in range(prefix.count("/") + 1):
        end = raw.find(b"/", end + 1)
        if end < 0:
            end = len(raw)
            break
    head = raw[:end].decode("latin-1")
    if (unquote(head) if "%" in head else head) == prefix:
        return raw[end:]
    return quote(rest, safe=_PATH_SAFE).encode("ascii")


def _charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip().strip('"')
    return None
