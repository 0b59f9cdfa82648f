"""Static files: `StaticFiles` serves a directory, `FileResponse` serves one file.

This module decides *what* to send for a file request (which file, which
status, which headers, which byte ranges) and never writes to a socket. A body
leaves as `FileSegment` chunks that the engine sends with `os.sendfile`
(zero-copy) and, where that is impossible, with reads and writes under
backpressure; so a 2 GB file costs the same few kilobytes of memory as a
small one. Files up to `IN_MEMORY_LIMIT` bytes are read and go out in the same
write as the head instead: one system call fewer where it shows most.

Resolving a request path (`StaticFiles._resolve`)
    The path comes from ``request.path_params["path"]`` when a route put it
    there (``str`` is taken as already percent-decoded, ``bytes`` as still
    encoded), else from ``request.raw_path``, less the ``request.root_path``
    an App mount put in front (matched segment by segment, decoded; a raw path
    that does not start with it answers 404). The raw path is split on ``/``
    *before* decoding, so
    ``%2f`` cannot make a separator; every segment is then decoded to bytes
    and refused (404) if it is ``..`` or holds ``/``, ``\\`` or NUL, or names
    a drive or an absolute path. Empty and ``.`` segments are dropped. Bytes
    become a file name with `os.fsdecode`, so a file whose name is not UTF-8
    can still be asked for by its bytes. With ``follow_symlinks=False`` (the
    default) the joined path is resolved with `os.path.realpath` and must lie
    inside the (resolved) root: a symlink may point anywhere inside the root,
    never outside it. Only regular files and directories are served; a FIFO
    or a device inside the root answers 404, and is never opened.

Answers (RFC 9110 sections 13 and 14)
    - validators: a strong ``ETag`` from the modification time (ns) and size,
      as nginx does, and ``Last-Modified``;
    - preconditions in the RFC's order: ``If-Match`` / ``If-Unmodified-Since``
      -> 412; ``If-None-Match`` / ``If-Modified-Since`` -> 304 for GET and HEAD;
    - ``Range`` on GET only (the RFC defines it for GET alone): one range ->
      206 with ``Content-Range``; several -> 206 ``multipart/byteranges``;
      none satisfiable -> 416 with ``Content-Range: bytes */SIZE``. A header
      that is not valid ``bytes=`` syntax, or that asks for more than
      `MAX_RANGES` ranges, is ignored (200, the whole file), as RFC 9110 14.2
      allows. Overlapping or touching ranges are merged (RFC 9110 14.3), so a
      client cannot make us send the same bytes many times over;
    - ``If-Range`` (a strong ETag or the exact Last-Modified date) turns a
      range request whose validator no longer matches into a 200;
    - ``HEAD``: the same head as GET, Content-Length included; the engine sends
      no body;
    - a directory URL without its trailing slash -> 301 to the URL with it;
      with one: its ``index`` file, else an HTML listing when ``listing`` is
      on, else 404;
    - precompressed siblings: ``name.br`` / ``name.gz`` (a regular file next to
      ``name``, under the same symlink rule) are sent with ``Content-Encoding``
      when the client accepts that coding, with ``Vary: Accept-Encoding``;
    - methods other than GET and HEAD -> 405 with ``Allow``; a file that cannot
      be read -> 403; a file that vanishes between look-up and open -> 404;
      any other OS error -> 500, logged on ``aserve.error``. A file that
      shrinks while it is being sent ends the connection early (the engine
      notices the short read), so a client never takes a truncated body for a
      whole one.

Look-ups (``stat``, ``open``, ``realpath``) run on the event loop: on a local
file system they take microseconds, less than a hop to a worker thread would.
Directory listings, whose size has no bound, are built in a worker thread.
"""

from __future__ import annotations

import asyncio
import errno
import html
import logging
import mimetypes
import os
import re
import secrets
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import ClassVar
from urllib.parse import quote, quote_from_bytes, unquote_to_bytes

