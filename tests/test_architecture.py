"""The layer rules of DESIGN.md, read from the imports with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aserve"

FORBIDDEN = {
    "connection": {"asyncio", "uvloop"},
    "protocol": {"routing", "app", "static", "asgi", "wsgi"},
    "exchange": {"routing", "app", "static", "asgi", "wsgi"},
    "flow": {"routing", "app", "static", "asgi", "wsgi"},
    "routing": {"protocol", "exchange", "flow", "server"},
    "app": {"protocol", "exchange", "flow", "server"},
    # The deployment layers: trusted-proxy rules and the PROXY parser are
    # sans-IO; the TLS settings know no loop; what runs before HTTP on a
    # connection (front) is engine, below the apps.
    "proxy": {"asyncio", "uvloop", "socket", "protocol", "server"},
    "tls": {"asyncio", "uvloop", "protocol", "server"},
    "front": {"routing", "app", "static", "asgi", "wsgi"},
    "supervisor": {"protocol", "flow", "front", "cli"},
    # WebSockets (docs/websockets.md): the core is sans-IO and its wsproto
    # import guarded; the native API sits beside Request, below the engine;
    # the engine's side imports no application.
    "wsconnection": {"asyncio", "uvloop", "protocol", "server"},
    "websocket": {"protocol", "exchange", "flow", "server", "wsprotocol", "front"},
    "wsprotocol": {"routing", "app", "static", "asgi", "wsgi", "websocket", "asgi_websocket"},
    "asgi_websocket": {"protocol", "exchange", "flow", "server", "wsprotocol"},
}


def imported_modules(path: Path) -> set[str]:
    """Top-level names imported by a module; `from .x import y` yields `x`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and node.module:
                names.add(node.module.split(".")[0])
            elif node.level:
                names.update(alias.name for alias in node.names)
            elif node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", sorted(m for m in FORBIDDEN if (PACKAGE / f"{m}.py").exists()))
def test_layer_imports(module: str) -> None:
    path = PACKAGE / f"{module}.py"
    bad = imported_modules(path) & FORBIDDEN[module]
    assert not bad, f"aserve/{module}.py imports {sorted(bad)}, against the layer rules"


def test_the_rule_reader_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import asyncio\nfrom .routing import Router\nfrom . import app\n")
    assert imported_modules(sample) == {"asyncio", "routing", "app"}
