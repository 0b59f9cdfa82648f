"""Logging as the command sets it up: --log-config (dictConfig in JSON, YAML
with PyYAML), a bad file as one line, and colour only on a terminal."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
from pathlib import Path

import pytest
from conftest import Start, run_aserve

from aserve.server import _ColourFormatter, wants_colour


def test_log_config_routes_the_access_log_to_a_file(tmp_path: Path, start: Start) -> None:
    (tmp_path / "a.txt").write_text("a")
    access = tmp_path / "access.log"
    config = {
        "version": 1,
        "formatters": {"bare": {"format": "ACCESS %(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(access), "formatter": "bare"}
        },
        "loggers": {"aserve.access": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    }
    (tmp_path / "logging.json").write_text(json.dumps(config))
    server = start("--port", "0", "--access-log", "--log-config", str(tmp_path / "logging.json"))
    assert server.get("/a.txt").status == 200
    status, stderr = server.stop()
    assert status == 0
    lines = access.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ACCESS 127.0.0.1 - - [")
    assert '"GET /a.txt HTTP/1.1" 200' in lines[0]
    assert "a.txt" not in stderr  # not on standard error too


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("bad.json", "{nope", "is not JSON"),
        ("list.json", "[1, 2]", "dictConfig mapping"),
        ("wrong.json", '{"version": 1, "handlers": {"h": {"class": "no.such.Class"}}}', "apply"),
        ("missing.json", None, "cannot read"),
    ],
)
def test_a_bad_log_config_is_one_line(
    tmp_path: Path, name: str, content: str | None, words: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = run_aserve("--port", "0", "--log-config", str(path), cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("aserve: error: ") and words in lines[0], lines[0]


@pytest.mark.skipif(importlib.util.find_spec("yaml") is not None, reason="PyYAML is installed")
def test_yaml_without_pyyaml_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "logging.yaml"
    path.write_text("version: 1\n")
    result = run_aserve("--port", "0", "--log-config", str(path), cwd=tmp_path)
    assert result.returncode == 2 and "pip install pyyaml" in result.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert wants_colour(_Terminal())
    assert not wants_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_colour(_Terminal())
    record = logging.LogRecord("aserve", logging.WARNING, __file__, 1, "careful", (), None)
    text = _ColourFormatter("%(levelname)s %(message)s").format(record)
    assert text == "\x1b[33mWARNING\x1b[0m careful"
    assert record.levelname == "WARNING"  # the record is left as it was


def test_the_command_writes_no_colour_to_a_pipe(tmp_path: Path, start: Start) -> None:
    server = start("--port", "0", "--access-log")
    server.get("/")
    _, stderr = server.stop()
    assert " INFO aserve.access: " in stderr and "\x1b[" not in stderr