from .errors import ConfigError
from .headers import Headers, HeadersInput, RawHeaders, encode_header, encode_headers
from .request import Request
from .response import FileSegment, Response

logger = logging.getLogger("aserve.error")

#: Files (or range answers) at most this large are read and sent in one write with the head.
IN_MEMORY_LIMIT = 64 * 1024
#: A Range header asking for more ranges than this is ignored (the whole file is sent).
MAX_RANGES = 32

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_GET_HEAD = ("GET", "HEAD")
_ALLOW = [(b"allow", b"GET, HEAD")]
_DIGITS = re.compile(r"[0-9]+")
_ETAG_RE = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')
# Text types that are not text/*; they get charset=utf-8 too.
_TEXT_LIKE = frozenset(
    {"application/javascript", "application/json", "application/xml", "image/svg+xml"}
)
# What to call a file that mimetypes sees as *encoded* (foo.tar.gz): sent as is,
# it is a gzip file, not a tar file with a content coding.
_ENCODED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}
# Precompressed siblings, in the order preferred when the client accepts both equally.
_CODINGS = (("br", ".br"), ("gzip", ".gz"))
_media_types: dict[str, bytes] = {}


# --------------------------------------------------------------------------- helpers


def media_type_for(name: str) -> str:
    """The Content-Type for a file name, with ``charset=utf-8`` for text."""
    media, encoding = mimetypes.guess_type(name, strict=False)
    if encoding is not None:
        return _ENCODED_TYPES.get(encoding, "application/octet-stream")
    if media is None:
        return "application/octet-stream"
    if media.startswith("text/") or media in _TEXT_LIKE:
        return f"{media}; charset=utf-8"
    return media


def _content_type(name: str) -> bytes:
    suffix = os.path.splitext(name)[1].lower()
    if suffix.endswith((".gz", ".bz2", ".xz", ".br", ".z")) or not suffix:
        return encode_header("content-type", media_type_for(name))[1]
    value = _media_types.get(suffix)
    if value is None:
        value = encode_header("content-type", media_type_for(name))[1]
        if len(_media_types) < 1024:
            _media_types[suffix] = value
    return value


def etag_for(st: os.stat_result, suffix: str = "") -> str:
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}{suffix}"'


def _http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def _parse_http_date(value: str) -> int | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # RFC 850 / asctime dates are GMT by definition
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _etags(value: str) -> list[tuple[bool, str]] | None:
    """``(weak, opaque-tag)`` pairs of an If-Match / If-None-Match value; None for ``*``."""
    if value.strip() == "*":
        return None
    tags = []
    for match in _ETAG_RE.finditer(value):
        tags.append((match.group(1) is not None, match.group(2)))
    return tags


# --------------------------------------------------------------------------- ranges


def parse_range(value: str, size: int) -> list[tuple[int, int]] | None:
    """The byte ranges a Range header asks of a `size`-byte file, as inclusive
    ``(first, last)`` pairs.

    None: ignore the header (not ``bytes=``, bad syntax, too many ranges).
    An empty list: nothing satisfiable (416). Overlapping or touching ranges
    are merged.
    """
    unit, equals, spec = value.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    items = [item.strip() for item in spec.split(",")]
    items = [item for item in items if item]
    if not items or len(items) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for item in items:
        first_text, dash, last_text = item.partition("-")
        first_text, last_text = first_text.strip(), last_text.strip()
        if not dash:
            return None
        if not first_text:
            suffix = _number(last_text)
            if suffix is None:
                return None
            if suffix > 0 and size > 0:
                ranges.append((max(0, size - suffix), size - 1))
            continue
        first = _number(first_text)
        if first is None:
            return None
        if last_text:
            last = _number(last_text)
            if last is None or last < first:
                return None
        else:
            last = size - 1
        if first < size:
            ranges.append((first, min(last, size - 1)))
    return _merge(ranges)


