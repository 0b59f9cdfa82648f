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
      when the client accepts that coding. Whenever a sibling exists, every
      answer for ``name`` (compressed or not, 304 included) carries
      ``Vary: Accept-Encoding``, so a cache never hands one form to a client
      that asked for the other;
    - methods other than GET and HEAD -> 405 with ``Allow``; a file that cannot
      be read -> 403; a file that vanishes between look-up and open -> 404;
      any other OS error -> 500, logged on ``aserve.error``. A file that
      shrinks while it is being sent ends the connection early (the engine
      notices the short read), so a client never takes a truncated body for a
      whole one.

Policy (decided at construction; the hot path pays a dict look-up)
    - hidden names: a segment starting with "." (``.git``, ``.env``, at any
      depth) is checked after decoding, so ``%2egit`` is ``.git``; it answers
      exactly as a missing path does (404, or the fallback), never 403, which
      would say it exists. Listings leave such names out. ``.well-known`` as
      the first segment is the exception (RFC 8615: ACME challenges,
      security.txt); names below it are still checked. The rule is on the
      names asked for: a symlink with a visible name is followed as the
      symlink rule allows, its target's name is not looked at;
    - Cache-Control on every answer about a file (200, 206, 304, 412, 416):
      the first user rule whose glob matches, else `IMMUTABLE_CACHE_CONTROL`
      for a fingerprinted name (`is_fingerprinted`), else the default
      (`DEFAULT_CACHE_CONTROL`). Remembered per name (per path when a rule
      has a "/"), so a request costs one dict look-up. The built-in value
      says ``private`` instead of ``public`` to a request with
      ``Authorization`` (behind Basic auth), so that no shared cache keeps
      a protected file (RFC 9111 3.5);
    - error pages replace the plain-text body of a 403, 404, 405 or 500 with
      a file's, keep the status, and are sent with
      ``Cache-Control: no-store`` and no validators;
    - the fallback (a single-page app's ``index.html``) answers 200 in place
      of a 404 for GET and HEAD when the last segment has no extension, or
      when it has one and the client accepts text/html (the answer then
      varies on Accept, and says so). Paths refused outright (``..``, NUL)
      stay 404;
    - Content-Type from `BUILTIN_MEDIA_TYPES`, then `mimetypes`;
      ``charset=utf-8`` on text/*, JavaScript, JSON, XML, SVG, YAML, TOML and
      every +json / +xml type, never on a binary type.

Look-ups (``stat``, ``open``, ``realpath``) run on the event loop: on a local
file system they take microseconds, less than a hop to a worker thread would.
Directory listings, whose size has no bound, are built in a worker thread.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import html
import logging
import mimetypes
import os
import re
import secrets
import stat
from collections.abc import AsyncIterator, Iterable, Mapping
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
# Media types by extension, looked up before `mimetypes`: the machine's own
# database varies (some call .js application/javascript, some know no .avif,
# .webmanifest or .woff2), and a browser refuses a module script or a wasm
# stream served with the wrong type.
BUILTIN_MEDIA_TYPES: dict[str, str] = {
    ".html": "text/html",
    ".htm": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",  # RFC 9239: the one JavaScript type
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",  # source maps
    ".jsonld": "application/ld+json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".xml": "application/xml",
    ".xhtml": "application/xhtml+xml",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".ics": "text/calendar",
    ".vtt": "text/vtt",
    ".yaml": "application/yaml",  # RFC 9512
    ".yml": "application/yaml",
    ".toml": "application/toml",
    ".png": "image/png",
    ".apng": "image/apng",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".jxl": "image/jxl",
    ".ico": "image/vnd.microsoft.icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".pdf": "application/pdf",
    ".zip": "application/zip",
}
# Types outside text/* that are text all the same, and get charset=utf-8 too
# (as does every +json and +xml type). Binary types never get a charset.
_TEXT_LIKE = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/xml",
        "image/svg+xml",
        "application/yaml",
        "application/toml",
    }
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
    """The Content-Type for a file name, with ``charset=utf-8`` for text.

    `BUILTIN_MEDIA_TYPES` first, then `mimetypes` (the machine's database);
    ``application/octet-stream`` when neither knows the name.
    """
    media: str | None = BUILTIN_MEDIA_TYPES.get(os.path.splitext(name)[1].lower())
    if media is None:
        media, encoding = mimetypes.guess_type(name, strict=False)
        if encoding is not None:
            return _ENCODED_TYPES.get(encoding, "application/octet-stream")
        if media is None:
            return "application/octet-stream"
    if media.startswith("text/") or media in _TEXT_LIKE or media.endswith(("+json", "+xml")):
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
        b"authorization",
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


# --------------------------------------------------------------------------- policy

#: Cache-Control of a fingerprinted file name (see `is_fingerprinted`): a new
#: version gets a new name, so the content behind this one never changes.
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
#: Cache-Control of every other file unless a rule says otherwise: caches may
#: keep it but must ask first, which the ETag / Last-Modified validators make
#: cheap (a 304 without a body).
DEFAULT_CACHE_CONTROL = "no-cache"
#: Cache-Control of an error page: an error says nothing lasting about the URL.
ERROR_PAGE_CACHE_CONTROL = "no-store"
#: The statuses StaticFiles answers with a body, which `error_pages` may replace.
ERROR_PAGE_STATUSES = (403, 404, 405, 500)

# A run of 8 or more hex digits, with at least one digit and one letter (so
# that neither a date, 20240101, nor a word, deadbeef, counts), standing as a
# part of the name between ".", "-" or "_" and followed by more of the name:
# app.3f2a9c1b.js, main-5f2a9c1b.css, 3f2a9c1b.chunk.js.
_FINGERPRINT_RE = re.compile(
    r"(?:^|[._-])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}[._-]", re.IGNORECASE
)
# One Cache-Control directive (RFC 9111 5.2): a name, then a token or a
# quoted-string. Names are held to letters, digits and "-" (every registered
# one is), so that a rule written with "=" instead of ":" is caught.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\\x00-\x1f\x7f]|\\[\t\x20-\x7e])*"'
_DIRECTIVE = rf"([A-Za-z][A-Za-z0-9-]*)(?:=({_TOKEN}|{_QUOTED}))?"
_DIRECTIVE_RE = re.compile(_DIRECTIVE)
_CACHE_CONTROL_RE = re.compile(rf"{_DIRECTIVE}(?:[ \t]*,[ \t]*{_DIRECTIVE})*")
# Directives whose argument is a number of seconds.
_SECONDS = frozenset(
    {"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "max-stale", "min-fresh"}
)


def is_fingerprinted(name: str) -> bool:
    """Whether a file name carries a content hash (``app.3f2a9c1b.js``): a run
    of 8+ hex digits, mixing digits and letters, as a part of the name."""
    return _FINGERPRINT_RE.search(name) is not None


@dataclass(frozen=True, slots=True)
class CacheRule:
    """``Cache-Control: value`` for the files whose name (or, when `pattern`
    holds a ``/``, whose path below the directory) matches the glob `pattern`.
    An empty `value` sends no Cache-Control at all."""

    pattern: str
    value: str


CacheControlSpec = str | Mapping[str, str] | Iterable[str] | None


def parse_cache_control(spec: CacheControlSpec) -> tuple[tuple[CacheRule, ...], str]:
    """The rules and the default value that `spec` gives (see `StaticFiles`).

    A string or each string of a list is either a rule, ``PATTERN: VALUE`` (a
    ``:`` before any ``,``, ``=`` or ``"``), or the default value; a mapping
    holds rules only. Raises ConfigError for a bad pattern or value.
    """
    if spec is None:
        return (), DEFAULT_CACHE_CONTROL
    if isinstance(spec, Mapping):
        rules = [_cache_rule(pattern, value) for pattern, value in spec.items()]
        return tuple(rules), DEFAULT_CACHE_CONTROL
    items = [spec] if isinstance(spec, str) else list(spec)
    parsed: list[CacheRule] = []
    default: str | None = None
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"a Cache-Control setting is a string, not {item!r}")
        head, colon, rest = item.partition(":")
        if colon and not any(c in head for c in ',="'):
            parsed.append(_cache_rule(head, rest))
            continue
        if default is not None:
            raise ConfigError(
                f"two default Cache-Control values, {default!r} and {item.strip()!r}; "
                "a rule is written PATTERN: VALUE, e.g. '*.html: no-cache'"
            )
        default = _cache_control_value(item)
    return tuple(parsed), DEFAULT_CACHE_CONTROL if default is None else default


def _cache_rule(pattern: str, value: str) -> CacheRule:
    pattern = pattern.strip().lstrip("/")
    if not pattern:
        raise ConfigError("a Cache-Control rule needs a pattern before its ':'")
    if pattern.endswith("/"):
        pattern += "*"  # a folder: everything below it
    return CacheRule(pattern, _cache_control_value(value))


def _cache_control_value(text: str) -> str:
    """`text` as a checked Cache-Control value, normalised ("" for none)."""
    value = text.strip()
    if not value:
        return ""
    if _CACHE_CONTROL_RE.fullmatch(value) is None:
        raise ConfigError(
            f"{value!r} is not a Cache-Control value (directives such as "
            "'public, max-age=3600'); a rule is written PATTERN: VALUE, e.g. '*.html: no-cache'"
        )
    directives = []
    for match in _DIRECTIVE_RE.finditer(value):
        name, argument = match.group(1), match.group(2)
        if name.lower() in _SECONDS and (argument is None or not argument.isdigit()):
            raise ConfigError(f"Cache-Control {name} takes a number of seconds, in {value!r}")
        directives.append(match.group(0))
    return ", ".join(directives)


class _CachePolicy:
    """Which Cache-Control a file gets, decided once per name and remembered:
    the user's rules in order, then fingerprinted names, then the default."""

    __slots__ = ("_rules", "_default", "_by_path", "_memo")

    def __init__(self, rules: tuple[CacheRule, ...], default: str) -> None:
        self._rules = [
            (re.compile(fnmatch.translate(rule.pattern)), "/" in rule.pattern, _encoded(rule.value))
            for rule in rules
        ]
        self._default = _encoded(default)
        # Without a path rule the answer depends on the name alone: remember it by name.
        self._by_path = any(on_path for _, on_path, _ in self._rules)
        self._memo: dict[str, bytes | None] = {}

    def value_for(self, segments: list[str]) -> bytes | None:
        """The Cache-Control header value for the file at `segments` below the
        directory; None: send none."""
        key = "/".join(segments) if self._by_path else segments[-1]
        try:
            return self._memo[key]
        except KeyError:
            pass
        name = segments[-1]
        value = self._default
        for regex, on_path, rule_value in self._rules:
            if regex.match(key if on_path else name):
                value = rule_value
                break
        else:
            if _FINGERPRINT_RE.search(name) is not None:
                value = _IMMUTABLE
        if len(self._memo) >= 4096:
            self._memo.clear()
        self._memo[key] = value
        return value


def _encoded(value: str) -> bytes | None:
    return encode_header("cache-control", value)[1] if value else None


_IMMUTABLE = encode_header("cache-control", IMMUTABLE_CACHE_CONTROL)[1]
# The same for a request with credentials: "public" would let a shared cache
# keep the answer and hand it to anyone (RFC 9111 3.5).
_IMMUTABLE_PRIVATE = _IMMUTABLE.replace(b"public", b"private")
_ERROR_PAGE_CACHE = (b"cache-control", ERROR_PAGE_CACHE_CONTROL.encode("ascii"))
_REASONS = {
    403: "Forbidden\n",
    404: "Not Found\n",
    405: "Method Not Allowed\n",
    500: "Internal Server Error\n",
}

ErrorPagesSpec = Mapping[int, str] | Mapping[str, str] | Iterable[str] | None


def parse_error_pages(spec: ErrorPagesSpec) -> dict[int, str]:
    """``{status: path}`` from a mapping or from ``"STATUS=PATH"`` strings;
    ConfigError for a status StaticFiles never answers with a page, or a repeat."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, Mapping):
        items = [(str(status), path) for status, path in spec.items()]
    else:
        items = []
        for item in spec:
            if not isinstance(item, str):
                raise ConfigError(f"an error page is written STATUS=PATH, not {item!r}")
            code, equals, path = item.partition("=")
            if not equals:
                raise ConfigError(
                    f"an error page is written STATUS=PATH (404=404.html), not {item!r}"
                )
            items.append((code, path))
    pages: dict[int, str] = {}
    for status_text, path in items:
        status_text = status_text.strip()
        if not status_text.isdigit() or int(status_text) not in ERROR_PAGE_STATUSES:
            allowed = ", ".join(str(s) for s in ERROR_PAGE_STATUSES)
            raise ConfigError(f"error pages are for statuses {allowed}, not {status_text!r}")
        status = int(status_text)
        if status in pages:
            raise ConfigError(f"two error pages for {status}")
        if not isinstance(path, str) or not path.strip():
            raise ConfigError(f"the error page for {status} needs a path, not {path!r}")
        pages[status] = path.strip()
    return pages


def _has_hidden(segments: list[str]) -> bool:
    """Whether a path names a hidden file or folder: a name starting with "."
    at any depth, except ``.well-known`` at the top (RFC 8615)."""
    for name in segments:
        if name[0] == ".":
            break
    else:
        return False  # the common case: one cheap pass
    below = segments[1:] if segments[0] == ".well-known" else segments
    return any(name[0] == "." for name in below)


@dataclass(frozen=True, slots=True)
class _Page:
    """A file checked at construction: an error page or the fallback."""

    path: str
    segments: list[str]
    content_type: bytes


def _page_answer(
    status: int, page: _Page, head_only: bool, extra: RawHeaders | None
) -> Response | None:
    """`page` as the body of a `status` answer; None (logged) when it cannot be read."""
    try:
        fd = os.open(page.path, _OPEN_FLAGS)
    except OSError as exc:
        logger.error("cannot send the error page %r: %s", page.path, exc)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            logger.error("cannot send the error page %r: not a regular file", page.path)
            return None
        headers: RawHeaders = [
            (b"content-type", page.content_type),
            (b"content-length", b"%d" % st.st_size),
            _ERROR_PAGE_CACHE,
        ]
        if extra:
            headers += extra
        plan = FilePlan(status, headers, [(0, st.st_size)] if st.st_size else [])
        if plan.file_bytes > IN_MEMORY_LIMIT:
            response = FileResponse.from_plan(plan, fd, page.path)
            fd = -1  # the response's body owns it now
            return response
        return _in_memory(plan, fd, head_only)
    finally:
        if fd >= 0:
            os.close(fd)


# --------------------------------------------------------------------------- StaticFiles


class StaticFiles:
    """A handler that serves the files under `directory`.

    ``index``: the file served for a directory URL ("" or None: none).
    ``listing``: an HTML listing for a directory without an index.
    ``follow_symlinks``: when False (the default), a symlink is followed only
    if it leads to somewhere inside `directory`.
    ``precompressed``: serve ``name.br`` / ``name.gz`` to clients that accept them.
    ``hidden``: serve and list names starting with "." (``.git/``, ``.env``);
    when False (the default) they answer 404 as if they did not exist, except
    ``.well-known/`` at the top of the directory.
    ``cache_control``: the Cache-Control policy: a default value, rules
    ``"PATTERN: VALUE"``, or both in a list (see `parse_cache_control`);
    fingerprinted names get `IMMUTABLE_CACHE_CONTROL` unless a rule matches
    first, every other file `DEFAULT_CACHE_CONTROL`.
    ``error_pages``: ``{404: "404.html"}`` or ``["404=404.html"]``: files
    below `directory` sent as the body of those error answers.
    ``fallback``: a file below `directory` (``"index.html"`` for a single-page
    app) answered, with 200, to a GET or HEAD that would get a 404, when the
    last path segment has no extension or the client accepts text/html.

    Every file named here must exist when the handler is built (ConfigError
    otherwise) and obeys the same rules as a requested path.

    It serves ``request.path_params["path"]`` when a route set it, else the
    part of ``request.raw_path`` below ``request.root_path`` (the prefix an
    App mount adds). See the module docstring for the rules.
    """

    __slots__ = (
        "directory",
        "index",
        "listing",
        "follow_symlinks",
        "precompressed",
        "hidden",
        "cache_rules",
        "cache_default",
        "error_pages",
        "fallback",
        "_prefix",
        "_cache",
        "_pages",
        "_fallback",
    )
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
        hidden: bool = False,
        cache_control: CacheControlSpec = None,
        error_pages: ErrorPagesSpec = None,
        fallback: str | None = None,
    ) -> None:
        root = os.path.realpath(os.fspath(directory))
        if not os.path.isdir(root):
            raise ConfigError(f"not a directory: {os.fspath(directory)!r}")
        if index is not None and ("/" in index or "\\" in index or index in (".", "..")):
            raise ConfigError(f"index must be a plain file name, not {index!r}")
        if index and index.startswith(".") and not hidden:
            raise ConfigError(f"index {index!r} is a hidden name, which is not served")
        self.directory = root
        self.index = index or None
        self.listing = listing
        self.follow_symlinks = follow_symlinks
        self.precompressed = precompressed
        self.hidden = hidden
        self._prefix = root if root.endswith(os.sep) else root + os.sep
        self.cache_rules, self.cache_default = parse_cache_control(cache_control)
        self._cache = _CachePolicy(self.cache_rules, self.cache_default)
        self.error_pages = parse_error_pages(error_pages)
        self._pages = {
            status: self._page(path, f"the error page for {status}")
            for status, path in self.error_pages.items()
        }
        self.fallback = fallback or None
        self._fallback = self._page(fallback, "the fallback") if fallback else None

    def __repr__(self) -> str:
        return f"StaticFiles({self.directory!r}, listing={self.listing})"

    def _page(self, relative: str, what: str) -> _Page:
        """A file named at construction, checked by the rules of a request."""
        segments = _decoded_segments(relative)
        if not segments:
            raise ConfigError(f"{what} must be a file below the directory, not {relative!r}")
        if not self.hidden and _has_hidden(segments):
            raise ConfigError(
                f"{what}, {relative!r}, is a hidden path, which is not served (hidden=True is)"
            )
        try:
            found = self._resolve(segments)
        except OSError:
            found = None
        if found is None or not stat.S_ISREG(found[1].st_mode):
            raise ConfigError(f"{what}, {relative!r}, is not a file in {self.directory}")
        return _Page(found[0], segments, _content_type(found[0]))

    async def __call__(self, request: Request) -> Response:
        method = request.method
        if method not in _GET_HEAD:
            return self._error(405, method, _ALLOW)
        segments, trailing_slash = self._segments(request)
        if segments is None:
            return self._error(404, method)
        if segments and not self.hidden and _has_hidden(segments):
            return self._missing(request, segments)
        try:
            found = self._resolve(segments)
        except OSError as exc:
            if _is_missing(exc):
                return self._missing(request, segments)
            return self._os_error(exc, os.path.join(self.directory, *segments), method)
        if found is None:
            return self._missing(request, segments)
        path, st = found
        if stat.S_ISDIR(st.st_mode):
            return await self._directory(request, path, trailing_slash, segments)
        if not stat.S_ISREG(st.st_mode) or trailing_slash:
            return self._missing(request, segments)
        return self._file(request, path, segments)

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
            # The part of the root path a proxy stripped is not in the path.
            in_path = root[len(request.stripped_root) :]
            if in_path:
                below = _below(raw, in_path)
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

    def _file(
        self, request: Request, path: str, segments: list[str], vary: bytes | None = None
    ) -> Response:
        """Answer with the file at `path`, which `segments` (below the
        directory) named: the Cache-Control rules look at those."""
        headers = conditions(request.headers)
        content_type = _content_type(path)
        extra: RawHeaders = []
        cache_control = self._cache.value_for(segments)
        if cache_control is not None:
            if cache_control is _IMMUTABLE and b"authorization" in headers:
                cache_control = _IMMUTABLE_PRIVATE
            extra.append((b"cache-control", cache_control))
        suffix = ""
        chosen = path
        if self.precompressed:
            sibling = self._sibling(path, headers.get(b"accept-encoding"))
            if sibling is not None:
                # On every answer, compressed or not: a cache must not hand
                # either one to a client that asked with another Accept-Encoding.
                vary = b"Accept-Encoding" if vary is None else b"Accept-Encoding, " + vary
                if sibling[0]:
                    chosen, coding = sibling[0], sibling[1]
                    extra.append((b"content-encoding", coding.encode("ascii")))
                    suffix = "-" + coding
        if vary is not None:
            extra.append((b"vary", vary))
        try:
            fd = os.open(chosen, _OPEN_FLAGS)
        except OSError as exc:
            return self._os_error(exc, chosen, request.method)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # swapped for something else since the stat
                return self._error(404, request.method)
            plan = plan_file(request.method, headers, st, content_type, extra, suffix)
            if plan.file_bytes > IN_MEMORY_LIMIT:
                response = FileResponse.from_plan(plan, fd, chosen)
                fd = -1  # the response's body owns it now
                return response
            return _in_memory(plan, fd, request.method == "HEAD")
        finally:
            if fd >= 0:
                os.close(fd)

    def _sibling(self, path: str, accept: str | None) -> tuple[str | None, str] | None:
        """``(path, coding)`` of the best precompressed sibling the client accepts,
        ``(None, "")`` when siblings exist but none is acceptable; None when
        there is none at all. Looked for even without Accept-Encoding, whose
        answer needs the Vary header all the same."""
        accepted = _accepted_codings(accept) if accept else {}
        exists = False
        best: tuple[float, str, str] | None = None
        for coding, extension in _CODINGS:
            try:
                found = self._lookup(path + extension)
            except OSError:
                continue
            if found is None or not stat.S_ISREG(found[1].st_mode):
                continue
            exists = True
            if not accepted:
                break  # nothing to choose: knowing that one exists is enough
            quality = accepted.get(coding, accepted.get("*", 0.0))
            if quality > 0 and (best is None or quality > best[0]):
                best = (quality, found[0], coding)
        if best is not None:
            return best[1], best[2]
        return (None, "") if exists else None

    # -- answers other than a file ------------------------------------------

    def _missing(self, request: Request, segments: list[str]) -> Response:
        """The answer for a path that names nothing that is served: the
        fallback when there is one and the path qualifies, else 404.

        A last segment without an extension (``/users/42``) is an app route:
        fallback. One with an extension (``/assets/x.js``) is a missing file:
        404, unless the client accepts text/html (a browser navigating), which
        is then a decision made on Accept, hence ``Vary: Accept``.
        """
        page = self._fallback
        if page is None:
            return self._error(404, request.method)
        name = segments[-1] if segments else ""
        vary = None
        if "." in name[1:]:
            vary = b"Accept"
            accept = request.headers.get("accept")
            if accept is None or "text/html" not in accept.lower():
                return self._error(404, request.method, [(b"vary", vary)])
        return self._file(request, page.path, page.segments, vary)

    def _error(self, status: int, method: str, extra: RawHeaders | None = None) -> Response:
        """An error answer: the error page for `status` when there is one, else plain text."""
        page = self._pages.get(status) if self._pages else None
        if page is not None:
            answer = _page_answer(status, page, method == "HEAD", extra)
            if answer is not None:
                return answer
        return _plain(status, _REASONS[status], extra)

    def _os_error(self, exc: OSError, path: str, method: str) -> Response:
        if isinstance(exc, PermissionError):
            return self._error(403, method)
        if _is_missing(exc):
            return self._error(404, method)
        logger.error("cannot serve %r: %s", path, exc)
        return self._error(500, method)

    # -- directories ------------------------------------------------------

    async def _directory(
        self, request: Request, path: str, trailing_slash: bool, segments: list[str]
    ) -> Response:
        if not trailing_slash:
            return _add_slash(request)
        if self.index is not None:
            try:
                found = self._lookup(os.path.join(path, self.index))
            except OSError:
                found = None
            if found is not None and stat.S_ISREG(found[1].st_mode):
                return self._file(request, found[0], [*segments, self.index])
        if not self.listing:
            return self._missing(request, segments)
        try:
            shown = unquote_to_bytes(request.raw_path).decode("utf-8", "replace")
            page = await asyncio.to_thread(self._listing_page, path, shown, not segments)
        except OSError as exc:
            return self._os_error(exc, path, request.method)
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
        show_hidden = self.hidden
        with os.scandir(path) as scan:
            for entry in scan:
                if not show_hidden and entry.name.startswith("."):
                    continue
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
    stripped = request.stripped_root
    if stripped:  # a proxy took this prefix off: the client needs it back
        location = quote(stripped).encode("ascii") + location
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


def _is_missing(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError | NotADirectoryError) or exc.errno in _MISSING


_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.EINVAL})


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover
