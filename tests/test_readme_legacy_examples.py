"""README.md's "Coming from http.server, CGI or Flask" examples, run as written.

Every file and command is taken from README.md itself -- a fenced block is
found by the comment line that names its file (``# legacy.py``,
``<!-- templates/hello.html -->``), a command by how it starts -- written into
a scratch folder and served by the real ``python -m aserve``. An edit to the
README that breaks an example breaks a test here; the examples are never
copied into this file.
"""

from __future__ import annotations

import http.client
import re
import shlex
from pathlib import Path

import pytest
from conftest import Running, Start

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
HEADING = "## Coming from http.server, CGI or Flask\n"
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def section() -> str:
    assert HEADING in README, "README.md lost its section on http.server, CGI and Flask"
    return README.split(HEADING, 1)[1].split("\n## ", 1)[0]


def blocks() -> list[str]:
    return [match["body"] for match in FENCE.finditer(section())]


def block(marker: str) -> str:
    """The one fenced block of the section with a line that is `marker`, alone or
    followed by a space and a remark (``# shop.py -- pip install ...``)."""
    found = [
        body
        for body in blocks()
        if any(line == marker or line.startswith(f"{marker} ") for line in body.splitlines())
    ]
    assert len(found) == 1, f"{len(found)} blocks with the line {marker!r} in the section"
    return found[0]


def command(target: str) -> list[str]:
    """The arguments of the section's ``aserve TARGET ...`` command line, its comment cut."""
    found = []
    for body in blocks():
        for line in body.splitlines():
            if not line.startswith("aserve "):
                continue
            words = shlex.split(line, comments=True)
            if words[:2] == ["aserve", target]:
                found.append(words[1:])
    assert len(found) == 1, f"{len(found)} command lines for `aserve {target}` in the section"
    return found[0]


def templates(body: str) -> dict[str, str]:
    """Split the template block at its ``<!-- templates/NAME -->`` lines."""
    files: dict[str, str] = {}
    name = None
    for line in body.splitlines(keepends=True):
        if match := re.fullmatch(r"<!-- (templates/\S+) -->\n?", line):
            name = match[1]
            files[name] = ""
        elif name is not None:
            files[name] += line
    return files


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def serve(start: Start, *args: str, cwd: Path) -> Running:
    return start(*args, "--host", "127.0.0.1", "--port", "0", cwd=cwd)


