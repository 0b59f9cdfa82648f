"""Form bodies: ``application/x-www-form-urlencoded`` and ``multipart/form-data``.

`parse_form` reads a request body into a `FormData` multi-dict whose values are
``str`` for plain fields and `UploadFile` for file fields. A multipart body is
parsed as it streams in (RFC 7578 over RFC 2046 framing): plain fields are kept
in memory up to `max_field_size`; a file goes into a `SpooledTemporaryFile`
that moves to disk past `spool_size` (disk writes then run in a worker thread,
so a large upload never blocks the loop). The whole body is never held.

Every malformed input is a 400 with a short reason (`BadRequestBody`), every
limit passed a 413 (`ContentTooLarge`): the form size, the number of fields or
of files, the size of one field or of one part's headers. An upload the client
abandons raises `ClientDisconnected` out of the body stream, like any read.
The files of a form are closed with ``await form.close()``; an `App` does it
after the response is sent.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from tempfile import SpooledTemporaryFile
from typing import IO

from .datastructures import MultiDict, parse_query
from .errors import BadRequest, BadRequestBody, ContentTooLarge, HTTPException
from .headers import Headers

#: Files smaller than this stay in memory; larger ones are spooled to disk.
SPOOL_SIZE = 1024 * 1024
#: Limit on the headers of one multipart part.
MAX_PART_HEADER_SIZE = 16 * 1024


class UploadFile:
    """A file field of a multipart form.

    ``filename`` is the name the client gave (never trust it as a path),
    ``content_type`` the part's type, ``size`` its length in bytes, ``headers``
    the part's headers. ``await read()`` gives the content; ``file`` is the
    underlying spooled file for code that wants a file object.
    """

    __slots__ = ("filename", "content_type", "headers", "file", "size", "_spool_size")

    def __init__(
        self,
        filename: str,
        *,
        content_type: str = "application/octet-stream",
        headers: Headers | None = None,
        file: IO[bytes] | None = None,
        spool_size: int = SPOOL_SIZE,
    ) -> None:
        self.filename = filename
        self.content_type = content_type
        self.headers = headers if headers is not None else Headers()
        self.file: IO[bytes] = (
            file if file is not None else SpooledTemporaryFile(max_size=spool_size)
        )
        self.size = 0
        self._spool_size = spool_size

    @property
    def _on_disk(self) -> bool:
        return self.size > self._spool_size

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._on_disk:
            await asyncio.to_thread(self.file.write, data)
        else:
            self.file.write(data)

    async def read(self, size: int = -1) -> bytes:
        if self._on_disk:
            return await asyncio.to_thread(self.file.read, size)
        return self.file.read(size)

    async def seek(self, offset: int) -> None:
        self.file.seek(offset)

    async def close(self) -> None:
        if self._on_disk:
            await asyncio.to_thread(self.file.close)
        else:
            self.file.close()

    def __repr__(self) -> str:
        return (
            f"UploadFile(filename={self.filename!r}, content_type={self.content_type!r}, "
            f"size={self.size})"
        )


class FormData(MultiDict["str | UploadFile"]):
    """A parsed form: plain fields are ``str``, file fields `UploadFile`."""

    __slots__ = ()

    async def close(self) -> None:
        """Close every uploaded file (their disk space is released)."""
        for _, value in self._items:
            if isinstance(value, UploadFile):
                await value.close()


class FormLimits:
    """The limits a form is parsed under; see `aserve.Request.form`."""

    __slots__ = ("max_size", "max_fields", "max_files", "max_field_size", "spool_size")

    def __init__(
        self,
        *,
        max_size: int | None = None,
        max_fields: int = 1000,
        max_files: int = 1000,
        max_field_size: int = 1024 * 1024,
        spool_size: int = SPOOL_SIZE,
    ) -> None:
        self.max_size = max_size
        self.max_fields = max_fields
        self.max_files = max_files
        self.max_field_size = max_field_size
        self.spool_size = spool_size


def media_type_params(value: str) -> tuple[str, dict[str, str]]:
    """``multipart/form-data; boundary="x"`` -> ``("multipart/form-data", {"boundary": "x"})``."""
    media_type, _, rest = value.partition(";")
    return media_type.strip().lower(), _params(rest)


# One `; name=value` parameter; the value a token or a quoted string with \-escapes.
_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


# Only \" and \\ are unescaped: old browsers send Windows paths with bare backslashes.
_QUOTED_PAIR_RE = re.compile(r'\\([\\"])')


def _params(rest: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for match in _PARAM_RE.finditer(";" + rest if not rest.startswith(";") else rest):
        name, value = match.group(1).lower(), match.group(2).strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = _QUOTED_PAIR_RE.sub(r"\1", value[1:-1])
        params.setdefault(name, value)
    return params


async def parse_form(
    content_type: str, stream: AsyncIterator[bytes], limits: FormLimits
) -> FormData:
    """Read a form body of type `content_type` from `stream`."""
    media_type, params = media_type_params(content_type)
    if media_type == "multipart/form-data":
        boundary = params.get("boundary", "")
        if not 1 <= len(boundary) <= 200:
            raise BadRequestBody("Malformed multipart body: missing or bad boundary")
        try:
            raw_boundary = boundary.encode("ascii")
        except UnicodeEncodeError:
            raise BadRequestBody("Malformed multipart body: bad boundary") from None
        return await MultipartParser(raw_boundary, limits).parse(stream)
    if media_type == "application/x-www-form-urlencoded" or not media_type:
        return await _parse_urlencoded(stream, limits)
    raise UnsupportedFormType(media_type)


class UnsupportedFormType(HTTPException):
    """A body `form()` cannot read: 415 Unsupported Media Type."""

    def __init__(self, media_type: str) -> None:
        super().__init__(415, f"Unsupported form type {media_type!r}")


async def _parse_urlencoded(stream: AsyncIterator[bytes], limits: FormLimits) -> FormData:
    limit = limits.max_size
    parts: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if limit is not None and size > limit:
            raise ContentTooLarge(f"Form larger than {limit} bytes")
        parts.append(chunk)
    try:
        pairs = parse_query(b"".join(parts), max_fields=limits.max_fields, what="form")
    except BadRequest as exc:
        if "Too many" in exc.detail:
            raise ContentTooLarge(exc.detail) from None
        raise BadRequestBody(exc.detail) from None
    return FormData(pairs)


_PREAMBLE, _HEADERS, _DATA, _END = range(4)


class MultipartParser:
    """An incremental ``multipart/form-data`` parser over a byte stream.

    The buffer starts with a CRLF so that the first boundary line matches the
    same delimiter as the others: ``CRLF -- boundary``. While in a part's data
    it searches for that delimiter; bytes before it that cannot be its start are
    handed to the part at once, so memory stays bounded by the chunk size plus
    the delimiter length.
    """

    __slots__ = (
        "_delimiter",
        "_limits",
        "_items",
        "_buffer",
        "_state",
        "_size",
        "_files",
        "_fields",
        "_field",
        "_upload",
        "_name",
        "_charset",
    )

    def __init__(self, boundary: bytes, limits: FormLimits) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._limits = limits
        self._items: list[tuple[str, str | UploadFile]] = []
        self._buffer = bytearray(b"\r\n")
        self._state = _PREAMBLE
        self._size = 0
        self._files = 0
        self._fields = 0
        self._field: bytearray | None = None
        self._upload: UploadFile | None = None
        self._name = ""
        self._charset = "utf-8"

    async def parse(self, stream: AsyncIterator[bytes]) -> FormData:
        try:
            async for chunk in stream:
                self._size += len(chunk)
                limit = self._limits.max_size
                if limit is not None and self._size > limit:
                    raise ContentTooLarge(f"Form larger than {limit} bytes")
                self._buffer += chunk
                if self._state == _END:
                    # The epilogue is ignored (RFC 2046 5.1.1); reading it to its
                    # end leaves the connection ready for the next request.
                    del self._buffer[:]
                    continue
                await self._consume()
            if self._state != _END:
                raise BadRequestBody("Malformed multipart body: it ends before its last boundary")
        except BaseException:
            if self._upload is not None:
                await self._upload.close()
            await FormData(self._items).close()
            raise
        return FormData(self._items)

    async def _consume(self) -> None:
        buffer = self._buffer
        delimiter = self._delimiter
        while True:
            state = self._state
            if state == _PREAMBLE or state == _DATA:
                index = buffer.find(delimiter)
                if index < 0:
                    # Keep what could be the start of a delimiter split across chunks.
                    keep = len(delimiter) - 1
                    if len(buffer) > keep:
                        if state == _DATA:
                            await self._part_data(bytes(buffer[:-keep]))
                        del buffer[:-keep]
                    return
                after = index + len(delimiter)
                if len(buffer) < after + 2:
                    if state == _DATA and index:
                        await self._part_data(bytes(buffer[:index]))
                        del buffer[:index]
                    return
                if state == _DATA:
                    await self._part_data(bytes(buffer[:index]))
                    await self._end_part()
                tail = bytes(buffer[after : after + 2])
                if tail == b"--":
                    self._state = _END
                    del buffer[:]
                    return
                # Transport padding (spaces, tabs) may follow the boundary (RFC 2046 5.1.1).
                line_end = buffer.find(b"\r\n", after)
                if line_end < 0:
                    if len(buffer) - after > 1024:
                        raise BadRequestBody("Malformed multipart body: bad boundary line")
                    return
                if buffer[after:line_end].strip(b" \t"):
                    if state == _PREAMBLE:
                        # Not a boundary after all, just preamble text that looks like one.
                        del buffer[: index + 2]
                        continue
                    raise BadRequestBody("Malformed multipart body: bad boundary line")
                del buffer[: line_end + 2]
                self._state = _HEADERS
            elif state == _HEADERS:
                index = buffer.find(b"\r\n\r\n")
                if buffer.startswith(b"\r\n"):
                    index, head = 0, b""
                elif index < 0:
                    if len(buffer) > MAX_PART_HEADER_SIZE:
                        raise ContentTooLarge("Multipart part headers too large")
                    return
                else:
                    head = bytes(buffer[:index])
                    index += 2
                if len(head) > MAX_PART_HEADER_SIZE:
                    raise ContentTooLarge("Multipart part headers too large")
                del buffer[: index + 2]
                self._start_part(head)
                self._state = _DATA
            else:
                return

    def _start_part(self, head: bytes) -> None:
        raw_headers: list[tuple[bytes, bytes]] = []
        for line in head.split(b"\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise BadRequestBody("Malformed multipart body: bad part header")
            raw_headers.append((name.strip().lower(), value.strip()))
        headers = Headers(raw_headers)
        raw_disposition = headers.get_raw(b"content-disposition")
        if raw_disposition is None:
            raise BadRequestBody("Malformed multipart body: a part has no Content-Disposition")
        # Browsers send UTF-8 names and filenames raw in the header (RFC 7578 4.2).
        try:
            disposition = raw_disposition.decode("utf-8")
        except UnicodeDecodeError:
            disposition = raw_disposition.decode("latin-1")
        kind, params = media_type_params(disposition)
        if kind != "form-data" or "name" not in params:
            raise BadRequestBody("Malformed multipart body: a part is not a named form-data field")
        self._name = params["name"]
        filename = params.get("filename")
        if filename is None:
            self._fields += 1
            if self._fields > self._limits.max_fields:
                raise ContentTooLarge(
                    f"Too many fields in the form (more than {self._limits.max_fields})"
                )
            self._field = bytearray()
            content_type = headers.get("content-type", "")
            self._charset = _charset_of(content_type) or "utf-8"
            return
        self._files += 1
        if self._files > self._limits.max_files:
            raise ContentTooLarge(
                f"Too many files in the form (more than {self._limits.max_files})"
            )
        self._upload = UploadFile(
            filename,
            content_type=headers.get("content-type", "application/octet-stream"),
            headers=headers,
            spool_size=self._limits.spool_size,
        )

    async def _part_data(self, data: bytes) -> None:
        if not data:
            return
        field = self._field
        if field is not None:
            field += data
            if len(field) > self._limits.max_field_size:
                raise ContentTooLarge(
                    f"Form field {self._name!r} larger than {self._limits.max_field_size} bytes"
                )
        elif self._upload is not None:
            await self._upload.write(data)

    async def _end_part(self) -> None:
        field, upload = self._field, self._upload
        self._field = self._upload = None
        if field is not None:
            try:
                value = field.decode(self._charset)
            except (LookupError, UnicodeError):
                raise BadRequestBody(
                    f"Malformed multipart body: field {self._name!r} is not {self._charset}"
                ) from None
            self._items.append((self._name, value))
        elif upload is not None:
            await upload.seek(0)
            self._items.append((self._name, upload))


def _charset_of(content_type: str) -> str | None:
    return media_type_params(content_type)[1].get("charset")
