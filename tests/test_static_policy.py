"""StaticFiles policy over a real socket: hidden names (and the ways of spelling
them), Vary on every answer with a precompressed sibling, the Cache-Control
rules, error pages, the single-page-app fallback, the built-in media types;
alone and mounted on an App."""

from __future__ import annotations

import errno
import mimetypes
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from conftest import ConnectFactory, Reply, ServeFactory

import aserve
from aserve import static as static_module
from aserve.static import (
    IMMUTABLE_CACHE_CONTROL,
    IN_MEMORY_LIMIT,
    CacheRule,
    is_fingerprinted,
    media_type_for,
    parse_cache_control,
    parse_error_pages,
)

SECRET = b"SECRET=do-not-serve"
PAGE_404 = b"<!doctype html><h1>Nothing here</h1>\n"
PAGE_403 = b"<!doctype html><h1>Not for you</h1>\n"
PAGE_405 = b"<!doctype html><h1>Read only</h1>\n"
PAGE_500 = b"<!doctype html><h1>Broken</h1>\n"
APP = b"<!doctype html><div id=app></div>\n"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A served root with dotfiles at every depth, error pages, a single-page
    app's index, fingerprinted names and a precompressed stylesheet."""
    (tmp_path / "outside.html").write_bytes(b"outside the root")
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_bytes(APP)
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / "page.html").write_bytes(b"<p>page</p>")
    (root / ".env").write_bytes(SECRET)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(SECRET)
    (root / ".venv").mkdir()
    (root / ".venv" / "pyvenv.cfg").write_bytes(SECRET)
    (root / "sub").mkdir()
    (root / "sub" / ".secret").write_bytes(SECRET)
    (root / "sub" / "visible.txt").write_bytes(b"visible")
    (root / "sub" / ".well-known").mkdir()
    (root / "sub" / ".well-known" / "x").write_bytes(SECRET)
    known = root / ".well-known"
    (known / "acme-challenge").mkdir(parents=True)
    (known / "security.txt").write_bytes(b"Contact: mailto:security@example.com\n")
    (known / "acme-challenge" / "TOKEN123").write_bytes(b"TOKEN123.key")
    (known / ".hidden").write_bytes(SECRET)
    (root / ".errors").mkdir()
    (root / ".errors" / "404.html").write_bytes(PAGE_404)
    (root / "404.html").write_bytes(PAGE_404)
    (root / "403.html").write_bytes(PAGE_403)
    (root / "405.html").write_bytes(PAGE_405)
    (root / "500.html").write_bytes(PAGE_500)
    (root / "app.3f2a9c1b.js").write_bytes(b"console.log(1)")
    (root / "main-5f2a9c1b.css").write_bytes(b"body{}")
    (root / "report-20240101.pdf").write_bytes(b"%PDF")
    (root / "style.css").write_bytes(b"body { color: red }")
    (root / "style.css.gz").write_bytes(b"GZ-BYTES")
    (root / "assets").mkdir()
    (root / "assets" / "app.js").write_bytes(b"app()")
    (root / "assets" / "app.js.map").write_bytes(b"{}")
    (root / "empty").mkdir()
    return root


async def fetch(
    port: int,
    connect: ConnectFactory,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    method: str = "GET",
) -> Reply:
    client = await connect(port)
    head = f"{method} {target} HTTP/1.1\r\nHost: test\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n"
    if method not in ("GET", "HEAD"):
        head += "Content-Length: 0\r\n"
    await client.send(head.encode("latin-1") + b"\r\n")
    return await client.response(method)


@pytest.fixture
async def port(site: Path, serve: ServeFactory) -> AsyncIterator[int]:
    async with serve(aserve.StaticFiles(site, listing=True)) as server:
        yield server.port


# --------------------------------------------------------------------------- hidden names

