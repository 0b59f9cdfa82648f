"""Every kind of response aserve produces, checked by httplint (the linter behind REDbot).

A real Server runs an App with a few routes and a StaticFiles mount; each case
sends one request as raw bytes, reads the answer as raw bytes and feeds it to
httplint together with the request it answers: the status line and the header
lines exactly as they came off the wire, the content with the transfer coding
undone (that is what httplint reads). A BAD note always fails; a WARN note
fails unless `ALLOWED` names it with the reason it is right for that response.

Engine-level refusals (400, 413, 414, 431, 501) are linted too: they are
responses aserve produces as well, without any handler.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import h11
import pytest
from conftest import ConnectFactory, ServeFactory

import aserve

httplint = pytest.importorskip("httplint", reason="httplint is in the test extra")

SMALL = b"Plain text file, served from memory.\n" * 4
BIG = bytes(range(256)) * 1024  # 256 KiB: past the in-memory limit, sent with sendfile
HTML_FILE = b"<!doctype html>\n<html><head><title>t</title></head><body>page</body></html>\n"
OLD_MTIME = 1_700_000_000  # files dated in the past, so Last-Modified is not "now"
MAX_BODY = 1024


@dataclass(frozen=True)
class Case:
    """One request to send, and what status its answer must have."""

    id: str
    method: str
    target: str
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    raw: bytes | None = None  # the whole request, when it is malformed on purpose


# Notes that are right for the response they were found on, each with the
# reason: note class name -> (the case ids it is allowed on, or None for every
# case; why). Anything else at WARN or BAD fails the case.
ALLOWED: dict[str, tuple[frozenset[str] | None, str]] = {
    "FRESHNESS_HEURISTIC": (
        None,
        "aserve sets no Cache-Control by default (an app's choice; StaticFiles has no "
        "caching policy option yet), so caches may use heuristic freshness (RFC 9111 4.2.2)",
    ),
    "PARTIAL_WITHOUT_RANGE": (
        frozenset({"static-multirange-206"}),
        "linter false positive: a multipart/byteranges 206 carries Content-Range in each "
        "part and must not carry one in its head (RFC 9110 14.6, 15.3.7.2); checked below",
    ),
    "STATUS_BAD_REQUEST": (
        frozenset({"refused-400-malformed"}),
        "the request is malformed on purpose; 400 is the answer it deserves",
    ),
    "STATUS_URI_TOO_LONG": (
        frozenset({"refused-414-long-target"}),
        "the target is longer than max_url_size (8 KiB) on purpose, past the 8,000 octets "
        "RFC 9112 3 asks every recipient to support; 414 is the answer it deserves",
    ),
}


def _app(root: Path) -> aserve.App:
    app = aserve.App()

    class Conflict(Exception):
        pass

    @app.exception_handler(Conflict)
    async def conflict(request: aserve.Request, exc: Exception) -> aserve.Response:
        return aserve.JSONResponse({"error": "conflict", "detail": str(exc)}, status=409)

    @app.exception_handler(404)
    async def not_found(request: aserve.Request, exc: Exception) -> aserve.Response:
        return aserve.HTMLResponse("<!doctype html>\n<title>Not here</title>\n", status=404)

    @app.get("/text")
    async def text(request: aserve.Request) -> aserve.Response:
        return aserve.PlainTextResponse("Hello, World!\n")

    @app.get("/json")
    async def json_(request: aserve.Request) -> aserve.Response:
        return aserve.JSONResponse({"message": "Hello, World!", "n": [1, 2, 3]})

    @app.get("/html")
    async def html(request: aserve.Request) -> aserve.Response:
        return aserve.HTMLResponse(
            "<!doctype html>\n<html><head><title>Hi</title></head><body>Hi</body></html>\n"
        )

    @app.get("/bytes")
    async def raw_bytes(request: aserve.Request) -> aserve.Response:
        return aserve.Response(b"\x00\x01\x02", media_type="application/octet-stream")

    @app.get("/empty")
    async def empty(request: aserve.Request) -> aserve.Response:
        return aserve.Response(status=204)

    @app.get("/redirect")
    async def redirect(request: aserve.Request) -> aserve.Response:
        return aserve.RedirectResponse("/text")

    @app.get("/moved")
    async def moved(request: aserve.Request) -> aserve.Response:
        return aserve.RedirectResponse("/text", status=301)

    @app.get("/see-other")
    async def see_other(request: aserve.Request) -> aserve.Response:
        return aserve.RedirectResponse("/text?from=form", status=303)

    @app.get("/stream")
    async def stream(request: aserve.Request) -> aserve.Response:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield b"line %d\n" % i

        return aserve.StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/events")
    async def events(request: aserve.Request) -> aserve.Response:
        async def items() -> AsyncIterator[str]:
            yield "one"
            yield "two"

        return aserve.EventSourceResponse(items(), ping_interval=None)

    @app.get("/cookie")
    async def cookie(request: aserve.Request) -> aserve.Response:
        response = aserve.PlainTextResponse("cookie set\n")
        response.set_cookie("session", "abc123", max_age=3600, httponly=True, secure=True)
        return response

    @app.get("/download")
    async def download(request: aserve.Request) -> aserve.Response:
        return aserve.FileResponse(root / "small.txt", filename="report.txt", request=request)

    @app.post("/upload")
    async def upload(request: aserve.Request) -> aserve.Response:
        body = await request.body()
        return aserve.JSONResponse(
            {"received": len(body)}, status=201, headers={"Location": "/upload/1"}
        )

    @app.get("/boom")
    async def boom(request: aserve.Request) -> aserve.Response:
        raise RuntimeError("handler bug")

    @app.get("/conflict")
    async def conflict_route(request: aserve.Request) -> aserve.Response:
        raise Conflict("the item changed meanwhile")

    @app.get("/forbidden")
    async def forbidden(request: aserve.Request) -> aserve.Response:
        raise aserve.HTTPException(403)

    app.mount("/static", aserve.StaticFiles(root, listing=True))
    return app


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "small.txt").write_bytes(SMALL)
    (tmp_path / "big.bin").write_bytes(BIG)
    (tmp_path / "page.html").write_bytes(HTML_FILE)
    (tmp_path / "style.css").write_bytes(b"body { color: black; }\n")
    (tmp_path / "data.json").write_bytes(b'{"a": 1}\n')
    (tmp_path / "zipped.txt").write_bytes(SMALL)
    (tmp_path / "zipped.txt.gz").write_bytes(gzip.compress(SMALL, mtime=0))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inner.txt").write_bytes(b"inner\n")
    for path in tmp_path.rglob("*"):
        os.utime(path, (OLD_MTIME, OLD_MTIME))
    os.utime(tmp_path, (OLD_MTIME, OLD_MTIME))
    return tmp_path


# Request header values naming a file's validators, filled in once the files exist.
ETAG_SMALL, ETAG_BIG, DATE_SMALL = "<etag small.txt>", "<etag big.bin>", "<date small.txt>"


def with_validators(case: Case, root: Path) -> Case:
    """`case` with the validator placeholders in its headers replaced by the real ones."""

    def etag(name: str) -> str:
        st = os.stat(root / name)
        return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'

    real = {
        ETAG_SMALL: etag("small.txt"),
        ETAG_BIG: etag("big.bin"),
        DATE_SMALL: time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(OLD_MTIME)),
    }
    return replace(case, headers=tuple((n, real.get(v, v)) for n, v in case.headers))


CASES = [
    Case("text", "GET", "/text", 200),
    Case("json", "GET", "/json", 200),
    Case("html", "GET", "/html", 200),
    Case("bytes", "GET", "/bytes", 200),
    Case("no-content-204", "GET", "/empty", 204),
    Case("redirect-307", "GET", "/redirect", 307),
    Case("redirect-301", "GET", "/moved", 301),
    Case("redirect-303", "GET", "/see-other", 303),
    Case("streamed-chunked", "GET", "/stream", 200),
    Case("event-stream", "GET", "/events", 200),
    Case("set-cookie", "GET", "/cookie", 200),
    Case("file-response-attachment", "GET", "/download", 200),
    Case(
        "created-201",
        "POST",
        "/upload",
        201,
        (("Content-Type", "application/octet-stream"),),
        b"x" * 100,
    ),
    Case("not-found-404", "GET", "/static/missing.txt", 404),
    Case("app-not-found-custom-404", "GET", "/nowhere", 404),
    Case("method-not-allowed-405", "DELETE", "/text", 405),
    Case("options", "OPTIONS", "/text", 200),
    Case("forbidden-403", "GET", "/forbidden", 403),
    Case("server-error-500", "GET", "/boom", 500),
    Case("custom-error-409", "GET", "/conflict", 409),
    Case(
        "too-large-413-declared",
        "POST",
        "/upload",
        413,
        (("Content-Type", "application/octet-stream"),),
        b"x" * (MAX_BODY + 1),
    ),
    Case(
        "too-large-413-chunked",
        "POST",
        "/upload",
        413,
        (("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")),
        b"%x\r\n%s\r\n0\r\n\r\n" % (MAX_BODY + 1, b"x" * (MAX_BODY + 1)),
    ),
    Case("head-text", "HEAD", "/text", 200),
    Case("head-streamed", "HEAD", "/stream", 200),
    Case("head-static-small", "HEAD", "/static/small.txt", 200),
    Case("head-static-big", "HEAD", "/static/big.bin", 200),
    Case("static-small", "GET", "/static/small.txt", 200),
    Case("static-big-sendfile", "GET", "/static/big.bin", 200),
    Case("static-html", "GET", "/static/page.html", 200),
    Case("static-css", "GET", "/static/style.css", 200),
    Case("static-json", "GET", "/static/data.json", 200),
    Case(
        "static-precompressed-gzip",
        "GET",
        "/static/zipped.txt",
        200,
        (("Accept-Encoding", "gzip"),),
    ),
    Case("static-range-206", "GET", "/static/small.txt", 206, (("Range", "bytes=0-9"),)),
    Case(
        "static-range-206-big",
        "GET",
        "/static/big.bin",
        206,
        (("Range", "bytes=1000-99999"),),
    ),
    Case(
        "static-multirange-206",
        "GET",
        "/static/small.txt",
        206,
        (("Range", "bytes=0-4,10-14"),),
    ),
    Case(
        "static-range-416",
        "GET",
        "/static/small.txt",
        416,
        (("Range", "bytes=99999-"),),
    ),
    Case(
        "static-if-range-stale-200",
        "GET",
        "/static/small.txt",
        200,
        (("Range", "bytes=0-9"), ("If-Range", '"other"')),
    ),
    Case("static-304-etag", "GET", "/static/small.txt", 304, (("If-None-Match", ETAG_SMALL),)),
    Case(
        "static-304-date",
        "GET",
        "/static/small.txt",
        304,
        (("If-Modified-Since", DATE_SMALL),),
    ),
    Case(
        "static-304-head",
        "HEAD",
        "/static/big.bin",
        304,
        (("If-None-Match", ETAG_BIG),),
    ),
    Case("static-412", "GET", "/static/small.txt", 412, (("If-Match", '"not-it"'),)),
    Case("static-405", "POST", "/static/small.txt", 405, (), b""),
    Case("static-dir-redirect-301", "GET", "/static/dir", 301),
    Case("static-listing", "GET", "/static/dir/", 200),
    Case(
        "http10-streamed-close-delimited",
        "GET",
        "/stream",
        200,
        raw=b"GET /stream HTTP/1.0\r\nHost: test\r\nUser-Agent: aserve-tests\r\n\r\n",
    ),
    Case(
        "http10-keep-alive",
        "GET",
        "/json",
        200,
        raw=b"GET /json HTTP/1.0\r\nHost: test\r\nConnection: keep-alive\r\n\r\n",
    ),
    Case(
        "refused-400-malformed",
        "GET",
        "/",
        400,
        raw=b"GET / HTTP/1.1\r\nHost: test\r\nBad Header: x\r\n\r\n",
    ),
    Case(
        "refused-414-long-target",
        "GET",
        "/",
        414,
        raw=b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: test\r\n\r\n",
    ),
    Case(
        "refused-431-big-head",
        "GET",
        "/",
        431,
        raw=b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n",
    ),
    Case(
        "refused-501-transfer-coding",
        "POST",
        "/upload",
        501,
        raw=b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    ),
]


# --------------------------------------------------------------------------- wire


@dataclass
class Wire:
    """One response as it came off the wire."""

    version: bytes
    status: bytes
    phrase: bytes
    headers: list[tuple[bytes, bytes]]
    content: bytes
    raw_head: bytes


def request_bytes(case: Case) -> bytes:
    if case.raw is not None:
        return case.raw
    lines = [f"{case.method} {case.target} HTTP/1.1", "Host: test", "User-Agent: aserve-tests"]
    for name, value in case.headers:
        lines.append(f"{name}: {value}")
    if case.body and not any(n.lower() == "transfer-encoding" for n, _ in case.headers):
        lines.append(f"Content-Length: {len(case.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + case.body


def split_response(data: bytes, method: str) -> Wire:
    """The status line and header lines as sent, and the content with chunking undone."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, f"no complete head in {data[:300]!r}"
    lines = head.split(b"\r\n")
    assert all(b"\n" not in line for line in lines), f"bare LF in head {head!r}"
    version, status, phrase = (lines[0].split(b" ", 2) + [b""])[:3]
    assert version.startswith(b"HTTP/"), lines[0]
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        assert colon and name == name.strip(), f"bad header line {line!r}"
        headers.append((name, value.strip(b" \t")))
    # The content: h11 (as a client) undoes the framing, whatever it is.
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "test")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    client.receive_data(b"")
    content = bytearray()
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            content += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
        elif event is h11.NEED_DATA:
            raise AssertionError(f"response cut short: {data[:300]!r}")
    return Wire(version[5:], status, phrase, headers, bytes(content), head)


