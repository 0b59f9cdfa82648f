"""Responses a handler returns. A response renders; it never writes.

`Response` holds a status, a list of ``(lowercase name, value)`` header byte
pairs (checked when set, see `aserve.headers`) and either a body in hand
(`body`) or, for `StreamingResponse`, an async iterator of chunks
(`body_iterator`). The connection engine reads those and does the writing, with
backpressure. `Content-Length` is added for a body in hand, except where the
status forbids a body (1xx, 204, 304).

`EventSourceResponse` streams server-sent events (the ``text/event-stream``
format of the HTML standard) and writes a comment line when no event came for
`ping_interval` seconds, so that proxies and browsers keep the stream open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, formatdate
from http.cookies import SimpleCookie
from typing import Any, ClassVar, Literal
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

    @classmethod
    def from_parts(cls, status: int, raw_headers: RawHeaders, body: bytes) -> Response:
        """A response from parts already checked and complete (the ASGI and
        WSGI adapters validate an app's headers themselves): no header checks,
        no content-length added."""
        response = cls.__new__(cls)
        response.status_code = status
        response.raw_headers = raw_headers
        response.body = body
        return response

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
    def status(self) -> int:
        """The same as `status_code`: the constructor's keyword, as an attribute."""
        return self.status_code

    @status.setter
    def status(self, value: int) -> None:
        self.status_code = value

    @property
    def headers(self) -> MutableHeaders:
        """The headers, as a case-insensitive mapping that can be changed in place."""
        return MutableHeaders(self.raw_headers)

    def set_cookie(
        self,
        key: str,
        value: str = "",
        *,
        max_age: int | None = None,
        expires: datetime | int | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header. `expires` is a datetime or seconds from now.

        A name that is not a cookie token raises ValueError; a value with
        characters a cookie cannot carry raw is quoted.
        """
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie[key] = value
        except Exception as exc:  # http.cookies.CookieError
            raise ValueError(f"invalid cookie name {key!r}") from exc
        morsel = cookie[key]
        if max_age is not None:
            morsel["max-age"] = str(max_age)
        if expires is not None:
            if isinstance(expires, datetime):
                morsel["expires"] = format_datetime(expires, usegmt=True)
            else:
                morsel["expires"] = formatdate(time.time() + expires, usegmt=True)
        if path is not None:
            morsel["path"] = path
        if domain is not None:
            morsel["domain"] = domain
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite is not None:
            if samesite.lower() not in ("lax", "strict", "none"):
                raise ValueError("samesite must be 'lax', 'strict' or 'none'")
            morsel["samesite"] = samesite.capitalize()
        self.headers.append("set-cookie", morsel.OutputString())

    def delete_cookie(
        self,
        key: str,
        *,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: Literal["lax", "strict", "none"] | None = "lax",
    ) -> None:
        """Tell the client to drop cookie `key` (same `path` and `domain` as it was set with)."""
        self.set_cookie(
            key,
            max_age=0,
            expires=0,
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
        )

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
        return dump_json(content)


def dump_json(content: Any) -> bytes:
    """`content` as compact UTF-8 JSON; orjson when installed, else the json module."""
    if _orjson is not None:
        try:
            return bytes(_orjson.dumps(content))
        except TypeError:
            pass  # types orjson refuses (subclassed ints, say): let json try
    return _JSON_ENCODER.encode(content).encode("utf-8")


# Built once: json.dumps with any non-default option builds a new encoder per call,
# which costs more than encoding a small object does.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


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

    @classmethod
    def from_stream(
        cls, status: int, raw_headers: RawHeaders, body_iterator: AsyncIterator[Chunk]
    ) -> StreamingResponse:
        """A streamed response from checked parts (see `Response.from_parts`)."""
        response = cls.__new__(cls)
        response.status_code = status
        response.raw_headers = raw_headers
        response.body = b""
        response.body_iterator = body_iterator
        return response

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


@dataclass(slots=True)
class ServerSentEvent:
    """One server-sent event. `data` that is not str is sent as JSON.

    A multi-line `data` becomes one ``data:`` line per line, as the format wants.
    """

    data: Any = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None

    def encode(self) -> bytes:
        lines: list[str] = []
        if self.comment is not None:
            lines.extend(f": {line}" for line in self.comment.splitlines() or [""])
        for name, field in (("event", self.event), ("id", self.id)):
            if field is not None:
                if "\r" in field or "\n" in field or (name == "id" and "\0" in field):
                    raise ValueError(f"event {name} cannot contain a line break")
                lines.append(f"{name}: {field}")
        if self.retry is not None:
            lines.append(f"retry: {int(self.retry)}")
        data = self.data
        if data is not None:
            if not isinstance(data, str):
                data = dump_json(data).decode("utf-8")
            lines.extend(f"data: {line}" for line in data.splitlines() or [""])
        return ("\n".join(lines) + "\n\n").encode("utf-8")


EventLike = ServerSentEvent | str | dict[str, Any] | bytes


def _encode_event(item: EventLike) -> bytes:
    if isinstance(item, ServerSentEvent):
        return item.encode()
    if isinstance(item, bytes):
        return item  # already in the wire format
    if isinstance(item, dict):
        return ServerSentEvent(**item).encode()
    return ServerSentEvent(data=item).encode()


class EventSourceResponse(StreamingResponse):
    """Server-sent events from an async iterable of `ServerSentEvent`, str or dict.

    A str is the data of one event; a dict the fields of `ServerSentEvent`.
    Without an event for `ping_interval` seconds a ``: ping`` comment goes
    out (None: never). When the client goes away the iterable is closed.
    """

    __slots__ = ()
    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterable[EventLike] | Iterable[EventLike],
        *,
        ping_interval: float | None = 15.0,
        status: int = 200,
        headers: HeadersInput = None,
    ) -> None:
        if isinstance(content, AsyncIterable):
            events: AsyncIterator[Any] = aiter(content)
        else:
            events = _iterate_in_thread(content)  # type: ignore[arg-type]
        super().__init__(_event_stream(events, ping_interval), status=status, headers=headers)
        raw = self.raw_headers
        # Events are never stored by caches (no-cache without a validator would
        # be a contradiction); buffering proxies (nginx) would hold them back.
        if not _has(raw, b"cache-control"):
            raw.append((b"cache-control", b"no-store"))
        if not _has(raw, b"x-accel-buffering"):
            raw.append((b"x-accel-buffering", b"no"))


_PING = b": ping\n\n"


async def _event_stream(
    events: AsyncIterator[EventLike], ping_interval: float | None
) -> AsyncIterator[bytes]:
    if ping_interval is None:
        try:
            async for item in events:
                yield _encode_event(item)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        return
    # Waiting for the next event with a timeout must not cancel the producer
    # (that would end it), so its next step runs as a task that is waited on
    # and, on timeout, simply waited on again after the ping.
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait((pending,), timeout=ping_interval)
            if not done:
                yield _PING
                continue
            step, pending = pending, None
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield _encode_event(item)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
