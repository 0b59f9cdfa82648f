"""Responses a handler returns. A response renders; it never writes.

`Response` holds a status, a list of ``(lowercase name, value)`` header byte
pairs (checked when set, see `aserve.headers`) and either a body in hand
(`body`) or, for `StreamingResponse`, an async iterator of chunks
(`body_iterator`). The connection engine reads those and does the writing, with
backpressure. `Content-Length` is added for a body in hand, except where the
status forbids a body (1xx, 204, 304).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from .headers import HeadersInput, MutableHeaders, RawHeaders, encode_headers

_orjson: Any
try:  # orjson is several times faster than json when the app has it installed
    import orjson as _orjson  # type: ignore[import-not-found, no-redef]
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

_CONTENT_TYPES: dict[tuple[str, str | None], bytes] = {}


def _content_type(media_type: str, charset: str | None) -> bytes:
    key = (media_type, charset)
    value = _CONTENT_TYPES.get(key)
    if value is None:
        text = media_type
        if charset and media_type.startswith("text/") and "charset=" not in media_type:
            text = f"{media_type}; charset={charset}"
        value = encode_headers([("content-type", text)])[0][1]
        if len(_CONTENT_TYPES) < 256:
            _CONTENT_TYPES[key] = value
    return value


def _has(raw: RawHeaders, name: bytes) -> bool:
    for raw_name, _ in raw:
        if raw_name == name:
            return True
    return False


class Response:
    """A response whose body is in hand: bytes, or text encoded with `charset`."""

    __slots__ = ("status_code", "body", "raw_headers")

    media_type: ClassVar[str | None] = None
    charset: ClassVar[str] = "utf-8"
    streaming: ClassVar[bool] = False

    def __init__(
        self,
        content: Any = b"",
        status: int = 200,
        headers: HeadersInput = None,
        media_type: str | None = None,
    ) -> None:
        self.status_code = status
        self.body: bytes = self.render(content)
        raw = encode_headers(headers) if headers else []
        media_type = media_type or self.media_type
        if media_type is not None and not (raw and _has(raw, b"content-type")):
            raw.append((b"content-type", _content_type(media_type, self.charset)))
        if status >= 200 and status != 204 and status != 304:
            if not (raw and _has(raw, b"content-length")):
                raw.append((b"content-length", b"%d" % len(self.body)))
        self.raw_headers: RawHeaders = raw

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode(self.charset)
        if isinstance(content, bytearray | memoryview):
            return bytes(content)
        raise TypeError(f"{type(self).__name__} content must be bytes or str, not {type(content)}")

    @property
    def headers(self) -> MutableHeaders:
        """The headers, as a case-insensitive mapping that can be changed in place."""
        return MutableHeaders(self.raw_headers)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status_code}>"


class PlainTextResponse(Response):
    __slots__ = ()
    media_type = "text/plain"


class HTMLResponse(Response):
    __slots__ = ()
    media_type = "text/html"


class JSONResponse(Response):
    """`content` serialised as compact UTF-8 JSON (orjson when it is installed)."""

    __slots__ = ()
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if _orjson is not None:
            try:
                return bytes(_orjson.dumps(content))
            except TypeError:
                pass  # types orjson refuses (subclassed ints, say): let json try
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")


class RedirectResponse(Response):
    __slots__ = ()

    def __init__(self, url: str, status: int = 307, headers: HeadersInput = None) -> None:
        super().__init__(b"", status=status, headers=headers)
        self.headers["location"] = quote(url, safe=":/%#?=@[]!$&'()*+,;")


@dataclass(frozen=True, slots=True)
class FileSegment:
    """`count` bytes of the open file `fd` from `offset`, as one body chunk.

    A streamed body may yield these between `bytes` chunks; the engine sends
    them with `os.sendfile` (zero-copy) when the socket allows it and falls
    back to reading and writing with backpressure otherwise. The file stays
    open for as long as the iterator that yields it is not closed.
    """

    fd: int
    offset: int
    count: int

    def __len__(self) -> int:
        return self.count


Chunk = bytes | str | FileSegment


class StreamingResponse(Response):
    """A body produced chunk by chunk by an async (or plain) iterable.

    Without a `content-length` header it goes out chunked to HTTP/1.1 clients
    and close-delimited to HTTP/1.0 ones. A plain iterable is advanced in a
    worker thread so that a blocking generator never stalls the loop. When the
    client goes away the iterator is closed (`aclose()`).
    """

    __slots__ = ("body_iterator",)
    streaming = True

    def __init__(
        self,
        content: AsyncIterable[Chunk] | Iterable[Chunk],
        status: int = 200,
        headers: HeadersInput = None,
        media_type: str | None = None,
    ) -> None:
        self.status_code = status
        self.body = b""
        raw = encode_headers(headers) if headers else []
        media_type = media_type or self.media_type
        if media_type is not None and not (raw and _has(raw, b"content-type")):
            raw.append((b"content-type", _content_type(media_type, self.charset)))
        self.raw_headers = raw
        if isinstance(content, AsyncIterable):
            self.body_iterator: AsyncIterator[Chunk] = aiter(content)
        elif isinstance(content, list | tuple):
            self.body_iterator = _iterate_in_memory(content)
        else:
            self.body_iterator = _iterate_in_thread(content)


async def _iterate_in_memory(chunks: Iterable[Chunk]) -> AsyncIterator[Chunk]:
    for chunk in chunks:
        yield chunk


async def _iterate_in_thread(iterable: Iterable[Chunk]) -> AsyncIterator[Chunk]:
    loop = asyncio.get_running_loop()
    iterator = iter(iterable)
    done = object()
    try:
        while True:
            chunk = await loop.run_in_executor(None, next, iterator, done)
            if chunk is done:
                return
            yield chunk  # type: ignore[misc]
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