async def fetch(port: int, connect: ConnectFactory, case: Case) -> Wire:
    client = await connect(port)
    await client.send(request_bytes(case))
    await client.response(case.method)
    return split_response(bytes(client.received), case.method)


# --------------------------------------------------------------------------- lint


@dataclass(frozen=True)
class Finding:
    level: str
    name: str
    subject: str
    summary: str

    def __str__(self) -> str:
        return f"[{self.level}] {self.name} ({self.subject}): {self.summary}"


def lint(case: Case, wire: Wire, port: int) -> list[Finding]:
    """httplint's notes on the response (subnotes included), linted with its request.

    The request's own notes are left out: they are about the test's requests,
    some malformed on purpose.
    """
    request = httplint.HttpRequestLinter()
    head, _, body = request_bytes(case).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, target, version = lines[0].split(b" ")
    request.process_request_topline(method, target, version.partition(b"/")[2])
    request.process_headers([(n, v.strip()) for n, _, v in (h.partition(b":") for h in lines[1:])])
    if b"chunked" not in head.lower():
        request.feed_content(body)
    request.finish_content(True)

    response = httplint.HttpResponseLinter(start_time=time.time())
    response.request = request
    response.base_uri = f"http://127.0.0.1:{port}{case.target}"
    response.is_head_response = case.method == "HEAD"
    response.process_response_topline(wire.version, wire.status, wire.phrase)
    response.process_headers(wire.headers)
    response.feed_content(wire.content)
    response.finish_content(True)

    found = []
    pending = list(response.notes)
    while pending:
        note = pending.pop(0)
        found.append(Finding(note.level.name, type(note).__name__, note.subject, note.summary))
        pending.extend(note.subnotes)
    return found