def _number(text: str) -> int | None:
    if _DIGITS.fullmatch(text) is None:
        return None
    # Past 18 digits a position is beyond any file; int() of a huge string is slow.
    return int(text) if len(text) <= 18 else 1 << 62


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    if len(ranges) < 2:
        return ranges
    ordered = sorted(ranges)
    if all(ordered[i][1] + 1 < ordered[i + 1][0] for i in range(len(ordered) - 1)):
        return ranges  # disjoint: keep the client's order
    merged = [ordered[0]]
    for first, last in ordered[1:]:
        top_first, top_last = merged[-1]
        if first <= top_last + 1:
            merged[-1] = (top_first, max(top_last, last))
        else:
            merged.append((first, last))
    return merged


# --------------------------------------------------------------------------- planning

#: A body part: bytes to send as they are, or ``(offset, count)`` of the file.
Part = bytes | tuple[int, int]


@dataclass(slots=True)
class FilePlan:
    """What to answer to one request for one file: status, headers, body parts."""

    status: int
    headers: RawHeaders
    parts: list[Part]

    @property
    def file_bytes(self) -> int:
        return sum(p[1] for p in self.parts if isinstance(p, tuple))


#: The request headers file answers depend on; `conditions()` picks them out.
CONDITION_HEADERS = frozenset(
    {
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"range",
        b"if-range",
        b"accept-encoding",
    }
)
Conditions = dict[bytes, str]


def conditions(headers: Headers) -> Conditions:
    """The request headers in `CONDITION_HEADERS`, by lowercase name, repeated
    ones joined with commas: one pass over the list instead of a look-up each."""
    found: Conditions = {}
    for name, value in headers.raw:
        if name in CONDITION_HEADERS:
            text = value.decode("latin-1")
            found[name] = f"{found[name]}, {text}" if name in found else text
    return found


# Last-Modified and ETag of recently served files: formatting the date is the
# largest cost of a small-file answer. Keyed by what the validators depend on.
_validators: dict[tuple[int, int, str], tuple[str, bytes, bytes]] = {}


def _validators_for(st: os.stat_result, suffix: str) -> tuple[str, bytes, bytes]:
    key = (st.st_mtime_ns, st.st_size, suffix)
    found = _validators.get(key)
    if found is None:
        etag = etag_for(st, suffix)
        found = (etag, etag.encode("ascii"), _http_date(st.st_mtime).encode("ascii"))
        if len(_validators) >= 4096:
            _validators.clear()
        _validators[key] = found
    return found


def plan_file(
    method: str,
    request_headers: Conditions | None,
    st: os.stat_result,
    content_type: bytes,
    extra: RawHeaders | None = None,
    etag_suffix: str = "",
) -> FilePlan:
    """Decide the answer for a file of status `st` (RFC 9110 13.2.2, then 14).

    `request_headers` are the request's, as `conditions()` picks them (None
    or empty: answer 200 unconditionally); `extra` headers go on every answer
    that describes the file (Vary, Content-Encoding...).
    """
    size = st.st_size
    etag, etag_bytes, last_modified = _validators_for(st, etag_suffix)
    validators: RawHeaders = [(b"last-modified", last_modified), (b"etag", etag_bytes)]
    if extra:
        validators += extra
    if request_headers:
        plan = _conditional(method, request_headers, st, etag, content_type, validators)
        if plan is not None:
            return plan
    head: RawHeaders = [
        (b"content-type", content_type),
        (b"content-length", b"%d" % size),
        (b"accept-ranges", b"bytes"),
    ]
    return FilePlan(200, head + validators, [(0, size)] if size else [])


