"""The README is the front door: its config examples must load and its commands must exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from connectors import validate_sources
from listener.cli import app
from listener.config import parse_config
from listener.delivery import parse_targets

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_toml_example_loads() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        config = parse_config(tomllib.loads(block), "README.md")
        validate_sources(config)
        for i, digest in enumerate(config.sections.get("digest", [])):
            assert parse_targets(digest["deliver"], f"digest[{i}].deliver")
        if "alerts" in config.sections:
            assert parse_targets(config.sections["alerts"]["deliver"], "alerts.deliver")


def test_documented_verbs_exist() -> None:
    import typer.main

    command = typer.main.get_command(app)
    verbs = set(command.commands)  # type: ignore[attr-defined]
    documented = set(re.findall(r"^\| `listener ([a-z-]+)", README, re.M))
    assert documented and documented <= verbs, documented - verbs


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in re.findall(r"^make (\w+)", README, re.M):
        assert re.search(rf"^{target}:", makefile, re.M), target
