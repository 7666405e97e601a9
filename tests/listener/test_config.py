from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from listener.config import Secret, load_config, parse_duration
from listener.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "listener" / "example.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "listener.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_config_is_valid_and_has_every_kind() -> None:
    from listener.types import SOURCE_KINDS

    config = load_config(EXAMPLE)
    assert {s.kind for s in config.sources} == set(SOURCE_KINDS)
    assert any(w.competitor for w in config.watches)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "15", "abc", "5x", "0m", "15m junk"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)


def test_source_params_and_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(
        tmp_path,
        """
[[watch]]
name = "acme"
terms = "acme"
[[source]]
name = "forum"
kind = "discourse"
base_url = "https://forum.example.com"
api_key = { env = "FORUM_KEY" }
every = "5m"
backfill = "2d"
""",
    )
    config = load_config(p)
    src = config.source("forum")
    assert src.every == timedelta(minutes=5) and src.backfill == timedelta(days=2)
    assert isinstance(src.params["api_key"], Secret)
    assert str(src.params["api_key"]) == "${FORUM_KEY}"
    monkeypatch.setenv("FORUM_KEY", "s3cret")
    assert src.secret("api_key") == "s3cret"
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[[source]]\nname = "x"\nkind = "nope"', "source.x.kind"),
        ('[[source]]\nname = "x"\nkind = "rss"\nevery = "soon"', "source.x.every"),
        ('[[source]]\nname = "x"\nkind = "discourse"\napi_key = "literal-secret"', "source.x.api_key"),
        ('[[watch]]\nname = "w"\nterms = ["-only"]', "watch.w.terms[0]"),
        ('[[watch]]\nname = "w"\nterms = 3', "watch.w.terms"),
        ('[[source]]\nname = "a b"\nkind = "rss"', "source[0].name"),
        ('[[source]]\nname = "x"\nkind = "rss"\n[[source]]\nname = "x"\nkind = "rss"', "source"),
        ('[[source]]\nname = "x"\nkind = "rss"\ncron = "daily"', "source.x.cron"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    p = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(p) in str(info.value)
    assert key in str(info.value)


def test_unreadable_or_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[[source]\n"))
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(write(tmp_path, "[sourcez]\n"))