def _conditional(
    method: str,
    headers: Conditions,
    st: os.stat_result,
    etag: str,
    content_type: bytes,
    validators: RawHeaders,
) -> FilePlan | None:
    mtime = int(st.st_mtime)
    if_match = headers.get(b"if-match")
    if if_match is not None:
        tags = _etags(if_match)
        # Strong comparison: a weak tag never matches (RFC 9110 13.1.1).
        if tags is not None and not any(not w and t == etag for w, t in tags):
            return _bodiless(412, validators)
    else:
        since = headers.get(b"if-unmodified-since")
        stamp = _parse_http_date(since) if since is not None else None
        if stamp is not None and mtime > stamp:
            return _bodiless(412, validators)
    if method in _GET_HEAD:
        if_none_match = headers.get(b"if-none-match")
        if if_none_match is not None:
            tags = _etags(if_none_match)
            # Weak comparison (RFC 9110 13.1.2): W/"x" matches "x".
            if tags is None or any(t == etag for _, t in tags):
                return FilePlan(304, validators, [])
        else:
            since = headers.get(b"if-modified-since")
            stamp = _parse_http_date(since) if since is not None else None
            if stamp is not None and mtime <= stamp:
                return FilePlan(304, validators, [])
    range_value = headers.get(b"range") if method == "GET" else None
    if range_value is not None and _if_range_holds(headers.get(b"if-range"), etag, mtime):
        ranges = parse_range(range_value, st.st_size)
        if ranges is not None:
            return _ranged(ranges, st.st_size, content_type, validators)
    return None


def _if_range_holds(value: str | None, etag: str, mtime: int) -> bool:
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # strong comparison; W/ never matches
    stamp = _parse_http_date(value)
    return stamp is not None and stamp == mtime


def _bodiless(status: int, validators: RawHeaders) -> FilePlan:
    return FilePlan(status, [(b"content-length", b"0"), *validators], [])


def _ranged(
    ranges: list[tuple[int, int]], size: int, content_type: bytes, validators: RawHeaders
) -> FilePlan:
    if not ranges:
        head: RawHeaders = [
            (b"content-range", b"bytes */%d" % size),
            (b"content-length", b"0"),
            (b"accept-ranges", b"bytes"),
        ]
        return FilePlan(416, head + validators, [])
    if len(ranges) == 1:
        first, last = ranges[0]
        head = [
            (b"content-type", content_type),
            (b"content-length", b"%d" % (last - first + 1)),
            (b"content-range", b"bytes %d-%d/%d" % (first, last, size)),
            (b"accept-ranges", b"bytes"),
        ]
        return FilePlan(206, head + validators, [(first, last - first + 1)])
    boundary = secrets.token_hex(12).encode("ascii")
    parts: list[Part] = []
    length = 0
    for index, (first, last) in enumerate(ranges):
        part_head = b"%s--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n" % (
            b"\r\n" if index else b"",
            boundary,
            content_type,
            first,
            last,
            size,
        )
        parts += [part_head, (first, last - first + 1)]
        length += len(part_head) + last - first + 1
    tail = b"\r\n--%s--\r\n" % boundary
    parts.append(tail)
    length += len(tail)
    head = [
        (b"content-type", b"multipart/byteranges; boundary=" + boundary),
        (b"content-length", b"%d" % length),
        (b"accept-ranges", b"bytes"),
    ]
    return FilePlan(206, head + validators, parts)


# --------------------------------------------------------------------------- responses


class FileBody:
    """The body of a file answer: yields its parts, owns the file descriptor.

    The engine closes it (`aclose`) when the answer is done, when the client
    leaves, or without iterating it at all for HEAD; each of those closes the
    descriptor. A plain class rather than an async generator, because a
    generator that never started would run no ``finally`` on ``aclose()``.
    """

    __slots__ = ("_fd", "_parts", "_next")

    def __init__(self, fd: int, parts: list[Part]) -> None:
        self._fd = fd
        self._parts = parts
        self._next = 0

    def __aiter__(self) -> FileBody:
        return self

    async def __anext__(self) -> bytes | FileSegment:
        if self._fd < 0 or self._next >= len(self._parts):
            raise StopAsyncIteration
        part = self._parts[self._next]
        self._next += 1
        if isinstance(part, bytes):
            return part
        return FileSegment(self._fd, part[0], part[1])

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:  # a response built and then never sent
        self.close()


