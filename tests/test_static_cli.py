"""StaticFiles built from the strings a command line gives (repeated options
arrive as lists, an environment variable as one string), and the one-line
ConfigError a bad string gets, which the command prints as ``aserve: error: ...``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from conftest import ConnectFactory, Reply, ServeFactory

import aserve
from aserve.static import IMMUTABLE_CACHE_CONTROL


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_bytes(b"<div id=app></div>")
    (tmp_path / "404.html").write_bytes(b"<h1>404</h1>")
    (tmp_path / "500.html").write_bytes(b"<h1>500</h1>")
    (tmp_path / "notes.txt").write_bytes(b"notes")
    (tmp_path / "app.0a1b2c3d.js").write_bytes(b"app()")
    (tmp_path / ".env").write_bytes(b"SECRET")
    return tmp_path


async def fetch(
    port: int, connect: ConnectFactory, target: str, headers: Iterable[tuple[str, str]] = ()
) -> Reply:
    client = await connect(port)
    head = f"GET {target} HTTP/1.1\r\nHost: test\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n"
    await client.send(head.encode("latin-1") + b"\r\n")
    return await client.response()


async def test_every_policy_from_option_strings(
    site: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    # aserve --cache-control 'public, max-age=3600' --cache-control '*.html: no-cache'
    #        --error-page 404=404.html --error-page 500=500.html --spa
    static = aserve.StaticFiles(
        str(site),
        hidden=False,
        cache_control=["public, max-age=3600", "*.html: no-cache"],
        error_pages=["404=404.html", "500=500.html"],
        fallback="index.html",
    )
    async with serve(static) as server:
        notes = await fetch(server.port, connect, "/notes.txt")
        script = await fetch(server.port, connect, "/app.0a1b2c3d.js")
        route = await fetch(server.port, connect, "/settings/profile")
        missing = await fetch(server.port, connect, "/missing.png")
        hidden = await fetch(server.port, connect, "/%2eenv")
    assert notes.header("cache-control") == "public, max-age=3600"
    assert script.header("cache-control") == IMMUTABLE_CACHE_CONTROL
    assert (route.status, route.body) == (200, b"<div id=app></div>")
    assert route.header("cache-control") == "no-cache"
    assert (missing.status, missing.body) == (404, b"<h1>404</h1>")
    assert (hidden.status, hidden.body) == (200, b"<div id=app></div>")


async def test_one_string_each_as_from_the_environment(
    site: Path, serve: ServeFactory, connect: ConnectFactory
) -> None:
    # ASERVE_CACHE_CONTROL='*.txt: max-age=60'  ASERVE_ERROR_PAGE=404=404.html
    static = aserve.StaticFiles(site, cache_control="*.txt: max-age=60", error_pages="404=404.html")
    async with serve(static) as server:
        notes = await fetch(server.port, connect, "/notes.txt")
        missing = await fetch(server.port, connect, "/missing")
    assert notes.header("cache-control") == "max-age=60"
    assert (missing.status, missing.body) == (404, b"<h1>404</h1>")


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        ({"cache_control": ["*.html=no-cache"]}, "'*.html=no-cache'"),
        ({"cache_control": ["max-age=1h"]}, "'max-age=1h'"),
        ({"cache_control": ["public", "private"]}, "'private'"),
        ({"error_pages": ["404:404.html"]}, "'404:404.html'"),
        ({"error_pages": ["418=404.html"]}, "'418'"),
        ({"error_pages": ["404=gone.html"]}, "'gone.html'"),
        ({"fallback": "app.html"}, "'app.html'"),
        ({"fallback": ".env"}, "'.env'"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(
    site: Path, options: dict[str, object], shown: str
) -> None:
    with pytest.raises(aserve.ConfigError) as caught:
        aserve.StaticFiles(site, **options)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    assert shown in message
