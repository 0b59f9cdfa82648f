"""StaticFiles and FileResponse over a real socket: safe paths, validators and
304/412, Range (a table of cases with their exact bytes), directories and
listings, precompressed siblings, and what happens when files misbehave."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
from collections.abc import AsyncIterator, Iterable
from email.utils import formatdate
from pathlib import Path

import pytest
from conftest import ConnectFactory, Reply, ServeFactory

import aserve
from aserve.static import FileBody, parse_range

DATA = b"0123456789abcdefghij" * 5  # 100 bytes, every 20-byte stretch readable
BIG = bytes(range(256)) * 4096  # 1 MiB: past the in-memory limit, goes out with sendfile
SECRET = b"top secret, outside the root"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A served root with files, directories and symlinks, and a secret beside it."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_bytes(SECRET)
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"Hello, static!\n")
    (root / "data.bin").write_bytes(DATA)
    (root / "big.bin").write_bytes(BIG)
    (root / "page.json").write_bytes(b"{}")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / "noext").write_bytes(b"?")
    (root / "archive.tar.gz").write_bytes(gzip.compress(b"tar"))
    (root / "café.txt").write_bytes(b"utf-8 name")
    (root / os.fsdecode(b"latin\xe9.txt")).write_bytes(b"latin-1 name")
    (root / "<b>&.txt").write_bytes(b"tricky name")
    sub = root / "sub"
    sub.mkdir()
    (sub / "index.html").write_bytes(b"<p>index</p>")
    (sub / "nested.txt").write_bytes(b"nested")
    (root / "empty").mkdir()
    (root / "evil.example").mkdir()
    (root / "link_in").symlink_to("hello.txt")
    (root / "link_out").symlink_to(tmp_path / "secret.txt")
    (root / "dirlink_out").symlink_to(outside)
    (root / "sub" / "up_and_in").symlink_to("../hello.txt")
    os.mkfifo(root / "fifo")
    return root


async def fetch(
    port: int,
    connect: ConnectFactory,
    target: bytes | str,
    headers: Iterable[tuple[str, str]] = (),
    method: str = "GET",
) -> Reply:
    client = await connect(port)
    if isinstance(target, str):
        target = target.encode("utf-8")
    head = b"%s %s HTTP/1.1\r\nHost: test\r\n" % (method.encode(), target)
    for name, value in headers:
        head += f"{name}: {value}\r\n".encode("latin-1")
    await client.send(head + b"\r\n")
    return await client.response(method)


@pytest.fixture
async def port(tree: Path, serve: ServeFactory) -> AsyncIterator[int]:
    async with serve(aserve.StaticFiles(tree, listing=True)) as server:
        yield server.port


# --------------------------------------------------------------------------- safe paths

TRAVERSALS = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/..%2fsecret.txt",
    "/sub/..%2f..%2fsecret.txt",
    "/sub%2f..%2f..%2fsecret.txt",
    "/%252e%252e/secret.txt",
    "/..\\secret.txt",
    "/%5c..%5csecret.txt",
    "/sub\\..\\..\\secret.txt",
    "/hello.txt%00.png",
    "/%00",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/%2f%2fetc/passwd",
    "/link_out",
    "/dirlink_out/x.txt",
    "/dirlink_out/",
    "/sub/../../secret.txt",
    "/fifo",
    "/hello.txt/",
    "/nonexistent",
    "/" + "a" * 5000,
]


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_traversal_attempts_get_404(port: int, connect: ConnectFactory, target: str) -> None:
    reply = await fetch(port, connect, target)
    assert reply.status in (400, 404), reply
    assert SECRET not in reply.body


@pytest.mark.parametrize(
    ("path_param", "status"),
    [
        ("hello.txt", 200),
        ("sub/nested.txt", 200),
        ("../secret.txt", 404),
        ("sub/../../secret.txt", 404),
        ("/etc/passwd", 404),
        ("..\\secret.txt", 404),
        ("hello.txt\x00", 404),
        (b"sub%2fnested.txt", 404),
        (b"sub/nested.txt", 200),
        (b"%2e%2e/secret.txt", 404),
    ],
)
async def test_mounted_path_comes_from_path_params(
    tree: Path, serve: ServeFactory, connect: ConnectFactory, path_param: str | bytes, status: int
) -> None:
    static = aserve.StaticFiles(tree)

    async def mounted(request: aserve.Request) -> aserve.Response:
        request.path_params["path"] = path_param
        return await static(request)

    async with serve(mounted) as server:
        reply = await fetch(server.port, connect, "/static/whatever")
    assert reply.status == status
    assert SECRET not in reply.body


@pytest.mark.parametrize(
    ("target", "status", "body"),
    [
        ("/static/hello.txt", 200, b"Hello, static!\n"),
        ("/static/sub/nested.txt", 200, b"nested"),
        ("/st%61tic/hello.txt", 200, b"Hello, static!\n"),
        ("/static/sub/", 200, b"<p>index</p>"),
        ("/static/%2e%2e/secret.txt", 404, None),
        ("/static/../secret.txt", 404, None),
        ("/static%2fhello.txt", 404, None),
        ("/hello.txt", 404, None),
    ],
)
async def test_mounted_on_an_app(
    tree: Path,
    serve: ServeFactory,
    connect: ConnectFactory,
    target: str,
    status: int,
    body: bytes | None,
) -> None:
    app = aserve.App()
    app.mount("/static", aserve.StaticFiles(tree, listing=True))
    async with serve(app) as server:
        reply = await fetch(server.port, connect, target)
    assert reply.status == status
    if body is not None:
        assert reply.body == body
    assert SECRET not in reply.body


async def test_mount_redirects_and_lists_with_the_prefix(
    tree: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    app = aserve.App()
    app.mount("/files", aserve.StaticFiles(tree, listing=True))
    async with serve(app) as server:
        reply = await fetch(server.port, connect, "/files")
        assert (reply.status, reply.header("location")) == (301, "/files/")
        reply = await fetch(server.port, connect, "/files/sub")
        assert (reply.status, reply.header("location")) == (301, "/files/sub/")
        reply = await fetch(server.port, connect, "/files/")
        assert reply.status == 200
        assert "Index of /files/" in reply.body.decode()
        assert '<a href="hello.txt">' in reply.body.decode()


async def test_symlinks_inside_the_root_are_followed(port: int, connect: ConnectFactory) -> None:
    for target in ("/link_in", "/sub/up_and_in"):
        reply = await fetch(port, connect, target)
        assert (reply.status, reply.body) == (200, b"Hello, static!\n")


async def test_follow_symlinks_serves_links_leading_outside(
    tree: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(aserve.StaticFiles(tree, follow_symlinks=True)) as server:
        reply = await fetch(server.port, connect, "/link_out")
        assert (reply.status, reply.body) == (200, SECRET)
        # Following symlinks never makes ".." acceptable.
        reply = await fetch(server.port, connect, "/%2e%2e/secret.txt")
        assert reply.status == 404


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("/caf%C3%A9.txt", b"utf-8 name"),
        ("/latin%E9.txt", b"latin-1 name"),
        ("/%3Cb%3E%26.txt", b"tricky name"),
        ("/./hello.txt", b"Hello, static!\n"),
        ("/sub//nested.txt", b"nested"),
    ],
)
async def test_encoded_names_are_found(
    port: int, connect: ConnectFactory, target: str, body: bytes
) -> None:
    reply = await fetch(port, connect, target)
    assert (reply.status, reply.body) == (200, body)


def test_a_missing_root_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(aserve.ConfigError):
        aserve.StaticFiles(tmp_path / "missing")
    with pytest.raises(aserve.ConfigError):
        aserve.StaticFiles(tmp_path, index="../x.html")


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("target", "content_type"),
    [
        ("/hello.txt", "text/plain; charset=utf-8"),
        ("/sub/index.html", "text/html; charset=utf-8"),
        ("/page.json", "application/json; charset=utf-8"),
        ("/image.png", "image/png"),
        ("/noext", "application/octet-stream"),
        ("/archive.tar.gz", "application/gzip"),
        ("/big.bin", "application/octet-stream"),
    ],
)
async def test_content_type_from_the_name(
    port: int, connect: ConnectFactory, target: str, content_type: str
) -> None:
    reply = await fetch(port, connect, target)
    assert reply.status == 200
    assert reply.header("content-type") == content_type
    assert reply.header("content-encoding") is None


async def test_a_file_carries_its_validators(
    tree: Path, port: int, connect: ConnectFactory
) -> None:
    st = (tree / "hello.txt").stat()
    reply = await fetch(port, connect, "/hello.txt")
    assert reply.header("content-length") == "15"
    assert reply.header("accept-ranges") == "bytes"
    assert reply.header("last-modified") == formatdate(st.st_mtime, usegmt=True)
    assert reply.header("etag") == f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


async def test_head_has_the_get_head_and_no_body(port: int, connect: ConnectFactory) -> None:
    for target in ("/hello.txt", "/big.bin", "/empty/"):
        get = await fetch(port, connect, target)
        head = await fetch(port, connect, target, method="HEAD")
        assert head.status == get.status == 200
        assert head.body == b""
        assert head.header("content-length") == str(len(get.body))
        assert head.header("etag") == get.header("etag")


async def test_head_ignores_range(port: int, connect: ConnectFactory) -> None:
    reply = await fetch(port, connect, "/data.bin", [("Range", "bytes=0-9")], method="HEAD")
    assert reply.status == 200
    assert reply.header("content-length") == "100"


async def test_other_methods_get_405_with_allow(port: int, connect: ConnectFactory) -> None:
    client = await connect(port)
    await client.send(b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    reply = await client.response()
    assert reply.status == 405
    assert reply.header("allow") == "GET, HEAD"


# --------------------------------------------------------------------------- conditional


async def test_conditional_requests(tree: Path, port: int, connect: ConnectFactory) -> None:
    first = await fetch(port, connect, "/hello.txt")
    etag = first.header("etag")
    modified = first.header("last-modified")
    assert etag and modified
    older = formatdate((tree / "hello.txt").stat().st_mtime - 3600, usegmt=True)
    cases: list[tuple[list[tuple[str, str]], int]] = [
        ([("If-None-Match", etag)], 304),
        ([("If-None-Match", f"W/{etag}")], 304),
        ([("If-None-Match", f'"other", {etag}')], 304),
        ([("If-None-Match", "*")], 304),
        ([("If-None-Match", '"other"')], 200),
        ([("If-Modified-Since", modified)], 304),
        ([("If-Modified-Since", older)], 200),
        ([("If-Modified-Since", "not a date")], 200),
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
        ([("If-None-Match", '"other"'), ("If-Modified-Since", modified)], 200),
        ([("If-Match", etag)], 200),
        ([("If-Match", "*")], 200),
        ([("If-Match", '"other"')], 412),
        ([("If-Match", f"W/{etag}")], 412),
        ([("If-Unmodified-Since", older)], 412),
        ([("If-Unmodified-Since", modified)], 200),
    ]
    for headers, status in cases:
        reply = await fetch(port, connect, "/hello.txt", headers)
        assert reply.status == status, headers
        if status == 304:
            assert reply.body == b""
            assert reply.header("etag") == etag
            assert reply.header("content-length") is None
        if status == 412:
            assert reply.body == b""


async def test_if_range(port: int, connect: ConnectFactory) -> None:
    first = await fetch(port, connect, "/data.bin")
    etag, modified = first.header("etag"), first.header("last-modified")
    assert etag and modified
    cases = [(etag, 206), ('"stale"', 200), (f"W/{etag}", 200), (modified, 206)]
    cases.append(("Mon, 01 Jan 2001 00:00:00 GMT", 200))
    for if_range, status in cases:
        headers = [("Range", "bytes=0-9"), ("If-Range", if_range)]
        reply = await fetch(port, connect, "/data.bin", headers)
        assert reply.status == status, if_range
        assert reply.body == (DATA[:10] if status == 206 else DATA)


# --------------------------------------------------------------------------- ranges

# (Range header, status, Content-Range, body) for the 100-byte data.bin
RANGES: list[tuple[str, int, str | None, bytes]] = [
    ("bytes=0-0", 206, "bytes 0-0/100", b"0"),
    ("bytes=0-9", 206, "bytes 0-9/100", b"0123456789"),
    ("bytes=10-19", 206, "bytes 10-19/100", b"abcdefghij"),
    ("bytes=90-", 206, "bytes 90-99/100", b"abcdefghij"),
    ("bytes=-5", 206, "bytes 95-99/100", b"fghij"),
    ("bytes=-500", 206, "bytes 0-99/100", DATA),
    ("bytes=95-200", 206, "bytes 95-99/100", b"fghij"),
    ("bytes=0-99999999999999999999999", 206, "bytes 0-99/100", DATA),
    ("bytes= 5-9 ", 206, "bytes 5-9/100", b"56789"),
    ("BYTES=5-9", 206, "bytes 5-9/100", b"56789"),
    ("bytes=0-4,3-9", 206, "bytes 0-9/100", b"0123456789"),  # overlapping: merged
    ("bytes=0-4,5-9", 206, "bytes 0-9/100", b"0123456789"),  # touching: merged
    ("bytes=200-300,0-1", 206, "bytes 0-1/100", b"01"),  # the unsatisfiable one dropped
    ("bytes=0-1,,", 206, "bytes 0-1/100", b"01"),  # empty list elements are allowed
    ("bytes=100-", 416, "bytes */100", b""),
    ("bytes=100-200", 416, "bytes */100", b""),
    ("bytes=-0", 416, "bytes */100", b""),
    ("bytes=100-,200-", 416, "bytes */100", b""),
    # Not valid bytes-range syntax: ignored, the whole file (RFC 9110 14.2).
    ("bytes=5-2", 200, None, DATA),
    ("bytes=abc", 200, None, DATA),
    ("bytes=1-2-3", 200, None, DATA),
    ("bytes=-", 200, None, DATA),
    ("bytes=0-1,x", 200, None, DATA),
    ("bytes=", 200, None, DATA),
    ("bytes=+1-2", 200, None, DATA),
    ("bytes=\u00b2-\u00b3", 200, None, DATA),  # "²-³": str.isdigit() says yes; not here
    ("items=0-5", 200, None, DATA),
    ("bytes 0-5", 200, None, DATA),
    ("bytes=" + ",".join(f"{i}-{i}" for i in range(0, 66, 2)), 200, None, DATA),  # 33 ranges
]


@pytest.mark.parametrize(("range_", "status", "content_range", "body"), RANGES)
async def test_single_ranges(
    port: int,
    connect: ConnectFactory,
    range_: str,
    status: int,
    content_range: str | None,
    body: bytes,
) -> None:
    reply = await fetch(port, connect, "/data.bin", [("Range", range_)])
    assert reply.status == status
    assert reply.header("content-range") == content_range
    assert reply.body == body
    assert reply.header("content-length") == str(len(body))
    if status == 206:
        assert reply.header("content-type") == "application/octet-stream"


def multipart(boundary: str, parts: list[tuple[int, int, bytes]], size: int, ctype: str) -> bytes:
    out = []
    for index, (first, last, data) in enumerate(parts):
        out.append(
            (
                ("\r\n" if index else "")
                + f"--{boundary}\r\nContent-Type: {ctype}\r\n"
                + f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n"
            ).encode()
            + data
        )
    return b"".join(out) + f"\r\n--{boundary}--\r\n".encode()


MULTI: list[tuple[str, list[tuple[int, int, bytes]]]] = [
    ("bytes=0-4,10-14", [(0, 4, b"01234"), (10, 14, b"abcde")]),
    ("bytes=10-14,0-4", [(10, 14, b"abcde"), (0, 4, b"01234")]),  # client's order kept
    ("bytes=0-1,-2", [(0, 1, b"01"), (98, 99, b"ij")]),
    ("bytes=0-2,5-6,3-3", [(0, 3, b"0123"), (5, 6, b"56")]),  # 0-2 and 3-3 touch: merged
]


@pytest.mark.parametrize(("range_", "parts"), MULTI)
async def test_multiple_ranges_are_multipart(
    port: int, connect: ConnectFactory, range_: str, parts: list[tuple[int, int, bytes]]
) -> None:
    reply = await fetch(port, connect, "/data.bin", [("Range", range_)])
    assert reply.status == 206
    ctype = reply.header("content-type")
    assert ctype is not None
    match = re.fullmatch(r"multipart/byteranges; boundary=([0-9a-f]+)", ctype)
    assert match, ctype
    expected = multipart(match.group(1), parts, 100, "application/octet-stream")
    assert reply.body == expected
    assert reply.header("content-length") == str(len(expected))


async def test_ranges_of_a_large_file_go_through_sendfile(
    port: int, connect: ConnectFactory
) -> None:
    reply = await fetch(port, connect, "/big.bin", [("Range", "bytes=1000-599999")])
    assert reply.status == 206
    assert reply.body == BIG[1000:600000]
    reply = await fetch(port, connect, "/big.bin", [("Range", "bytes=10-19,-100000")])
    ctype = reply.header("content-type")
    assert ctype is not None
    boundary = ctype.rpartition("=")[2]
    size = len(BIG)
    parts = [(10, 19, BIG[10:20]), (size - 100000, size - 1, BIG[-100000:])]
    assert reply.body == multipart(boundary, parts, size, "application/octet-stream")
    reply = await fetch(port, connect, "/big.bin")
    assert reply.body == BIG


def test_parse_range_directly() -> None:
    assert parse_range("bytes=0-0", 0) == []
    assert parse_range("bytes=-1", 0) == []
    assert parse_range("bytes=0-", 1) == [(0, 0)]
    assert parse_range("bytes=0-9,20-29,5-24", 100) == [(0, 29)]


# --------------------------------------------------------------------------- directories


async def test_directory_without_slash_redirects(port: int, connect: ConnectFactory) -> None:
    for target, location in [
        ("/sub", "/sub/"),
        ("/sub?x=1&y=2", "/sub/?x=1&y=2"),
        ("//evil.example", "/evil.example/"),
    ]:
        reply = await fetch(port, connect, target)
        assert reply.status == 301
        assert reply.header("location") == location


async def test_directory_serves_its_index(port: int, connect: ConnectFactory) -> None:
    reply = await fetch(port, connect, "/sub/")
    assert (reply.status, reply.body) == (200, b"<p>index</p>")
    assert reply.header("content-type") == "text/html; charset=utf-8"


async def test_listing_is_escaped_and_complete(port: int, connect: ConnectFactory) -> None:
    reply = await fetch(port, connect, "/")
    assert reply.status == 200
    assert reply.header("content-type") == "text/html; charset=utf-8"
    page = reply.body.decode("utf-8")
    assert '<a href="hello.txt">hello.txt</a>' in page
    assert '<a href="sub/">sub/</a>' in page
    assert '<a href="caf%C3%A9.txt">café.txt</a>' in page
    assert '<a href="latin%E9.txt">latin\ufffd.txt</a>' in page
    assert '<a href="%3Cb%3E%26.txt">&lt;b&gt;&amp;.txt</a>' in page
    assert "<b>&" not in page
    assert "link_in" in page
    assert "link_out" not in page and "dirlink_out" not in page
    assert ">fifo<" not in page
    assert 'title="1048576 bytes">1.0 MiB<' in page
    assert "../" not in page  # no parent above the root
    assert page.index("sub/") < page.index("hello.txt")  # directories first
    reply = await fetch(port, connect, "/empty/")
    assert reply.status == 200
    assert '<a href="../">../</a>' in reply.body.decode()
    assert "Index of /empty/" in reply.body.decode()


async def test_listing_title_is_escaped(tree: Path, port: int, connect: ConnectFactory) -> None:
    (tree / "<i>").mkdir()
    reply = await fetch(port, connect, "/%3Ci%3E/")
    assert reply.status == 200
    assert "Index of /&lt;i&gt;/" in reply.body.decode()
    assert "<i>" not in reply.body.decode()


async def test_no_listing_when_off(
    tree: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(aserve.StaticFiles(tree)) as server:
        assert (await fetch(server.port, connect, "/empty/")).status == 404
        assert (await fetch(server.port, connect, "/")).status == 404
        assert (await fetch(server.port, connect, "/sub/")).status == 200


# --------------------------------------------------------------------------- precompressed


@pytest.fixture
def compressed(tree: Path) -> Path:
    (tree / "style.css").write_bytes(b"body { color: red }" * 10)
    (tree / "style.css.gz").write_bytes(b"GZ-BYTES")
    (tree / "style.css.br").write_bytes(b"BR-BYTES")
    (tree / "only.js").write_bytes(b"plain")
    (tree / "only.js.gz").write_bytes(b"GZ-ONLY")
    return tree


@pytest.mark.parametrize(
    ("target", "accept", "body", "coding", "vary"),
    [
        ("/style.css", None, b"body { color: red }" * 10, None, True),
        ("/style.css", "gzip", b"GZ-BYTES", "gzip", True),
        ("/style.css", "gzip, deflate, br", b"BR-BYTES", "br", True),
        ("/style.css", "br;q=0.5, gzip", b"GZ-BYTES", "gzip", True),
        ("/style.css", "gzip;q=0, br;q=0", b"body { color: red }" * 10, None, True),
        ("/style.css", "*", b"BR-BYTES", "br", True),
        ("/style.css", "identity", b"body { color: red }" * 10, None, True),
        ("/only.js", "br, gzip", b"GZ-ONLY", "gzip", True),
        ("/hello.txt", "br, gzip", b"Hello, static!\n", None, False),
    ],
)
async def test_precompressed_siblings(
    compressed: Path,
    port: int,
    connect: ConnectFactory,
    target: str,
    accept: str | None,
    body: bytes,
    coding: str | None,
    vary: bool,
) -> None:
    headers = [("Accept-Encoding", accept)] if accept else []
    reply = await fetch(port, connect, target, headers)
    assert reply.status == 200
    assert reply.body == body
    assert reply.header("content-encoding") == coding
    assert (reply.header("vary") == "Accept-Encoding") is vary
    if target.endswith(".css"):  # the type of the file, not of its compressed form
        assert reply.header("content-type") == "text/css; charset=utf-8"


async def test_precompressed_variants_have_their_own_etag(
    compressed: Path, port: int, connect: ConnectFactory
) -> None:
    plain = await fetch(port, connect, "/style.css")
    gz = await fetch(port, connect, "/style.css", [("Accept-Encoding", "gzip")])
    assert plain.header("etag") != gz.header("etag")
    etag = gz.header("etag")
    assert etag is not None
    headers = [("Accept-Encoding", "gzip"), ("If-None-Match", etag)]
    assert (await fetch(port, connect, "/style.css", headers)).status == 304
    assert (await fetch(port, connect, "/style.css", [("If-None-Match", etag)])).status == 200


# --------------------------------------------------------------------------- misbehaving files


async def test_unreadable_file_is_403(
    tree: Path, port: int, connect: ConnectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse(path: str, *args: int, **kwargs: int) -> int:
        if str(path).endswith("hello.txt"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    # chmod 0 would do outside root; refusing in os.open works for everyone.
    monkeypatch.setattr("aserve.static.os.open", refuse)
    reply = await fetch(port, connect, "/hello.txt")
    assert reply.status == 403
    assert SECRET not in reply.body


async def test_file_shrinking_mid_response_closes_the_connection(
    tree: Path, serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    static = aserve.StaticFiles(tree)

    async def shrink_after_planning(request: aserve.Request) -> aserve.Response:
        response = await static(request)
        os.truncate(tree / "big.bin", 1000)
        return response

    async with serve(shrink_after_planning) as server:
        client = await connect(server.port)
        await client.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        await client.read_until_close()
        assert b"200 OK" in client.received
        assert len(client.received) < len(BIG)
        await assert_serving_static(server.port, connect)


async def assert_serving_static(port: int, connect: ConnectFactory) -> None:
    reply = await fetch(port, connect, "/hello.txt")
    assert reply.status == 200


async def test_file_deleted_after_lookup_is_404(
    tree: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    static = aserve.StaticFiles(tree)
    real_lstat = os.lstat

    def lstat_then_delete(path: object, *args: object, **kwargs: object) -> os.stat_result:
        result = real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]
        if str(path).endswith("hello.txt"):
            os.unlink(str(path))
        return result

    async with serve(static) as server:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("aserve.static.os.lstat", lstat_then_delete)
            reply = await fetch(server.port, connect, "/hello.txt")
    assert reply.status == 404


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_no_descriptor_leaks(port: int, connect: ConnectFactory) -> None:
    await fetch(port, connect, "/big.bin", method="HEAD")  # warm up lazily created fds
    before = open_fds()
    for _ in range(20):
        client = await connect(port)
        for method in ("HEAD", "GET", "GET"):
            await client.send(f"{method} /big.bin HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            await client.response(method)
        await client.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1,5-9\r\n\r\n")
        await client.response()
        await client.close()
    # A client leaving mid-body.
    client = await connect(port, rcvbuf=4096)
    await client.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    await client.reader.read(100)
    await client.close()
    for _ in range(100):
        if open_fds() <= before + 1:  # allow the client socket still being torn down
            break
        await asyncio.sleep(0.02)
    assert open_fds() <= before + 1


async def test_file_body_closes_its_descriptor(tree: Path) -> None:
    fd = os.open(tree / "hello.txt", os.O_RDONLY)
    body = FileBody(fd, [(0, 5)])
    await body.aclose()
    with pytest.raises(OSError):
        os.fstat(fd)
    assert [chunk async for chunk in body] == []


# --------------------------------------------------------------------------- FileResponse


async def test_file_response(tree: Path, serve: ServeFactory, connect: ConnectFactory) -> None:
    async def download(request: aserve.Request) -> aserve.Response:
        if request.path == "/plain":
            return aserve.FileResponse(tree / "data.bin", filename="report été.bin")
        if request.path == "/typed":
            return aserve.FileResponse(tree / "data.bin", media_type="text/csv", status=201)
        return aserve.FileResponse(tree / "big.bin", request=request)

    async with serve(download) as server:
        reply = await fetch(server.port, connect, "/plain")
        assert (reply.status, reply.body) == (200, DATA)
        assert reply.header("content-disposition") == (
            "attachment; filename=\"report ?t?.bin\"; filename*=UTF-8''report%20%C3%A9t%C3%A9.bin"
        )
        reply = await fetch(server.port, connect, "/typed", [("Range", "bytes=0-1")])
        assert (reply.status, reply.body) == (201, DATA)
        assert reply.header("content-type") == "text/csv"
        reply = await fetch(server.port, connect, "/ranged", [("Range", "bytes=-3")])
        assert (reply.status, reply.body) == (206, BIG[-3:])


def test_file_response_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        aserve.FileResponse(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        aserve.FileResponse(tmp_path)