class FileResponse(Response):
    """One file as the response body, sent with sendfile.

    ``FileResponse(path)`` answers 200 with the file's Content-Type (from its
    name, or `media_type`), Content-Length, ETag and Last-Modified. Given the
    `request`, it also answers conditional requests (304, 412) and Range
    requests (206, 416) the way `StaticFiles` does. `filename` adds a
    ``Content-Disposition: attachment`` header. The file is opened here, so a
    missing or unreadable one raises `OSError` from the constructor.
    """

    __slots__ = ("body_iterator", "path")
    streaming = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        status: int = 200,
        headers: HeadersInput = None,
        media_type: str | None = None,
        *,
        filename: str | None = None,
        request: Request | None = None,
    ) -> None:
        self.path = os.fspath(path)
        fd = os.open(self.path, _OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(f"not a regular file: {self.path!r}")
            extra = encode_headers(headers) if headers else []
            if filename is not None:
                extra.append(_content_disposition(filename))
            if media_type is not None:
                content_type = encode_header("content-type", media_type)[1]
            else:
                content_type = _content_type(self.path)
            conditional = request if status == 200 else None
            plan = plan_file(
                conditional.method if conditional is not None else "GET",
                conditions(conditional.headers) if conditional is not None else None,
                st,
                content_type,
                extra,
            )
        except BaseException:
            os.close(fd)
            raise
        self._adopt(plan, fd)
        if status != 200:
            self.status_code = status

    @classmethod
    def from_plan(cls, plan: FilePlan, fd: int, path: str) -> FileResponse:
        """A FileResponse for a plan already made; takes ownership of `fd`."""
        response = cls.__new__(cls)
        response.path = path
        response._adopt(plan, fd)
        return response

    def _adopt(self, plan: FilePlan, fd: int) -> None:
        self.status_code = plan.status
        self.body = b""
        self.raw_headers = plan.headers
        self.body_iterator: AsyncIterator[bytes | FileSegment] = FileBody(fd, plan.parts)


def _content_disposition(filename: str) -> tuple[bytes, bytes]:
    ascii_name = filename.encode("ascii", "replace").decode("ascii").replace('"', "'")
    ascii_name = re.sub(r"[\x00-\x1f\x7f]", "_", ascii_name)
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return encode_header("content-disposition", value)


class _Answer(Response):
    """A response whose raw headers are already complete (content-length included)."""

    __slots__ = ()

    def __init__(self, status: int, raw_headers: RawHeaders, body: bytes = b"") -> None:
        self.status_code = status
        self.body = body
        self.raw_headers = raw_headers


def _plain(status: int, text: str, extra: RawHeaders | None = None) -> Response:
    body = text.encode("utf-8")
    headers: RawHeaders = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ]
    if extra:
        headers += extra
    return _Answer(status, headers, body)


def _not_found() -> Response:
    return _plain(404, "Not Found\n")


# --------------------------------------------------------------------------- StaticFiles


