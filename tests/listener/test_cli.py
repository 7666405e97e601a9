"""The CLI as a user meets it: exit codes, one-line errors, no tracebacks, nothing lost."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from listener.cli import main
from tests.listener.test_pipeline import FEED
from tests.support.server import ReplayServer, Reply


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def write_config(tmp_path: Path, server: ReplayServer) -> Path:
    cfg = tmp_path / "listener.toml"
    cfg.write_text(
        f"""
[storage]
database = "l.db"
[[watch]]
name = "acme"
terms = "acme"
[[watch]]
name = "notably"
terms = "notably"
competitor = true
[[source]]
name = "feed"
kind = "rss"
url = "{server.url}/feed"
backfill = "3650d"
[[source]]
name = "broken"
kind = "rss"
url = "{server.url}/broken"
""",
        encoding="utf-8",
    )
    return cfg


def test_init_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "listener.toml"
    assert run(capsys, "init", str(path))[0] == 0
    code, out, _ = run(capsys, "-c", str(path), "check")
    assert code == 0 and "ok" in out
    # the written config carries the default taxonomy, ready to edit (the topic stage reads it from there)
    from enrich.topics import default_taxonomy, taxonomy_from_config
    from listener.config import load_config

    assert taxonomy_from_config(load_config(path)) == default_taxonomy()
    assert f"{len(default_taxonomy())} topics" in out
    broken = path.read_text().replace('name = "pricing"', 'name = "pricing"\nthreshold = 7', 1)
    path.write_text(broken)
    code, _, err = run(capsys, "-c", str(path), "check")
    assert code == 2 and "topics.pricing.threshold" in err
    code, _, err = run(capsys, "init", str(path))
    assert code == 2 and "--force" in err


def test_bad_config_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[source]]\nname = "x"\nkind = "rss"\nevery = "soon"\n', encoding="utf-8")
    code, _, err = run(capsys, "-c", str(bad), "check")
    assert code == 2
    assert "source.x.every" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    code, _, err = run(capsys, "-c", str(tmp_path / "missing.toml"), "fetch")
    assert code == 2 and "not found" in err


def test_fetch_search_digest_state(
    tmp_path: Path, replay_server: ReplayServer, capsys: pytest.CaptureFixture[str]
) -> None:
    replay_server.routes["/feed"] = Reply(body=FEED, content_type="application/rss+xml")
    replay_server.routes["/broken"] = Reply(body=b"<html>oops</html>", content_type="text/html")
    cfg = str(write_config(tmp_path, replay_server))
    code, out, _ = run(capsys, "-c", cfg, "fetch")
    assert code == 1  # one source failed …
    assert "not a feed" in out
    code, out, _ = run(capsys, "-c", cfg, "search", "sync", "--format", "json")
    assert code == 0  # … and the other one's mentions are stored
    rows = json.loads(out)
    assert [r["title"] for r in rows] == ["Acme sync is broken"]
    code, out, _ = run(capsys, "-c", cfg, "search", "--watch", "notably", "--format", "csv")
    assert [r["title"] for r in csv.DictReader(io.StringIO(out))] == ["Notably vs acme"]
    code, out, _ = run(capsys, "-c", cfg, "search", "--format", "ndjson", "--since", "2026-11-23T11:30")
    assert code == 0 and len(out.strip().splitlines()) == 1
    code, out, _ = run(capsys, "-c", cfg, "digest", "--since", "3650d")
    assert code == 0 and "## acme" in out and "Acme sync is broken" in out and "broken" in out
    code, out, _ = run(capsys, "-c", cfg, "state", "show", "broken")
    assert code == 0 and '"consecutive_failures": 1' in out
    assert run(capsys, "-c", cfg, "state", "reset", "broken")[0] == 0
    code, out, _ = run(capsys, "-c", cfg, "sources")
    assert code == 0 and "feed" in out
    assert run(capsys, "-c", cfg, "db", "check")[0] == 0


def test_usage_errors(tmp_path: Path, replay_server: ReplayServer, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(write_config(tmp_path, replay_server))
    code, _, err = run(capsys, "-c", cfg, "fetch", "--source", "nope")
    assert code == 2 and "unknown source 'nope'" in err
    code, _, err = run(capsys, "-c", cfg, "search", "--since", "yesterday-ish")
    assert code == 2 and "not a duration" in err
    code, _, err = run(capsys, "-c", cfg, "search", "--", "-only")
    assert code == 2 and "no positive term" in err


def test_unusable_database_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--db", str(tmp_path / "no" / "such" / "dir" / "x.db"), "search", "x")
    assert code == 1 and "Traceback" not in err and "x.db" in err


def test_unknown_source_key_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "typo.toml"
    cfg.write_text('[[source]]\nname = "hn"\nkind = "hackernews"\nhits_per_pag = 10\n', encoding="utf-8")
    code, _, err = run(capsys, "-c", str(cfg), "fetch")
    assert code == 2 and "source.hn.hits_per_pag" in err and "did you mean 'hits_per_page'" in err
