"""Middleware shipped with aserve: CORS, gzip, request ids, HTTP Basic auth,
HTTPS redirects with HSTS.

Each one is an object called as ``await mw(request, call_next) -> Response``,
added with ``app.middleware(...)``; options are checked when it is built, so a
typo fails at import time rather than on the first request. They change the
response in place through ``response.headers`` and, for gzip, its body or
``body_iterator``; they never write to the connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import os
import re
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

from .datastructures import check_host
from .errors import BadRequest
from .request import Request
from .response import FileSegment, PlainTextResponse, Response, StreamingResponse

CallNext = Callable[[Request], Awaitable[Response]]

__all__ = [
    "BasicAuthMiddleware",
    "CORSMiddleware",
    "GZipMiddleware",
    "HTTPSRedirectMiddleware",
    "RequestIdMiddleware",
    "basic_auth_users",
]

_SIMPLE_METHODS = ("GET", "HEAD", "POST")


class CORSMiddleware:
    """Cross-origin resource sharing (the Fetch standard's CORS protocol).

    A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
    is answered here without reaching the app: 200 with the allowed methods and
    headers, or 400 when the origin, method or a header is not allowed. Other
    requests from an allowed origin get ``Access-Control-Allow-Origin`` (and the
    credentials and exposed headers options) on whatever the app answers.

    ``allow_origins=["*"]`` allows every origin; with ``allow_credentials`` the
    origin is then echoed instead of ``*``, as browsers require.
    """

    def __init__(
        self,
        allow_origins: Collection[str] = (),
        *,
        allow_origin_regex: str | None = None,
        allow_methods: Collection[str] = _SIMPLE_METHODS,
        allow_headers: Collection[str] = (),
        allow_credentials: bool = False,
        expose_headers: Collection[str] = (),
        max_age: int = 600,
    ) -> None:
        if isinstance(allow_origins, str) or isinstance(allow_methods, str):
            raise TypeError("allow_origins and allow_methods are collections, not one string")
        self.allow_all_origins = "*" in allow_origins
        self.allow_origins = frozenset(allow_origins)
        self.origin_regex = re.compile(allow_origin_regex) if allow_origin_regex else None
        self.allow_all_methods = "*" in allow_methods
        methods = [m.upper() for m in allow_methods if m != "*"]
        self.allow_methods = frozenset(methods)
        self.allow_all_headers = "*" in allow_headers
        self.allow_headers = frozenset(h.lower() for h in allow_headers if h != "*")
        self.allow_credentials = allow_credentials
        self._methods_value = ", ".join(
            ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
            if self.allow_all_methods
            else methods
        )
        self._expose_value = ", ".join(expose_headers)
        self._max_age = str(int(max_age))

    def origin_allowed(self, origin: str) -> bool:
        if self.allow_all_origins or origin in self.allow_origins:
            return True
        return self.origin_regex is not None and self.origin_regex.fullmatch(origin) is not None

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        headers = request.headers
        origin = headers.get("origin")
        if origin is None:
            return await call_next(request)
        if request.method == "OPTIONS" and "access-control-request-method" in headers:
            return self._preflight(
                origin,
                headers.get("access-control-request-method", ""),
                headers.get("access-control-request-headers", ""),
            )
        response = await call_next(request)
        if self.origin_allowed(origin):
            self._add_origin(response, origin)
            if self._expose_value:
                response.headers["access-control-expose-headers"] = self._expose_value
        return response

    def _add_origin(self, response: Response, origin: str) -> None:
        out = response.headers
        if self.allow_all_origins and not self.allow_credentials:
            out["access-control-allow-origin"] = "*"
        else:
            out["access-control-allow-origin"] = origin
            _add_vary(response, "Origin")
        if self.allow_credentials:
            out["access-control-allow-credentials"] = "true"

    def _preflight(self, origin: str, method: str, requested: str) -> Response:
        problems = []
        if not self.origin_allowed(origin):
            problems.append("origin")
        if not (self.allow_all_methods or method.upper() in self.allow_methods):
            problems.append("method")
        names = [h.strip().lower() for h in requested.split(",") if h.strip()]
        if not self.allow_all_headers and any(
            n not in self.allow_headers and not _cors_safelisted(n) for n in names
        ):
            problems.append("headers")
        if problems:
            return PlainTextResponse(
                f"Disallowed CORS {', '.join(problems)}\n", status=400, headers={"vary": "Origin"}
            )
        response = Response(b"", status=200)
        self._add_origin(response, origin)
        out = response.headers
        out["access-control-allow-methods"] = self._methods_value
        if names:
            out["access-control-allow-headers"] = (
                requested if self.allow_all_headers else ", ".join(names)
            )
        out["access-control-max-age"] = self._max_age
        return response


def _cors_safelisted(name: str) -> bool:
    return name in ("accept", "accept-language", "content-language", "content-type")


def _add_vary(response: Response, name: str) -> None:
    headers = response.headers
    current = headers.get("vary")
    if current is None:
        headers["vary"] = name
    elif name.lower() not in (v.strip().lower() for v in current.split(",")):
        headers["vary"] = f"{current}, {name}"


# Types worth compressing: text, and the structured text formats served as application/*.
_COMPRESSIBLE_RE = re.compile(
    r"text/(?!event-stream).*|application/(?:json|javascript|xml|xhtml\+xml|rss\+xml|atom\+xml"
    r"|ld\+json|manifest\+json|wasm|x-javascript|x-ndjson|.*\+json|.*\+xml)|image/svg\+xml"
)


def _accepts_gzip(accept_encoding: str) -> bool:
    """True when ``Accept-Encoding`` allows gzip (``gzip`` or ``*``, with q above 0)."""
    star = False
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip()
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            star = q > 0
    return star


class GZipMiddleware:
    """Compress responses with gzip when the client accepts it and it is worth it.

    Worth it: a 200-ish answer of a compressible type (text, JSON, XML, JS,
    SVG; never ``text/event-stream``, whose events must not wait in a
    compressor), without its own ``Content-Encoding`` and not a range, and in
    hand at least `minimum_size` bytes. A streamed body is compressed chunk by
    chunk with a sync flush after each, so every chunk still reaches the client
    when it is produced. ``Vary: Accept-Encoding`` is added to every
    compressible answer, compressed or not, so caches keep both.
    """

    def __init__(self, *, minimum_size: int = 500, compresslevel: int = 6) -> None:
        if not 0 <= compresslevel <= 9:
            raise ValueError("compresslevel is 0 to 9")
        self.minimum_size = minimum_size
        self.compresslevel = compresslevel

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        response = await call_next(request)
        status = response.status_code
        if status < 200 or status in (204, 206, 304):
            return response
        raw = response.raw_headers
        content_type = b""
        for name, value in raw:
            if name == b"content-encoding" or name == b"content-range":
                return response
            if name == b"content-type":
                content_type = value
        media_type = content_type.split(b";", 1)[0].strip().decode("latin-1").lower()
        if not _COMPRESSIBLE_RE.fullmatch(media_type):
            return response
        _add_vary(response, "Accept-Encoding")
        if not _accepts_gzip(request.headers.get("accept-encoding", "")):
            return response
        if isinstance(response, StreamingResponse):
            response.body_iterator = _gzip_stream(response.body_iterator, self.compresslevel)
            headers = response.headers
            headers.pop("content-length", None)
        elif len(response.body) >= self.minimum_size:
            compressor = zlib.compressobj(self.compresslevel, zlib.DEFLATED, 31)
            response.body = compressor.compress(response.body) + compressor.flush()
            response.headers["content-length"] = str(len(response.body))
        else:
            return response
        headers = response.headers
        headers["content-encoding"] = "gzip"
        etag = headers.get("etag")
        if etag is not None and not etag.startswith("W/"):
            # The compressed bytes differ from the ones the strong tag named.
            headers["etag"] = "W/" + etag
        return response


async def _gzip_stream(chunks: AsyncIterator[Any], level: int) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    try:
        async for chunk in chunks:
            if isinstance(chunk, FileSegment):
                data = await asyncio.to_thread(os.pread, chunk.fd, chunk.count, chunk.offset)
            elif isinstance(chunk, str):
                data = chunk.encode("utf-8")
            else:
                data = chunk
            if data:
                yield compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        yield compressor.flush()
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:+/=-]{1,200}")


class RequestIdMiddleware:
    """Give every request an id: ``request.state.request_id`` and a response header.

    The id comes from the incoming `header` when `trust_incoming` and it looks
    like an id (1-200 of ``A-Za-z0-9._:+/=-``), else from `generate` (a uuid4 in
    hex by default). The response carries it in the same header.
    """

    def __init__(
        self,
        *,
        header: str = "X-Request-ID",
        trust_incoming: bool = True,
        generate: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.header = header
        self.trust_incoming = trust_incoming
        self.generate = generate

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        request_id = request.headers.get(self.header) if self.trust_incoming else None
        if request_id is None or _REQUEST_ID_RE.fullmatch(request_id) is None:
            request_id = self.generate()
        request.state.request_id = request_id
        response = await call_next(request)
        response.headers[self.header] = request_id
        return response


CredentialCheck = Callable[[str, str], "bool | Awaitable[bool]"]


def basic_auth_users(users: Mapping[str, str]) -> Callable[[str, str], bool]:
    """A credential check for `BasicAuthMiddleware` over a fixed user -> password map.

    Compares in constant time (``hmac.compare_digest``), and compares against a
    dummy password for an unknown user, so timing tells neither the user names
    nor how much of a password was right.
    """
    table = {user.encode("utf-8"): password.encode("utf-8") for user, password in users.items()}
    dummy = b"\0" * 32

    def check(username: str, password: str) -> bool:
        user = username.encode("utf-8", "surrogateescape")
        expected = table.get(user)
        given = password.encode("utf-8", "surrogateescape")
        ok = hmac.compare_digest(given, expected if expected is not None else dummy)
        return ok and expected is not None

    return check


class BasicAuthMiddleware:
    """HTTP Basic authentication (RFC 7617) in front of the app.

    `check(username, password)` (plain or async) says whether the credentials
    are good; `basic_auth_users` builds one with constant-time comparison.
    Without good credentials the answer is 401 with
    ``WWW-Authenticate: Basic realm="...", charset="UTF-8"``; with them the
    user name is in ``request.state.user``. Paths in `exclude` (exact) and
    CORS preflights pass through untouched.
    """

    def __init__(
        self,
        check: CredentialCheck,
        *,
        realm: str = "aserve",
        exclude: Collection[str] = (),
    ) -> None:
        if '"' in realm or "\\" in realm:
            raise ValueError("realm cannot contain quotes or backslashes")
        self.check = check
        self.exclude = frozenset(exclude)
        self._challenge = f'Basic realm="{realm}", charset="UTF-8"'

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if request.path in self.exclude or (
            request.method == "OPTIONS" and "access-control-request-method" in request.headers
        ):
            return await call_next(request)
        credentials = _basic_credentials(request.headers.get("authorization"))
        if credentials is not None:
            result = self.check(*credentials)
            if not isinstance(result, bool):
                result = await result
            if result:
                request.state.user = credentials[0]
                return await call_next(request)
        return PlainTextResponse(
            "Unauthorized\n", status=401, headers={"www-authenticate": self._challenge}
        )


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        text = decoded.decode("latin-1")
    username, sep, password = text.partition(":")
    if not sep:
        return None
    return username, password


_HSTS_RE = re.compile(r"max-age=\d+(?:\s*;\s*(?:includeSubDomains|preload))*", re.IGNORECASE)


def hsts_value(hsts: int | str) -> str:
    """A ``Strict-Transport-Security`` value: seconds (``31536000``) become
    ``max-age=31536000``; a whole value (``max-age=63072000; includeSubDomains;
    preload``) is checked (RFC 6797 6.1). ValueError for anything else."""
    if isinstance(hsts, bool):
        raise ValueError(f"hsts must be seconds or a Strict-Transport-Security value, not {hsts!r}")
    if isinstance(hsts, int):
        if hsts < 0:
            raise ValueError(f"the HSTS max-age cannot be negative, not {hsts}")
        return f"max-age={hsts}"
    text = hsts.strip()
    if text.isdigit():
        return f"max-age={text}"
    if _HSTS_RE.fullmatch(text) is None:
        raise ValueError(
            f"invalid Strict-Transport-Security value {hsts!r}: "
            "seconds, or 'max-age=N' with '; includeSubDomains' and '; preload'"
        )
    return text


class HTTPSRedirectMiddleware:
    """Send plain-HTTP requests to HTTPS, and tell browsers to stay there.

    A request whose ``request.scheme`` is ``http`` gets ``308 Permanent
    Redirect`` (method and body kept) to the same URL with ``https``: the
    host of its ``Host`` header, without its port unless `https_port` says
    which one (a port other than 443). Behind a proxy that terminates TLS,
    turn on the server's ``proxy_headers``: the scheme is then the one the
    trusted proxy announces, and only requests that reached it over plain
    HTTP are redirected. Paths in `exclude` (exact, or a prefix ending in
    ``/``, such as a health check) are served over HTTP as they are.

    `hsts` (seconds, or a whole value such as ``"max-age=63072000;
    includeSubDomains; preload"``) adds ``Strict-Transport-Security`` to every
    HTTPS answer that has none (RFC 6797 7.2: never to plain HTTP ones).
    With ``redirect=False`` the middleware only does that.
    """

    def __init__(
        self,
        *,
        redirect: bool = True,
        status: int = 308,
        https_port: int | None = None,
        exclude: Collection[str] = (),
        hsts: int | str | None = None,
    ) -> None:
        if status not in (301, 302, 307, 308):
            raise ValueError(f"a redirect status is 301, 302, 307 or 308, not {status}")
        if https_port is not None and not 0 < https_port < 65536:
            raise ValueError(f"https_port must be between 1 and 65535, not {https_port}")
        if isinstance(exclude, str):
            raise TypeError("exclude is a collection of paths, not one string")
        self.redirect = redirect
        self.status = status
        self.port_suffix = "" if https_port in (None, 443) else f":{https_port}"
        self.exact = frozenset(path for path in exclude if not path.endswith("/"))
        self.prefixes = tuple(path for path in exclude if path.endswith("/"))
        self.hsts = hsts_value(hsts) if hsts is not None else None

    async def __call__(self, request: Request, call_next: CallNext) -> Response:
        if request.scheme == "https":
            response = await call_next(request)
            if self.hsts is not None and "strict-transport-security" not in response.headers:
                response.headers["strict-transport-security"] = self.hsts
            return response
        if not self.redirect or self._excluded(request.path):
            return await call_next(request)
        return self._redirect(request)

    def _excluded(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))

    def _redirect(self, request: Request) -> Response:
        host = request.headers.get("host", "")
        try:
            check_host(host)
        except BadRequest:
            host = ""
        if not host:
            return PlainTextResponse("A Host header is needed to redirect to HTTPS\n", status=400)
        if host.startswith("["):  # an IPv6 literal
            host = host[: host.find("]") + 1]
        else:
            host = host.partition(":")[0]
        url = request.url  # the target as sent, a prefix a proxy stripped put back
        target = url.components._replace(scheme="", netloc="").geturl() or "/"
        location = f"https://{host}{self.port_suffix}{target}"
        return Response(
            f"Redirecting to {location}\n",
            status=self.status,
            headers={"location": location},
            media_type="text/plain",
        )