class StaticFiles:
    """A handler that serves the files under `directory`.

    ``index``: the file served for a directory URL ("" or None: none).
    ``listing``: an HTML listing for a directory without an index.
    ``follow_symlinks``: when False (the default), a symlink is followed only
    if it leads to somewhere inside `directory`.
    ``precompressed``: serve ``name.br`` / ``name.gz`` to clients that accept them.

    It serves ``request.path_params["path"]`` when a route set it, else the
    part of ``request.raw_path`` below ``request.root_path`` (the prefix an
    App mount adds). See the module docstring for the rules.
    """

    __slots__ = ("directory", "index", "listing", "follow_symlinks", "precompressed", "_prefix")
    #: Tells interface detection (the CLI, App.mount) that this is a native handler.
    __aserve_handler__: ClassVar[bool] = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        index: str | None = "index.html",
        listing: bool = False,
        follow_symlinks: bool = False,
        precompressed: bool = True,
    ) -> None:
        root = os.path.realpath(os.fspath(directory))
        if not os.path.isdir(root):
            raise ConfigError(f"not a directory: {os.fspath(directory)!r}")
        if index is not None and ("/" in index or "\\" in index or index in (".", "..")):
            raise ConfigError(f"index must be a plain file name, not {index!r}")
        self.directory = root
        self.index = index or None
        self.listing = listing
        self.follow_symlinks = follow_symlinks
        self.precompressed = precompressed
        self._prefix = root if root.endswith(os.sep) else root + os.sep

    def __repr__(self) -> str:
        return f"StaticFiles({self.directory!r}, listing={self.listing})"

    async def __call__(self, request: Request) -> Response:
        method = request.method
        if method not in _GET_HEAD:
            return _plain(405, "Method Not Allowed\n", _ALLOW)
        segments, trailing_slash = self._segments(request)
        if segments is None:
            return _not_found()
        try:
            found = self._resolve(segments)
        except OSError as exc:
            return _os_error(exc, os.path.join(self.directory, *segments))
        if found is None:
            return _not_found()
        path, st = found
        if stat.S_ISDIR(st.st_mode):
            return await self._directory(request, path, trailing_slash, not segments)
        if not stat.S_ISREG(st.st_mode) or trailing_slash:
            return _not_found()
        return self._file(request, path)

    # -- paths ------------------------------------------------------------

    def _segments(self, request: Request) -> tuple[list[str] | None, bool]:
        """The path's segments as file names (None: refuse), and whether it ends in '/'."""
        given = request.path_params.get("path")
        if isinstance(given, str):
            return _decoded_segments(given), given.endswith("/")
        if isinstance(given, bytes):
            return _raw_segments(given), given.endswith(b"/")
        raw = request.raw_path
        root = getattr(request, "root_path", "")
        if root:
            below = _below(raw, root)
            if below is None:
                return None, False
            raw = below
        return _raw_segments(raw), raw.endswith(b"/")

    def _resolve(self, segments: list[str]) -> tuple[str, os.stat_result] | None:
        """The file system path for `segments` and its status; None when it
        leads outside the root. OSError when it does not exist.

        Each segment is looked at with lstat, which also yields the status
        wanted in the end; only when a symlink turns up is the rest resolved
        with realpath and checked against the root. A path without symlinks
        (the common case) costs one lstat per segment and nothing else.
        """
        if self.follow_symlinks:
            path = os.path.join(self.directory, *segments)
            return path, os.stat(path)
        path = self.directory
        if not segments:
            return path, os.stat(path)
        for index, segment in enumerate(segments):
            path = os.path.join(path, segment)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                real = self._inside(os.path.join(path, *segments[index + 1 :]))
                if real is None:
                    return None
                return real, os.stat(real)
        return path, st

    def _lookup(self, path: str) -> tuple[str, os.stat_result] | None:
        """`path`, a name in a directory already resolved inside the root, and
        its status, following a symlink as the rule allows; None when it leads
        outside. OSError when it does not exist."""
        if self.follow_symlinks:
            return path, os.stat(path)
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode):
            return path, st
        real = self._inside(path)
        if real is None:
            return None
        return real, os.stat(real)

    def _inside(self, path: str) -> str | None:
        real = os.path.realpath(path)
        if real == self.directory or real.startswith(self._prefix):
            return real
        return None

    # -- files ------------------------------------------------------------

    def _file(self, request: Request, path: str) -> Response:
        headers = conditions(request.headers)
        content_type = _content_type(path)
        extra: RawHeaders = []
        suffix = ""
        chosen = path
        if self.precompressed:
            accept = headers.get(b"accept-encoding")
            if accept:
                sibling = self._sibling(path, accept)
                if sibling is not None:
                    extra.append((b"vary", b"Accept-Encoding"))
                    if sibling[0]:
                        chosen, coding = sibling[0], sibling[1]
                        extra.append((b"content-encoding", coding.encode("ascii")))
                        suffix = "-" + coding
        try:
            fd = os.open(chosen, _OPEN_FLAGS)
        except OSError as exc:
            return _os_error(exc, chosen)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # swapped for something else since the stat
                return _not_found()
            plan = plan_file(request.method, headers, st, content_type, extra, suffix)
            if plan.file_bytes > IN_MEMORY_LIMIT:
                response = FileResponse.from_plan(plan, fd, chosen)
                fd = -1  # the response's body owns it now
                return response
            return _in_memory(plan, fd, request.method == "HEAD")
        finally:
            if fd >= 0:
                os.close(fd)

    def _sibling(self, path: str, accept: str) -> tuple[str | None, str] | None:
        """``(path, coding)`` of the best precompressed sibling the client accepts,
        ``(None, "")`` when siblings exist but none is acceptable; None when
        there is none at all."""
        accepted = _accepted_codings(accept)
        if not accepted:
            return None
        exists = False
        best: tuple[float, str, str] | None = None
        for coding, extension in _CODINGS:
            try:
                found = self._lookup(path + extension)
            except OSError:
                continue
            if found is None or not stat.S_ISREG(found[1].st_mode):
                continue
            candidate = found[0]
            exists = True
            quality = accepted.get(coding, accepted.get("*", 0.0))
            if quality > 0 and (best is None or quality > best[0]):
                best = (quality, candidate, coding)
        if best is not None:
            return best[1], best[2]
        return (None, "") if exists else None

    # -- directories ------------------------------------------------------

    async def _directory(
        self, request: Request, path: str, trailing_slash: bool, at_root: bool
    ) -> Response:
        if not trailing_slash:
            return _add_slash(request)
        if self.index is not None:
            try:
                found = self._lookup(os.path.join(path, self.index))
            except OSError:
                found = None
            if found is not None and stat.S_ISREG(found[1].st_mode):
                return self._file(request, found[0])
        if not self.listing:
            return _not_found()
        try:
            shown = unquote_to_bytes(request.raw_path).decode("utf-8", "replace")
            page = await asyncio.to_thread(self._listing_page, path, shown, at_root)
        except OSError as exc:
            return _os_error(exc, path)
        body = b"" if request.method == "HEAD" else page
        headers: RawHeaders = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", b"%d" % len(page)),
            (b"cache-control", b"no-store"),
        ]
        return _Answer(200, headers, body)

    def _listing_page(self, path: str, url_path: str, at_root: bool) -> bytes:
        rows = []
        if not at_root:
            rows.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
        entries = []
        with os.scandir(path) as scan:
            for entry in scan:
                try:
                    if entry.is_symlink() and not self.follow_symlinks:
                        if self._inside(entry.path) is None:
                            continue
                    st = entry.stat()
                except OSError:
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if not is_dir and not stat.S_ISREG(st.st_mode):
                    continue
                entries.append((not is_dir, entry.name, is_dir, st))
        entries.sort(key=lambda e: (e[0], e[1].lower(), e[1]))
        for _, name, is_dir, st in entries:
            raw_name = os.fsencode(name)
            href = quote_from_bytes(raw_name, safe="") + ("/" if is_dir else "")
            shown = html.escape(raw_name.decode("utf-8", "replace") + ("/" if is_dir else ""))
            size = "" if is_dir else _human_size(st.st_size)
            size_title = "" if is_dir else f' title="{st.st_size} bytes"'
            when = datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%d %H:%M")
            rows.append(
                f'<tr><td><a href="{html.escape(href)}">{shown}</a></td>'
                f'<td class="n"{size_title}>{size}</td><td>{when}</td></tr>'
            )
        title = html.escape(f"Index of {url_path}")
        return (
            '<!doctype html>\n<html><head><meta charset="utf-8">'
            f"<title>{title}</title>"
            "<style>body{font:14px system-ui,sans-serif;margin:2em}"
            "td,th{padding:.15em 1.2em .15em 0;text-align:left}"
            "td.n{text-align:right}</style></head>\n"
            f"<body><h1>{title}</h1>\n<table>\n"
            "<tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>\n"
            + "\n".join(rows)
            + "\n</table></body></html>\n"
        ).encode("utf-8")