def unexplained(case: Case, findings: list[Finding]) -> list[str]:
    """The WARN and BAD findings that `ALLOWED` does not explain for this case."""
    problems = []
    for finding in findings:
        if finding.level not in ("WARN", "BAD"):
            continue
        where, _ = ALLOWED.get(finding.name, (frozenset(), ""))
        if where is not None and case.id not in where:
            problems.append(str(finding))
    return problems


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_response_passes_httplint(
    case: Case, root: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    case = with_validators(case, root)
    async with serve(_app(root), max_body_size=MAX_BODY) as server:
        port = server.port
        wire = await fetch(port, connect, case)
    assert int(wire.status) == case.status, wire.raw_head
    findings = lint(case, wire, port)
    problems = unexplained(case, findings)
    assert not problems, (
        f"httplint on {case.method} {case.target} -> {wire.status.decode()}:\n  "
        + "\n  ".join(problems)
        + f"\nhead:\n{wire.raw_head.decode('latin-1')}"
    )


async def test_multipart_ranges_carry_content_range_in_each_part(
    root: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    """What the PARTIAL_WITHOUT_RANGE allowance relies on (RFC 9110 14.6)."""
    [case] = [c for c in CASES if c.id == "static-multirange-206"]
    async with serve(_app(root), max_body_size=MAX_BODY) as server:
        wire = await fetch(server.port, connect, case)
    headers = {name.lower(): value for name, value in wire.headers}
    assert b"content-range" not in headers
    media, _, boundary = headers[b"content-type"].partition(b"; boundary=")
    assert media == b"multipart/byteranges" and boundary
    parts = wire.content.split(b"--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n", parts
    ranges = []
    for part in parts[1:-1]:
        part_head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in part_head.split(b"\r\n"))
        first, last = map(int, fields[b"Content-Range"].split(b" ")[1].split(b"/")[0].split(b"-"))
        assert data.removesuffix(b"\r\n") == SMALL[first : last + 1]
        ranges.append((first, last))
    assert ranges == [(0, 4), (10, 14)]


def test_allowed_notes_name_real_notes_and_cases() -> None:
    """A typo in ALLOWED would silently allow nothing."""
    import httplint.cache
    import httplint.message
    import httplint.status

    for name, (where, reason) in ALLOWED.items():
        assert any(
            hasattr(module, name) for module in (httplint.cache, httplint.message, httplint.status)
        ), name
        assert where is None or where <= {case.id for case in CASES}, where
        assert reason
