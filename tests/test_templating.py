"""Templates on Jinja2 with real template files (tests/apps/templates): pages,
autoescaping, url_for from the App's routes, error pages through the App's
exception handlers; in-process over a socket, and through the command."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ConnectFactory, Reply, ServeFactory, Start

import aserve
from aserve.templating import Templates

APPS = Path(__file__).resolve().parent / "apps"
TEMPLATES = APPS / "templates"


@pytest.fixture
def templated() -> aserve.App:
    from apps.templated_app import app

    return app


async def fetch(connect: ConnectFactory, port: int, *requests: bytes) -> list[Reply]:
    client = await connect(port)
    replies = []
    for raw in requests:
        await client.send(raw)
        replies.append(await client.response("HEAD" if raw.startswith(b"HEAD") else "GET"))
    return replies


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: shop.example\r\n\r\n".encode()


async def test_a_page_is_rendered_escaped_with_links(
    serve: ServeFactory, connect: ConnectFactory, templated: aserve.App
) -> None:
    async with serve(templated) as server:
        [page, created] = await fetch(connect, server.port, get("/items/1"), get("/created"))
    assert page.status == 200
    assert page.header("content-type") == "text/html; charset=utf-8"
    body = page.body.decode()
    assert "<title>Lamp</title>" in body
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in body
    assert "<script>" not in body
    assert '<a href="/items/2">next</a>' in body
    assert '<a href="/">home</a>' in body
    assert '<a href="/static/site.css">css</a>' in body
    assert "<p>The Shop</p>" in body  # from the context processor
    assert created.status == 201
    assert created.body == page.body


async def test_the_media_type_follows_the_template_name(
    serve: ServeFactory, connect: ConnectFactory, templated: aserve.App
) -> None:
    async with serve(templated) as server:
        [feed] = await fetch(connect, server.port, get("/feed.xml"))
    assert feed.header("content-type") == "application/xml"
    assert b"<title>News &amp; &lt;more&gt;</title>" in feed.body


async def test_links_hold_below_a_mount_and_a_root_path(
    serve: ServeFactory, connect: ConnectFactory, templated: aserve.App
) -> None:
    outer = aserve.App()
    outer.mount("/shop", templated)
    async with serve(outer, root_path="/api") as server:
        [page] = await fetch(connect, server.port, get("/api/shop/items/1"))
    body = page.body.decode()
    assert '<a href="/api/shop/items/2">next</a>' in body
    assert '<a href="/api/shop/static/site.css">css</a>' in body


async def test_error_pages_come_from_a_template(
    serve: ServeFactory,
    connect: ConnectFactory,
    templated: aserve.App,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve(templated) as server:
        missing, not_routed, not_allowed, boom = await fetch(
            connect,
            server.port,
            get("/items/7"),
            get("/nowhere"),
            b"POST /items/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
            get("/boom"),
        )
    assert missing.status == 404
    assert '<p class="detail">No such item</p>' in missing.body.decode()
    assert missing.header("content-type") == "text/html; charset=utf-8"
    assert not_routed.status == 404 and b"<title>404</title>" in not_routed.body
    assert not_allowed.status == 405
    assert not_allowed.header("allow") == "GET, HEAD, OPTIONS"
    assert b"<h1>405</h1>" in not_allowed.body
    assert boom.status == 500
    assert b"Internal Server Error" in boom.body
    assert b"secret internals" not in boom.body  # logged, never shown
    assert any("secret internals" in str(r.exc_info) for r in caplog.records)


def test_render_and_url_for_without_a_server(templated: aserve.App) -> None:
    templates = Templates(TEMPLATES, app=templated)
    html = templates.render("item.html", {"item": {"id": 4, "name": "<b>", "note": ""}})
    assert "<title>&lt;b&gt;</title>" in html
    assert '<a href="/items/5">next</a>' in html
    response = templates.response("feed.xml", {"title": "t"})
    assert response.template.name == "feed.xml"
    assert response.context["title"] == "t"


def test_url_for_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "bad.html").write_text("{{ url_for('nowhere') }}")
    templates = Templates(tmp_path, app=aserve.App())
    with pytest.raises(aserve.NoMatchFound):
        templates.render("bad.html")
    alone = Templates(tmp_path)
    with pytest.raises(aserve.NoMatchFound, match="no App"):
        alone.render("bad.html")


def test_options_and_refusals(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("{{ text }}\n")
    raw = Templates(tmp_path, autoescape=False, keep_trailing_newline=True)
    assert raw.render("plain.txt", {"text": "<b>"}) == "<b>\n"
    assert Templates(tmp_path).render("plain.txt", {"text": "<b>"}) == "&lt;b&gt;"
    assert Templates(tmp_path).response("plain.txt").headers["content-type"] == (
        "text/plain; charset=utf-8"
    )
    with pytest.raises(aserve.ConfigError):
        Templates(tmp_path / "missing")
    with pytest.raises(aserve.ConfigError):
        Templates()


def test_templates_through_the_command(start: Start) -> None:
    server = start("templated_app:app", "--port", "0", cwd=APPS)
    assert server.match.group("what") == "templated_app:app (native)"
    page = server.body("/items/1").decode()
    assert "<h1>Lamp</h1>" in page and "&lt;script&gt;" in page
    assert '<a href="/items/2">next</a>' in page
    missing = server.get("/items/9")
    assert missing.status == 404
    assert server.stop()[0] == 0
