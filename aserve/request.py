"""The request a handler receives.

A `Request` is a thin, lazy view over the parsed h11 head: nothing is decoded
until a handler asks for it, and each decoded value is kept. The body is read
through the `BodyStream` the connection feeds (`stream()`, `body()`, `text()`,
`json()`); a request without a body has none and reads as `b""` at once.

This module knows nothing of sockets or of the event loop beyond awaiting the
body stream; `Request` objects can be built in tests from bytes alone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol
from urllib.parse import unquote

from .errors import BadRequestBody
from .flow import BodyStream
from .headers import Headers


class Peer(Protocol):
    """What a request can ask of its connection."""

    @property
    def disconnected(self) -> bool: ...


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
        "path_params",
        "_state",
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
        self.path_params: dict[str, Any] = {}
        self._state: dict[str, Any] | None = None

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
        """The percent-decoded path (UTF-8; undecodable bytes become U+FFFD)."""
        if self._path is None:
            self._path = unquote(self.raw_path.decode("latin-1"), errors="replace")
        return self._path

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            raw = self._raw_headers
            self._headers = Headers(raw if isinstance(raw, list) else list(raw))
        return self._headers

    @property
    def state(self) -> dict[str, Any]:
        """Free space for middleware and handlers to hang per-request data on."""
        if self._state is None:
            self._state = {}
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
        except UnicodeDecodeError:
            raise BadRequestBody(f"Body is not valid {charset}") from None

    async def json(self) -> Any:
        raw = await self.body()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequestBody(f"Malformed JSON body: {exc}") from None

    async def is_disconnected(self) -> bool:
        """True once the client has gone away."""
        return self._peer is not None and self._peer.disconnected

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._target.decode('latin-1')!r}>"


def _charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip().strip('"')
    return None