HIDDEN = [
    "/.env",
    "/.git/config",
    "/.git/",
    "/.git",
    "/.venv/",
    "/.venv/pyvenv.cfg",
    "/%2egit/config",
    "/%2Egit/config",
    "/%2Eenv",
    "/%2e%65nv",
    "/sub/.secret",
    "/sub/%2esecret",
    "/sub/%2Esecret",
    "/./.env",
    "/.//.env",
    "/sub/./.secret",
    "/sub/../.env",
    "/sub/%2e%2e/.env",
    "/.git%2fconfig",
    "/sub/.well-known/x",
    "/.well-known/.hidden",
    "/.well-known/%2ehidden",
    "/.well-known/../.env",
    "/.errors/404.html",
]


@pytest.mark.parametrize("target", HIDDEN)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_hidden_names_answer_404(
    port: int, connect: ConnectFactory, target: str, method: str
) -> None:
    reply = await fetch(port, connect, target, method=method)
    assert reply.status == 404, reply
    assert SECRET not in reply.body
    assert reply.header("location") is None  # "/.git" is not redirected to "/.git/"


async def test_a_hidden_file_looks_exactly_like_a_missing_one(
    port: int, connect: ConnectFactory
) -> None:
    hidden = await fetch(port, connect, "/.env")
    missing = await fetch(port, connect, "/.absent")
    assert (hidden.status, hidden.headers, hidden.body) == (
        missing.status,
        missing.headers,
        missing.body,
    )


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("/.well-known/security.txt", b"Contact: mailto:security@example.com\n"),
        ("/.well-known/acme-challenge/TOKEN123", b"TOKEN123.key"),
        ("/%2ewell-known/security.txt", b"Contact: mailto:security@example.com\n"),
    ],
)
async def test_well_known_is_served_by_default(
    port: int, connect: ConnectFactory, target: str, body: bytes
) -> None:
    reply = await fetch(port, connect, target)
    assert (reply.status, reply.body) == (200, body)


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("/.env", SECRET),
        ("/.git/config", SECRET),
        ("/%2egit/config", SECRET),
        ("/sub/%2esecret", SECRET),
        ("/.well-known/.hidden", SECRET),
    ],
)
async def test_hidden_true_serves_them(
    site: Path, serve: ServeFactory, connect: ConnectFactory, target: str, body: bytes
) -> None:
    async with serve(aserve.StaticFiles(site, hidden=True)) as server:
        reply = await fetch(server.port, connect, target)
    assert (reply.status, reply.body) == (200, body)