# --------------------------------------------------------------------------- small parts


def _below(raw: bytes, root: str) -> bytes | None:
    """The part of the raw path `raw` below the decoded mount prefix `root`
    ("" for the prefix itself, without its slash); None if `raw` does not
    start with it segment by segment (``/static%2fx`` is not below ``/static``)."""
    wanted = [segment for segment in root.split("/") if segment]
    parts = raw.split(b"/")
    taken: list[str] = []
    index = 0
    while len(taken) < len(wanted) and index < len(parts):
        if parts[index]:
            taken.append(unquote_to_bytes(parts[index]).decode("utf-8", "replace"))
        index += 1
    if taken != wanted:
        return None
    rest = parts[index:]
    return b"/".join([b"", *rest]) if rest else b""


def _raw_segments(raw: bytes) -> list[str] | None:
    segments = []
    for part in raw.split(b"/"):
        if not part:
            continue
        name = unquote_to_bytes(part) if b"%" in part else part
        if name == b".":
            continue
        if name == b".." or b"/" in name or b"\\" in name or b"\x00" in name:
            return None
        decoded = os.fsdecode(name)
        if _names_a_root(decoded):
            return None
        segments.append(decoded)
    return segments


def _decoded_segments(path: str) -> list[str] | None:
    segments = []
    for name in path.split("/"):
        if not name or name == ".":
            continue
        if name == ".." or "\\" in name or "\x00" in name or _names_a_root(name):
            return None
        segments.append(name)
    return segments


