"""The request a handler receives.

A `Request` is a thin, lazy view over the parsed h11 head: nothing is decoded
until a handler asks for it, and each decoded value is kept. The body is read
through the `BodyStream` the connection feeds (`stream()`, `body()`, `text()`,
`json()`, `form()`); a request without a body has none and reads as `b""` at once.

Malformed input never surfaces as a crash: a path or query that is not UTF-8
after percent-decoding, a bad Host header, a body that is not the JSON, text or
form it claims to be -- each raises an `HTTPException` subclass (400, or 413
past a limit) with a short reason, which becomes the answer.

Mounting (`App.mount`) does not copy the request: it extends `root_path`, and a
mounted handler routes on `route_path`, the part of `path` below its mount.

This module knows nothing of sockets or of the event loop beyond awaiting the
body stream; `Request` objects can be built in tests from bytes alone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from .datastructures import URL, QueryParams, State, check_host, parse_cookies, parse_query
from .errors import BadRequest, BadRequestBody
from .flow import BodyStream
from .forms import FormData, FormLimits, parse_form
from .headers import Headers

if TYPE_CHECKING:
    from .app import App


class Peer(Protocol):
    """What a request can ask of its connection."""

    @property
    def disconnected(self) -> bool: ...
    @property
    def server_address(self) -> tuple[str, int] | None: ...
    def on_disconnect(self, callback: Callable[[], object]) -> None: ...


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
        #: The mount prefix this request was routed through ("" at the top).
        self.root_path = ""
        #: The innermost `App` that routed this request, if any.
        self.app: App | None = None

    # -- head -------------------------------------------------------------

    @property
    def method(self) -> str:
        return self._method.decode("ascii")

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
        """`path` below the mount prefix (`root_path`): what a mounted handler routes on."""
        root = self.root_path
        if not root:
            return self.path
        return self.path[len(root) :] or "/"

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
        """The full URL: scheme, Host header (checked), and the target as sent."""
        target = self._target.decode("latin-1")
        if target.startswith(("http://", "https://")):
            return URL(target)  # absolute-form (RFC 9112 3.2.2), as sent to proxies
        host = check_host(self.headers.get("host", "")) or "localhost"
        if not target.startswith("/"):
            target = "/" + target if target != "*" else ""
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


def _charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip().strip('"')
    return None