async def test_listing_leaves_hidden_names_out(
    site: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    async with serve(aserve.StaticFiles(site, index=None, listing=True)) as server:
        page = (await fetch(server.port, connect, "/")).body.decode()
        sub = (await fetch(server.port, connect, "/sub/")).body.decode()
    assert 'href="hello.txt"' in page
    assert 'href="sub/"' in page
    for name in (".env", ".git/", ".venv/", ".well-known/", ".errors/"):
        assert f'href="{name}"' not in page
    assert 'href="visible.txt"' in sub
    assert ".secret" not in sub
    assert ".well-known" not in sub
    static = aserve.StaticFiles(site, index=None, listing=True, hidden=True)
    async with serve(static) as server:
        page = (await fetch(server.port, connect, "/")).body.decode()
    for name in (".env", ".git/", ".well-known/"):
        assert f'href="{name}"' in page


@pytest.mark.parametrize(
    ("path_param", "status"),
    [
        (".git/config", 404),
        ("sub/.secret", 404),
        (b"%2egit/config", 404),
        (b"sub/%2Esecret", 404),
        (".well-known/security.txt", 200),
        ("sub/visible.txt", 200),
    ],
)
async def test_hidden_names_from_path_params(
    site: Path, serve: ServeFactory, connect: ConnectFactory, path_param: str | bytes, status: int
) -> None:
    static = aserve.StaticFiles(site)

    async def routed(request: aserve.Request) -> aserve.Response:
        request.path_params["path"] = path_param
        return await static(request)

    async with serve(routed) as server:
        reply = await fetch(server.port, connect, "/files/whatever")
    assert reply.status == status
    assert SECRET not in reply.body


def test_a_hidden_index_name_is_refused(site: Path) -> None:
    with pytest.raises(aserve.ConfigError, match="hidden"):
        aserve.StaticFiles(site, index=".index.html")
    aserve.StaticFiles(site, index=".index.html", hidden=True)


# --------------------------------------------------------------------------- Vary


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_vary_is_on_both_answers_when_a_sibling_exists(
    port: int, connect: ConnectFactory, method: str
) -> None:
    plain = await fetch(port, connect, "/style.css", method=method)
    gz = await fetch(port, connect, "/style.css", [("Accept-Encoding", "gzip")], method=method)
    assert (plain.status, plain.header("content-encoding")) == (200, None)
    assert (gz.status, gz.header("content-encoding")) == (200, "gzip")
    assert plain.header("vary") == gz.header("vary") == "Accept-Encoding"
    empty = await fetch(port, connect, "/style.css", [("Accept-Encoding", "")], method=method)
    assert empty.header("vary") == "Accept-Encoding"
    none = await fetch(port, connect, "/hello.txt", method=method)
    assert none.header("vary") is None


async def test_vary_is_on_304_answers_to_either_form(port: int, connect: ConnectFactory) -> None:
    plain = await fetch(port, connect, "/style.css")
    gz = await fetch(port, connect, "/style.css", [("Accept-Encoding", "gzip")])
    plain_tag, gz_tag = plain.header("etag"), gz.header("etag")
    assert plain_tag is not None and gz_tag is not None
    again = await fetch(port, connect, "/style.css", [("If-None-Match", plain_tag)])
    assert (again.status, again.header("vary")) == (304, "Accept-Encoding")
    headers = [("If-None-Match", gz_tag), ("Accept-Encoding", "gzip")]
    again = await fetch(port, connect, "/style.css", headers)
    assert (again.status, again.header("vary")) == (304, "Accept-Encoding")
    last_modified = plain.header("last-modified")
    assert last_modified is not None
    again = await fetch(port, connect, "/style.css", [("If-Modified-Since", last_modified)])
    assert (again.status, again.header("vary")) == (304, "Accept-Encoding")


# --------------------------------------------------------------------------- Cache-Control


@pytest.mark.parametrize(
    ("target", "cache_control"),
    [
        ("/hello.txt", "no-cache"),
        ("/", "no-cache"),
        ("/app.3f2a9c1b.js", IMMUTABLE_CACHE_CONTROL),
        ("/main-5f2a9c1b.css", IMMUTABLE_CACHE_CONTROL),
        ("/report-20240101.pdf", "no-cache"),
        ("/style.css", "no-cache"),
    ],
)
async def test_default_cache_control(
    port: int, connect: ConnectFactory, target: str, cache_control: str
) -> None:
    reply = await fetch(port, connect, target)
    assert reply.status == 200
    assert reply.header("cache-control") == cache_control
    assert reply.header("etag") is not None  # no-cache relies on the validators


async def test_cache_control_is_on_every_answer_about_the_file(
    port: int, connect: ConnectFactory
) -> None:
    first = await fetch(port, connect, "/hello.txt")
    etag = first.header("etag")
    assert etag is not None
    answers = [
        await fetch(port, connect, "/hello.txt", method="HEAD"),
        await fetch(port, connect, "/hello.txt", [("If-None-Match", etag)]),
        await fetch(port, connect, "/hello.txt", [("Range", "bytes=0-1")]),
        await fetch(port, connect, "/hello.txt", [("If-Match", '"other"')]),
        await fetch(port, connect, "/hello.txt", [("Range", "bytes=100-")]),
        await fetch(port, connect, "/style.css", [("Accept-Encoding", "gzip")]),
    ]
    assert [a.status for a in answers] == [200, 304, 206, 412, 416, 200]
    assert all(a.header("cache-control") == "no-cache" for a in answers)
    listing = await fetch(port, connect, "/sub/")
    assert listing.header("cache-control") == "no-store"


async def test_a_string_sets_the_default(
    site: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    static = aserve.StaticFiles(site, cache_control="public, max-age=3600")
    async with serve(static) as server:
        hello = await fetch(server.port, connect, "/hello.txt")
        fingerprinted = await fetch(server.port, connect, "/app.3f2a9c1b.js")
    assert hello.header("cache-control") == "public, max-age=3600"
    assert fingerprinted.header("cache-control") == IMMUTABLE_CACHE_CONTROL


RULES = [
    "public, max-age=3600",
    "*.html: no-cache",
    "assets/: public, max-age=86400",
    "*.map:",
    "sub/*.txt: private, max-age=5",
]


@pytest.mark.parametrize(
    ("target", "cache_control"),
    [
        ("/hello.txt", "public, max-age=3600"),
        ("/page.html", "no-cache"),
        ("/", "no-cache"),  # the index file: index.html
        ("/assets/app.js", "public, max-age=86400"),
        ("/assets/app.js.map", "public, max-age=86400"),  # the first match wins
        ("/sub/visible.txt", "private, max-age=5"),
        ("/app.3f2a9c1b.js", IMMUTABLE_CACHE_CONTROL),
    ],
)
async def test_rules_first_match_wins(
    site: Path, serve: ServeFactory, connect: ConnectFactory, target: str, cache_control: str
) -> None:
    async with serve(aserve.StaticFiles(site, cache_control=RULES)) as server:
        reply = await fetch(server.port, connect, target)
    assert reply.status == 200
    assert reply.header("cache-control") == cache_control


async def test_an_empty_value_sends_no_cache_control(
    site: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    static = aserve.StaticFiles(site, cache_control=["*.map:", "*.txt: max-age=60"])
    async with serve(static) as server:
        source_map = await fetch(server.port, connect, "/assets/app.js.map")
        text = await fetch(server.port, connect, "/sub/visible.txt")
        other = await fetch(server.port, connect, "/page.html")
    assert source_map.header("cache-control") is None
    assert text.header("cache-control") == "max-age=60"
    assert other.header("cache-control") == "no-cache"


async def test_a_mapping_holds_rules_and_can_override_fingerprints(
    site: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    static = aserve.StaticFiles(site, cache_control={"*.txt": "private", "*.js": "no-store"})
    async with serve(static) as server:
        text = await fetch(server.port, connect, "/hello.txt")
        script = await fetch(server.port, connect, "/app.3f2a9c1b.js")
        css = await fetch(server.port, connect, "/main-5f2a9c1b.css")
        page = await fetch(server.port, connect, "/page.html")
    assert text.header("cache-control") == "private"
    assert script.header("cache-control") == "no-store"
    assert css.header("cache-control") == IMMUTABLE_CACHE_CONTROL
    assert page.header("cache-control") == "no-cache"


async def test_fingerprinted_answers_to_credentials_are_private(
    site: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    auth = [("Authorization", "Basic dXNlcjpwYXNz")]
    static = aserve.StaticFiles(site, cache_control=["*.css: public, max-age=60"])
    async with serve(static) as server:
        script = await fetch(server.port, connect, "/app.3f2a9c1b.js", auth)
        anonymous = await fetch(server.port, connect, "/app.3f2a9c1b.js")
        text = await fetch(server.port, connect, "/hello.txt", auth)
        css = await fetch(server.port, connect, "/main-5f2a9c1b.css", auth)
    assert script.header("cache-control") == "private, max-age=31536000, immutable"
    assert anonymous.header("cache-control") == IMMUTABLE_CACHE_CONTROL
    assert text.header("cache-control") == "no-cache"
    assert css.header("cache-control") == "public, max-age=60"  # the user's own rule


@pytest.mark.parametrize(
    ("name", "fingerprinted"),
    [
        ("app.3f2a9c1b.js", True),
        ("main-5f2a9c1b.css", True),
        ("chunk_0a1b2c3d4e5f.js", True),
        ("3f2a9c1b.js", True),
        ("vendor.3F2A9C1B.js", True),
        ("app-0123456789abcdef0123456789abcdef.min.js", True),
        ("app.js", False),
        ("report-20240101.pdf", False),  # a date, not a hash
        ("deadbeef.txt", False),  # a word, not a hash
        ("app.3f2a9c1.js", False),  # 7 digits
        ("app.3f2a9c1b", False),  # the hash is the extension
        ("x3f2a9c1b.js", False),  # not a part of its own
        ("jquery-3.7.1.min.js", False),
    ],
)
def test_is_fingerprinted(name: str, fingerprinted: bool) -> None:
    assert is_fingerprinted(name) is fingerprinted


@pytest.mark.parametrize(
    ("spec", "rules", "default"),
    [
        (None, (), "no-cache"),
        ("public, max-age=3600", (), "public, max-age=3600"),
        ("  public ,max-age=3600 ", (), "public, max-age=3600"),
        ("*.html: no-cache", (CacheRule("*.html", "no-cache"),), "no-cache"),
        ("/index.html:no-store", (CacheRule("index.html", "no-store"),), "no-cache"),
        ("assets/: max-age=60", (CacheRule("assets/*", "max-age=60"),), "no-cache"),
        ('no-cache="Set-Cookie, X-Id", max-age=5', (), 'no-cache="Set-Cookie, X-Id", max-age=5'),
        ("", (), ""),
        (
            ["max-age=60", "*.html: no-cache, must-revalidate", "*.bin:"],
            (CacheRule("*.html", "no-cache, must-revalidate"), CacheRule("*.bin", "")),
            "max-age=60",
        ),
        ({"*.css": "max-age=1"}, (CacheRule("*.css", "max-age=1"),), "no-cache"),
    ],
)
def test_parse_cache_control(
    spec: str | list[str] | dict[str, str] | None, rules: tuple[CacheRule, ...], default: str
) -> None:
    assert parse_cache_control(spec) == (rules, default)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("*.html=no-cache", "PATTERN: VALUE"),
        ("*.html no-cache", "not a Cache-Control value"),
        ("max-age=abc", "number of seconds"),
        ("max-age", "number of seconds"),
        ("*.html: max-age=1h", "number of seconds"),
        (["public", "private"], "two default"),
        (": no-cache", "needs a pattern"),
        ('no-cache="a', "not a Cache-Control value"),
        ("public,, private", "not a Cache-Control value"),
        ("*.html: no-cache\r\nX-Evil: 1", "not a Cache-Control value"),
        ([3600], "is a string"),
    ],
)
def test_bad_cache_control_is_a_config_error(spec: object, message: str, site: Path) -> None:
    with pytest.raises(aserve.ConfigError, match=message):
        aserve.StaticFiles(site, cache_control=spec)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- error pages

PAGES = {404: "404.html", 403: "403.html", 405: "405.html", 500: "500.html"}


@pytest.fixture
async def pages_port(site: Path, serve: ServeFactory) -> AsyncIterator[int]:
    async with serve(aserve.StaticFiles(site, error_pages=PAGES)) as server:
        yield server.port


@pytest.mark.parametrize(
    "target", ["/missing", "/missing.css", "/.env", "/%2egit/config", "/empty/"]
)
async def test_404_page(pages_port: int, connect: ConnectFactory, target: str) -> None:
    reply = await fetch(pages_port, connect, target)
    assert reply.status == 404
    assert reply.body == PAGE_404
    assert reply.header("content-type") == "text/html; charset=utf-8"
    assert reply.header("content-length") == str(len(PAGE_404))
    assert reply.header("cache-control") == "no-store"
    assert reply.header("etag") is None
    assert reply.header("last-modified") is None


async def test_error_page_head_has_no_body(pages_port: int, connect: ConnectFactory) -> None:
    reply = await fetch(pages_port, connect, "/missing", method="HEAD")
    assert (reply.status, reply.body) == (404, b"")
    assert reply.header("content-length") == str(len(PAGE_404))
    assert reply.header("content-type") == "text/html; charset=utf-8"


async def test_error_page_ignores_conditions_and_ranges(
    pages_port: int, connect: ConnectFactory
) -> None:
    headers = [("Range", "bytes=0-1"), ("If-None-Match", "*"), ("If-Modified-Since", "x")]
    reply = await fetch(pages_port, connect, "/missing", headers)
    assert (reply.status, reply.body) == (404, PAGE_404)


async def test_405_page_keeps_allow(pages_port: int, connect: ConnectFactory) -> None:
    reply = await fetch(pages_port, connect, "/hello.txt", method="POST")
    assert (reply.status, reply.body) == (405, PAGE_405)
    assert reply.header("allow") == "GET, HEAD"


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), 403, PAGE_403),
        (OSError(errno.EIO, "Input/output error"), 500, PAGE_500),
    ],
)
async def test_403_and_500_pages(
    pages_port: int,
    connect: ConnectFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: OSError,
    status: int,
    body: bytes,
) -> None:
    real_open = os.open

    def failing(path: str, *args: int, **kwargs: int) -> int:
        if str(path).endswith("hello.txt"):
            raise error
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("aserve.static.os.open", failing)
    reply = await fetch(pages_port, connect, "/hello.txt")
    assert (reply.status, reply.body) == (status, body)
    assert reply.header("content-type") == "text/html; charset=utf-8"