def _names_a_root(name: str) -> bool:
    """A drive (C:) or an absolute path, which os.path.join would jump to.
    On POSIX a segment without "/" can be neither."""
    if os.sep == "/" and os.altsep is None:
        return name.startswith("/")
    drive, _ = os.path.splitdrive(name)
    return bool(drive) or os.path.isabs(name)


def _accepted_codings(accept: str) -> dict[str, float]:
    codings: dict[str, float] = {}
    for item in accept.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        codings[name] = quality
    return codings


def _add_slash(request: Request) -> Response:
    # Leading slashes collapse to one: "//evil.example" must not become a
    # protocol-relative redirect to another host.
    location = b"/" + request.raw_path.lstrip(b"/") + b"/"
    if request.query_string:
        location += b"?" + request.query_string
    headers: RawHeaders = [encode_header("location", location.decode("latin-1"))]
    return _plain(301, "Moved Permanently\n", headers)


def _in_memory(plan: FilePlan, fd: int, head_only: bool) -> Response:
    if head_only or not plan.parts:
        return _Answer(plan.status, plan.headers)
    chunks = []
    for part in plan.parts:
        if isinstance(part, bytes):
            chunks.append(part)
            continue
        offset, count = part
        data = os.pread(fd, count, offset)
        if len(data) != count:
            # The file shrank since fstat: the promised Content-Length is wrong.
            logger.warning("file changed while being read (fd %d); answering 503", fd)
            return _plain(503, "File changed while being read; try again\n")
        chunks.append(data)
    return _Answer(plan.status, plan.headers, b"".join(chunks))


def _os_error(exc: OSError, path: str) -> Response:
    if isinstance(exc, PermissionError):
        return _plain(403, "Forbidden\n")
    if isinstance(exc, FileNotFoundError | NotADirectoryError) or exc.errno in _MISSING:
        return _not_found()
    logger.error("cannot serve %r: %s", path, exc)
    return _plain(500, "Internal Server Error\n")


_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.EINVAL})


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover
