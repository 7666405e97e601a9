"""Digests filtered by language: `listener digest --lang`, `[[digest]] languages`, HTML and Markdown say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from enrich.base import Enrichment
from listener.config import parse_config
from listener.delivery import digest_jobs
from listener.digest import build_digest, render_markdown, render_text
from listener.digest_html import build_email_digest, render_html
from listener.errors import ConfigError
from storage import Store
from tests.listener.test_digest_html import CONFIG, NOW, mention

LANGS = {1: "en", 2: "de", 3: "es", 4: "und", 5: None}  # 5: the language stage has not run on it yet


def seeded(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "l.db")
    ms = {n: mention(n, f"acme post {n}", hours_ago=n) for n in LANGS}
    store.save_batch("forum", list(ms.values()), None)
    store.save_enrichments(
        [Enrichment(ms[n].id, "language", "t1", {"lang": code}) for n, code in LANGS.items() if code]
        + [Enrichment(m.id, "sentiment", "t1", {"label": "negative"}) for m in ms.values()]
    )
    return store


def test_a_language_filter_keeps_those_languages_and_the_undetected(tmp_path: Path) -> None:
    config = parse_config(CONFIG, "t.toml")
    with seeded(tmp_path) as store:
        everything = build_digest(store, config, until=NOW)
        english = build_digest(store, config, until=NOW, languages=["EN"])
        both = build_digest(store, config, until=NOW, languages=["en", "de"])
    assert (everything.total, english.total, both.total) == (5, 3, 4)  # en + und + not yet detected
    assert english.languages == ("en",) and everything.languages == ()
    assert "in en (and of undetected language) only" in render_markdown(english)
    assert "Languages: en" in render_text(english) and "Languages" not in render_text(everything)


def test_the_html_digest_counts_and_says_the_same(tmp_path: Path) -> None:
    config = parse_config(CONFIG, "t.toml")
    with seeded(tmp_path) as store:
        ed = build_email_digest(store, config, until=NOW, languages=["de"])
    assert ed.base.total == 3
    assert "Counts only mentions in de (and of undetected language)." in render_html(ed, "")


def test_team_digests_take_a_languages_list(tmp_path: Path) -> None:
    raw = {
        **CONFIG,
        "digest": [
            {"name": "dach", "languages": ["de"], "deliver": [{"kind": "file", "path": "d.html"}]},
            {"name": "us", "languages": "en", "deliver": [{"kind": "file", "path": "u.html"}]},
        ],
    }
    jobs = {j.name: j for j in digest_jobs(parse_config(raw, str(tmp_path / "t.toml")))}
    assert jobs["dach"].languages == ("de",) and jobs["us"].languages == ("en",)
    bad = {**CONFIG, "digest": [{"name": "x", "languages": [1], "deliver": [{"kind": "file", "path": "x.html"}]}]}
    with pytest.raises(ConfigError, match=r"digest\.x\.languages"):
        digest_jobs(parse_config(bad, str(tmp_path / "t.toml")))
