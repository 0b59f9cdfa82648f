"""README.md tells a new user every setting and every option of the command."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from aserve.cli import build_parser
from aserve.config import Config

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_settings_table() -> None:
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", README, re.MULTILINE))
    missing = [f.name for f in dataclasses.fields(Config) if f.name not in rows]
    assert not missing, f"settings without a row in README's table: {missing}"


def test_every_option_of_the_command_beyond_the_settings_is_explained() -> None:
    parser, _ = build_parser()
    settings = {f.name for f in dataclasses.fields(Config)}
    missing = []
    for action in parser._actions:
        if action.dest in settings or action.dest in ("help", "version", "target"):
            continue
        names = [
            o for o in action.option_strings if o.startswith("--") and not o.startswith("--no-")
        ]
        if names and not any(name in README for name in names):
            missing.append(names[0])
    assert not missing, f"options README.md does not mention: {missing}"