async def test_string_form_and_a_page_that_went_away(
    site: Path, serve: ServeFactory, connect: ConnectFactory, caplog: pytest.LogCaptureFixture
) -> None:
    static = aserve.StaticFiles(site, error_pages=["404=404.html"])
    async with serve(static) as server:
        reply = await fetch(server.port, connect, "/missing")
        assert (reply.status, reply.body) == (404, PAGE_404)
        (site / "404.html").unlink()
        reply = await fetch(server.port, connect, "/missing")
        assert (reply.status, reply.body) == (404, b"Not Found\n")
        assert reply.header("content-type") == "text/plain; charset=utf-8"
    assert "cannot send the error page" in caplog.text


async def test_a_large_error_page_is_streamed(
    site: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    big = b"<!-- padding -->" * (IN_MEMORY_LIMIT // 8)
    (site / "big404.html").write_bytes(big)
    async with serve(aserve.StaticFiles(site, error_pages={404: "big404.html"})) as server:
        reply = await fetch(server.port, connect, "/missing")
        head = await fetch(server.port, connect, "/missing", method="HEAD")
    assert (reply.status, reply.body) == (404, big)
    assert (head.status, head.body, head.header("content-length")) == (404, b"", str(len(big)))


@pytest.mark.parametrize(
    ("pages", "message"),
    [
        ({404: "nope.html"}, "is not a file in"),
        ({404: "sub"}, "is not a file in"),
        ({404: "../outside.html"}, "must be a file below the directory"),
        ({404: "/etc/passwd"}, "is not a file in"),
        ({404: ".errors/404.html"}, "hidden path"),
        ({404: "sub/.secret"}, "hidden path"),
        ({401: "404.html"}, "error pages are for statuses 403, 404, 405, 500"),
        ({"teapot": "404.html"}, "not 'teapot'"),
        (["404"], "STATUS=PATH"),
        (["404=404.html", "404=403.html"], "two error pages for 404"),
        (["404="], "needs a path"),
    ],
)
def test_bad_error_pages_are_config_errors(site: Path, pages: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aserve.StaticFiles(site, error_pages=pages)  # type: ignore[arg-type]


def test_a_hidden_error_page_is_allowed_with_hidden(site: Path) -> None:
    static = aserve.StaticFiles(site, hidden=True, error_pages={404: ".errors/404.html"})
    assert static.error_pages == {404: ".errors/404.html"}
    assert parse_error_pages(["404=a.html", " 500 = b.html "]) == {404: "a.html", 500: "b.html"}


# --------------------------------------------------------------------------- fallback


@pytest.fixture
async def spa_port(site: Path, serve: ServeFactory) -> AsyncIterator[int]:
    static = aserve.StaticFiles(site, fallback="index.html", error_pages={404: "404.html"})
    async with serve(static) as server:
        yield server.port


@pytest.mark.parametrize(
    ("target", "accept"),
    [
        ("/users/42", None),
        ("/users/42", "*/*"),
        ("/deep/route/", None),
        ("/users/john.doe", BROWSER_ACCEPT),
        ("/assets/missing.js", BROWSER_ACCEPT),
        ("/empty/", None),  # a folder without an index
        ("/.env", None),  # hidden: as if absent
    ],
)
async def test_fallback_answers_200_with_the_app(
    spa_port: int, connect: ConnectFactory, target: str, accept: str | None
) -> None:
    headers = [("Accept", accept)] if accept else []
    reply = await fetch(spa_port, connect, target, headers)
    assert (reply.status, reply.body) == (200, APP)
    assert reply.header("content-type") == "text/html; charset=utf-8"
    assert reply.header("cache-control") == "no-cache"
    assert reply.header("etag") is not None
    has_extension = "." in target.rsplit("/", 1)[1][1:]
    assert reply.header("vary") == ("Accept" if has_extension else None)
    head = await fetch(spa_port, connect, target, headers, method="HEAD")
    assert (head.status, head.body, head.header("content-length")) == (200, b"", str(len(APP)))


@pytest.mark.parametrize(
    ("target", "accept", "status", "body", "vary"),
    [
        ("/assets/missing.js", None, 404, PAGE_404, "Accept"),
        ("/assets/missing.js", "*/*", 404, PAGE_404, "Accept"),
        ("/favicon.ico", "image/avif,image/webp,*/*", 404, PAGE_404, "Accept"),
        ("/%2e%2e/outside.html", BROWSER_ACCEPT, 404, PAGE_404, None),
        ("/hello.txt", None, 200, b"hello\n", None),
        ("/sub/visible.txt", BROWSER_ACCEPT, 200, b"visible", None),
    ],
)
async def test_no_fallback(
    spa_port: int,
    connect: ConnectFactory,
    target: str,
    accept: str | None,
    status: int,
    body: bytes,
    vary: str | None,
) -> None:
    headers = [("Accept", accept)] if accept else []
    reply = await fetch(spa_port, connect, target, headers)
    assert (reply.status, reply.body) == (status, body)
    assert reply.header("vary") == vary


async def test_fallback_is_conditional_and_get_head_only(
    spa_port: int, connect: ConnectFactory
) -> None:
    first = await fetch(spa_port, connect, "/users/42")
    etag = first.header("etag")
    assert etag is not None
    again = await fetch(spa_port, connect, "/users/7", [("If-None-Match", etag)])
    assert (again.status, again.body) == (304, b"")
    post = await fetch(spa_port, connect, "/users/42", method="POST")
    assert post.status == 405


@pytest.mark.parametrize(
    ("fallback", "message"),
    [
        ("app.html", "is not a file in"),
        (".errors/404.html", "hidden path"),
        ("../outside.html", "must be a file below the directory"),
    ],
)
def test_bad_fallback_is_a_config_error(site: Path, fallback: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aserve.StaticFiles(site, fallback=fallback)


# --------------------------------------------------------------------------- mounted on an App


@pytest.mark.parametrize(
    ("target", "status", "body"),
    [
        ("/static/hello.txt", 200, b"hello\n"),
        ("/static/.env", 404, PAGE_404),
        ("/static/%2egit/config", 404, PAGE_404),
        ("/static/sub/%2Esecret", 404, PAGE_404),
        ("/static/missing.txt", 404, PAGE_404),
        ("/static/.well-known/security.txt", 200, b"Contact: mailto:security@example.com\n"),
        ("/app/users/42", 200, APP),
        ("/app/.git/config", 200, APP),
        ("/app/assets/missing.js", 404, b"Not Found\n"),
        ("/elsewhere", 404, b"Not Found\n"),
    ],
)
async def test_mounted_on_an_app(
    site: Path,
    serve: ServeFactory,
    connect: ConnectFactory,
    target: str,
    status: int,
    body: bytes,
) -> None:
    app = aserve.App()
    app.mount("/static", aserve.StaticFiles(site, error_pages={404: "404.html"}))
    app.mount("/app", aserve.StaticFiles(site, fallback="index.html"))
    async with serve(app) as server:
        reply = await fetch(server.port, connect, target)
    assert (reply.status, reply.body) == (status, body)
    assert SECRET not in reply.body


async def test_mounted_cache_rules_see_the_path_below_the_mount(
    site: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    app = aserve.App()
    app.mount("/static", aserve.StaticFiles(site, cache_control=["assets/*: max-age=9"]))
    async with serve(app) as server:
        reply = await fetch(server.port, connect, "/static/assets/app.js")
    assert reply.header("cache-control") == "max-age=9"


# --------------------------------------------------------------------------- media types

MEDIA_TYPES = [
    ("a.js", "text/javascript; charset=utf-8"),
    ("a.mjs", "text/javascript; charset=utf-8"),
    ("A.JS", "text/javascript; charset=utf-8"),
    ("a.wasm", "application/wasm"),
    ("a.webp", "image/webp"),
    ("a.avif", "image/avif"),
    ("a.woff2", "font/woff2"),
    ("a.woff", "font/woff"),
    ("a.json", "application/json; charset=utf-8"),
    ("a.map", "application/json; charset=utf-8"),
    ("a.svg", "image/svg+xml; charset=utf-8"),
    ("a.webmanifest", "application/manifest+json; charset=utf-8"),
    ("a.md", "text/markdown; charset=utf-8"),
    ("a.csv", "text/csv; charset=utf-8"),
    ("a.ics", "text/calendar; charset=utf-8"),
    ("a.xml", "application/xml; charset=utf-8"),
    ("a.yaml", "application/yaml; charset=utf-8"),
    ("a.png", "image/png"),
    ("a.pdf", "application/pdf"),
    ("a.unknown", "application/octet-stream"),
]


@pytest.fixture
def no_mime_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose mime database knows nothing; and a cold type cache."""
    monkeypatch.setattr(mimetypes, "guess_type", lambda *args, **kwargs: (None, None))
    monkeypatch.setattr(static_module, "_media_types", {})


@pytest.mark.usefixtures("no_mime_database")
async def test_media_types_without_a_mime_database(
    tmp_path: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    for name, _ in MEDIA_TYPES:
        (tmp_path / name).write_bytes(b"x")
    async with serve(aserve.StaticFiles(tmp_path)) as server:
        for name, content_type in MEDIA_TYPES:
            reply = await fetch(server.port, connect, "/" + name)
            assert (name, reply.header("content-type")) == (name, content_type)


@pytest.mark.parametrize(
    ("guessed", "content_type"),
    [
        ("application/x-thing+json", "application/x-thing+json; charset=utf-8"),
        ("application/x-thing+xml", "application/x-thing+xml; charset=utf-8"),
        ("text/x-thing", "text/x-thing; charset=utf-8"),
        ("application/x-thing", "application/x-thing"),
        ("image/x-thing", "image/x-thing"),
    ],
)
def test_the_table_comes_before_the_database_and_charset_only_on_text(
    monkeypatch: pytest.MonkeyPatch, guessed: str, content_type: str
) -> None:
    monkeypatch.setattr(mimetypes, "guess_type", lambda *args, **kwargs: (guessed, None))
    assert media_type_for("a.thing") == content_type
    assert media_type_for("a.js") == "text/javascript; charset=utf-8"
    assert media_type_for("a.woff2") == "font/woff2"
