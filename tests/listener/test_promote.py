"""Promoting an emerging cluster into the taxonomy (`listener promote`) and topic trends (`listener topics`)."""

from __future__ import annotations

import json
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from enrich.emerging import EmergingCluster, emerging_topics
from enrich.topics import TopicStage, default_taxonomy, taxonomy_from_config
from enrich.vectors import EmbeddingStage
from listener.cli_insight import with_trend
from listener.config import load_config
from listener.errors import ConfigError
from listener.promote import promote_cluster
from listener.types import utcnow
from storage import Store
from tests.enrich.test_emerging import THEMES, mentions_for
from tests.listener.test_cli import run as run_cli

CONFIG = """# my listener
[storage]
database = "l.db"

[[watch]]
name = "acme"
terms = "acme"  # our brand
"""


def widget_cluster(tmp_path: Path) -> tuple[Path, EmergingCluster]:
    db = tmp_path / "l.db"
    with Store.open(db) as store:
        ms = mentions_for(THEMES["widget"] + THEMES["carplay"])
        store.save_batch("s", ms, None)
        store.save_enrichments(EmbeddingStage().run(ms))
        clusters = emerging_topics(store, utcnow() - timedelta(days=1), min_size=4)
    return db, next(c for c in clusters if "widget" in c.keywords)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code, out, err = run_cli(capsys, *args)
    return code, out + err


def test_a_promoted_cluster_is_a_topic_the_stage_then_assigns(tmp_path: Path) -> None:
    cfg = tmp_path / "listener.toml"
    cfg.write_text(CONFIG)
    _, cluster = widget_cluster(tmp_path)
    topic = promote_cluster(cfg, cluster, "home_widget")
    assert topic.seeds and all(s in THEMES["widget"] for s in topic.seeds) and "widget" in topic.keywords
    text = cfg.read_text()
    assert text.startswith(CONFIG) and "# our brand" in text  # the user's file is kept as written
    taxonomy = taxonomy_from_config(load_config(cfg))
    # the built-in default came along: one [[topics]] entry alone would have replaced it
    assert [t.name for t in taxonomy] == [t.name for t in default_taxonomy()] + ["home_widget"]
    fresh = mentions_for(["My widget is missing from the home screen again"], 50)
    hits = TopicStage(taxonomy, aspect_sentiment=False).run(fresh)[0].data["topics"]
    assert "home_widget" in [h["name"] for h in hits]


def test_a_config_with_its_own_taxonomy_gets_only_the_new_topic(tmp_path: Path) -> None:
    cfg = tmp_path / "listener.toml"
    cfg.write_text(CONFIG + '\n[[topics]]\nname = "sync"\ndescription = "Syncing notes between devices."\n')
    _, cluster = widget_cluster(tmp_path)
    promote_cluster(cfg, cluster, "home_widget")
    assert [t["name"] for t in tomllib.loads(cfg.read_text())["topics"]] == ["sync", "home_widget"]


@pytest.mark.parametrize(("name", "says"), [("pricing", "already has a topic"), ("Bad Name!", "lower-case")])
def test_bad_names_are_refused_and_the_file_is_untouched(tmp_path: Path, name: str, says: str) -> None:
    cfg = tmp_path / "listener.toml"
    cfg.write_text(CONFIG)
    _, cluster = widget_cluster(tmp_path)
    with pytest.raises(ConfigError, match=says):
        promote_cluster(cfg, cluster, name)
    assert cfg.read_text() == CONFIG and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_promote_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "listener.toml"
    cfg.write_text(CONFIG)
    widget_cluster(tmp_path)
    code, out = run(capsys, "--config", str(cfg), "topics", "--emerging", "--since", "1d", "--json")
    assert code == 0
    found = {c["id"]: c for c in json.loads(out)["emerging"]}
    widget = next(cid for cid, c in found.items() if "widget" in c["keywords"])
    code, out = run(capsys, "--config", str(cfg), "promote", "em-9999", "--name", "x", "--since", "1d")
    assert code == 2 and "no emerging cluster 'em-9999'" in out and widget in out
    code, out = run(capsys, "--config", str(cfg), "promote", widget, "--name", "home_widget", "--since", "1d")
    assert code == 0 and "added topic home_widget" in out and "listener enrich" in out
    assert "home_widget" in [t.name for t in taxonomy_from_config(load_config(cfg))]


def test_topic_trend_compares_with_the_window_before() -> None:
    now = [{"topic": "sync", "mentions": 7}, {"topic": "pricing", "mentions": 2}, {"topic": "battery", "mentions": 1}]
    before = [{"topic": "sync", "mentions": 4}, {"topic": "pricing", "mentions": 5}]
    rows = {r["topic"]: r for r in with_trend(now, before)}
    assert (rows["sync"]["trend"], rows["pricing"]["trend"], rows["battery"]["trend"]) == ("+3", "-3", "new")
    assert rows["pricing"]["previous"] == 5


def test_quotes_with_odd_characters_survive_the_round_trip(tmp_path: Path) -> None:
    import numpy as np

    cfg = tmp_path / "listener.toml"
    cfg.write_text(CONFIG)
    odd = 'He said "it\'s \\\\broken\\\\"\n\tagain\x7f \x01 — ünïcödé 🔋 ' + "x" * 300
    cluster = EmergingCluster("em-0007", 5, ["battery", "drain"], [{"id": "1", "text": odd}], np.ones(384, np.float32))
    topic = promote_cluster(cfg, cluster, "battery-drain")
    (seed,) = topic.seeds
    assert seed.startswith('He said "it\'s \\\\broken\\\\" again\x7f \x01 — ünïcödé 🔋') and len(seed) <= 200
    assert seed.endswith("…") and "\n" not in seed
    assert tomllib.loads(cfg.read_text())["topics"][-1]["seeds"] == [seed]