def fetch(
    server: Running, path: str, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    """GET `path` with `headers`: the response and its body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        reply = conn.getresponse()
        return reply, reply.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- http.server classes


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    write(tmp_path, {"legacy.py": block("# legacy.py"), "public/page.txt": "from public/\n"})
    return tmp_path


def test_legacy_py_mounts_hello_below_legacy_and_files_from_public(
    legacy: Path, start: Start
) -> None:
    server = serve(start, "legacy:app", cwd=legacy)
    assert server.body("/legacy/x") == b"hello from /x\n"  # self.path is below /legacy
    reply = server.get("/legacy/x")
    assert (reply.status, reply.getheader("Content-Type")) == (200, "text/plain")
    assert server.body("/files/page.txt") == b"from public/\n"
    assert server.get("/files/nope.txt").status == 404
    assert server.get("/elsewhere").status == 404
    assert server.stop()[0] == 0


def test_the_command_serves_a_class_of_legacy_py(legacy: Path, start: Start) -> None:
    args = command("legacy:Hello")
    assert "--threads" in args
    server = serve(start, *args, cwd=legacy)
    assert server.match["what"] == "legacy:Hello (httpserver)"
    assert server.body("/x") == b"hello from /x\n"
    assert server.stop()[0] == 0


def test_the_command_serves_the_current_folder_with_simple_http_request_handler(
    tmp_path: Path, start: Start
) -> None:
    write(tmp_path, {"page.txt": "a page\n", "docs/notes.txt": "notes\n"})
    server = serve(start, *command("http.server:SimpleHTTPRequestHandler"), cwd=tmp_path)
    listing = server.body("/").decode()
    assert "Directory listing for /" in listing
    assert 'href="page.txt"' in listing and 'href="docs/"' in listing
    assert server.body("/page.txt") == b"a page\n"
    assert server.body("/docs/notes.txt") == b"notes\n"
    assert server.get("/nope.txt").status == 404
    assert server.stop()[0] == 0


# --------------------------------------------------------------------------- CGI


@pytest.fixture
def cgi_site(tmp_path: Path) -> Path:
    write(tmp_path, {"cgi-bin/hello.sh": block("# cgi-bin/hello.sh")})
    (tmp_path / "cgi-bin" / "hello.sh").chmod(0o755)
    return tmp_path


def test_cgi_dir_runs_hello_sh_with_the_folder_around_it(cgi_site: Path, start: Start) -> None:
    write(cgi_site, {"index.html": "<p>the folder around it</p>\n", "cgi-bin/notes.txt": "src"})
    server = serve(start, *command("--cgi-dir"), cwd=cgi_site)
    reply, body = fetch(server, "/cgi-bin/hello.sh?ann")
    assert (reply.status, reply.getheader("Content-Type")) == (200, "text/plain")
    assert body == b"hello ann from 127.0.0.1\n"
    assert server.body("/") == b"<p>the folder around it</p>\n"
    # Nothing but the scripts is served under the prefix: not a file, not the folder.
    assert server.get("/cgi-bin/notes.txt").status == 403
    assert server.get("/cgi-bin/").status == 403
    assert server.stop()[0] == 0


def test_cgi_handler_mounted_in_an_app(cgi_site: Path, start: Start) -> None:
    mount = block("from aserve.cgi import CGIHandler")
    (cgi_site / "scripts.py").write_text(f"import aserve\n\napp = aserve.App()\n{mount}")
    server = serve(start, "scripts:app", cwd=cgi_site)
    assert server.body("/cgi-bin/hello.sh?bob") == b"hello bob from 127.0.0.1\n"
    assert server.stop()[0] == 0


# --------------------------------------------------------------------------- from Flask


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    write(tmp_path, {"shop.py": block("# shop.py")})
    write(tmp_path, templates(block("<!-- templates/hello.html -->")))
    assert sorted(p.name for p in (tmp_path / "templates").iterdir()) == [
        "error.html",
        "hello.html",
    ]
    return tmp_path


PROXIED_HTTPS = {"X-Forwarded-Proto": "https"}  # from 127.0.0.1, a trusted proxy by default


def test_shop_renders_hello_html_with_an_escaped_name_and_a_url_for_link(
    shop: Path, start: Start
) -> None:
    server = serve(start, *command("shop:app"), cwd=shop)
    reply, page = fetch(server, "/hello/ann", PROXIED_HTTPS)
    assert reply.status == 200
    assert reply.getheader("Content-Type", "").startswith("text/html")
    assert page == b'<h1>Hello ann!</h1> <a href="/hello/ann">Ann</a>'
    reply, page = fetch(server, "/hello/%3Cb%3Eben", PROXIED_HTTPS)
    assert reply.status == 200
    assert page.startswith(b"<h1>Hello &lt;b&gt;ben!</h1>")  # autoescaping is on
    link = re.search(rb'href="([^"]+)"', page)
    assert link is not None
    reply, page = fetch(server, link[1].decode(), PROXIED_HTTPS)  # the link works
    assert (reply.status, page[:19]) == (200, b"<h1>Hello ann!</h1>")
    assert server.stop()[0] == 0


def test_shop_renders_error_html_for_a_404(shop: Path, start: Start) -> None:
    server = serve(start, *command("shop:app"), cwd=shop)
    reply, page = fetch(server, "/nope", PROXIED_HTTPS)
    assert reply.status == 404
    assert reply.getheader("Content-Type", "").startswith("text/html")
    assert page == b"<h1>404</h1> <p>Not Found</p>"
    assert server.stop()[0] == 0


def test_shop_sends_plain_http_to_https_and_hsts_only_over_https(shop: Path, start: Start) -> None:
    args = command("shop:app")
    assert {"--https-redirect", "--hsts", "--proxy-headers"} <= set(args)
    server = serve(start, *args, cwd=shop)
    reply = server.get("/hello/ann?x=1")
    assert reply.status == 308
    assert reply.getheader("Location") == "https://127.0.0.1/hello/ann?x=1"
    assert reply.getheader("Strict-Transport-Security") is None  # HTTPS answers only
    reply = server.get("/hello/ann", headers=PROXIED_HTTPS)
    assert reply.status == 200
    assert reply.headers.get_all("Strict-Transport-Security") == ["max-age=31536000"]
    assert server.stop()[0] == 0


def test_shop_trusts_x_forwarded_proto_only_with_proxy_headers(shop: Path, start: Start) -> None:
    server = serve(start, "shop:app", cwd=shop)  # shop.py's own middleware, no --proxy-headers
    reply, _ = fetch(server, "/hello/ann", PROXIED_HTTPS)
    assert reply.status == 308
    assert reply.getheader("Location") == "https://127.0.0.1/hello/ann"
    assert server.stop()[0] == 0
