"""The digest's "Topics and aspects": counts and aspect sentiment vs the previous period, movers with a minimum
count, emerging themes new this period; the same numbers in Markdown, text, HTML and JSON, all of it inert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bs4 import BeautifulSoup

from enrich.base import Enrichment
from enrich.vectors import pack
from listener.config import Config, parse_config
from listener.delivery import digest_data, digest_jobs, digest_outgoing, digest_text
from listener.digest import build_digest, render_markdown, render_text
from listener.digest_html import build_email_digest, render_standalone
from listener.errors import ConfigError
from listener.types import Mention
from storage import Store
from tests.listener.test_digest_html import assert_inert

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
TAXONOMY = [{"name": n, "description": f"talk about {n}"} for n in ("sync", "pricing", "export", "battery")]
CONFIG: dict[str, Any] = {
    "watch": [{"name": "acme", "terms": "acme"}, {"name": "notably", "terms": "notably", "competitor": True}],
    "topics": TAXONOMY,
}
rng = np.random.default_rng(5)
CENTRES = {name: rng.normal(size=384) for name in ("widget", "carplay")}
EMERGING_TEXT = {
    "widget": "acme home screen widget vanished after the update",
    "carplay": "acme carplay display freezes while driving",
}


class Seeder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.n = 0
        self.mentions: list[Mention] = []
        self.rows: list[Enrichment] = []

    def add(self, text: str, hours_ago: float, *, topic: str | None = None, aspect: str | None = None,
            evidence: str | None = None, cluster: str | None = None, watch: str = "acme", author: str | None = None,
            url: str | None = None, score: float = 0.0) -> Mention:
        self.n += 1
        m = Mention(source="forum", kind="discourse", native_id=f"t{self.n}", url=url or f"https://f.example/t/{self.n}",
                    title=None, text=text, author=author or f"user{self.n}",
                    created_at=NOW - timedelta(hours=hours_ago), matched=(watch,), score=score)
        self.mentions.append(m)
        hits = [] if topic is None else [{"name": topic, "score": 0.6, "evidence": evidence or text, "keyword": False,
                                          "sentiment": {"label": aspect, "score": 0.9} if aspect else None}]
        self.rows.append(Enrichment(m.id, "topics", "test-topics", {"topics": hits}))
        if cluster is not None:
            v = CENTRES[cluster] + 0.3 * rng.normal(size=384)
            self.rows.append(Enrichment(m.id, "embedding", "test-enc", pack((v / np.linalg.norm(v)).astype("f4"))))
        return m

    def save(self) -> None:
        self.store.save_batch("forum", self.mentions, None)
        self.store.save_enrichments(self.rows)


def seeded(tmp_path: Path, *, embeddings: bool = True) -> tuple[Store, Config]:
    """sync rises 4 → 10 and turns negative; pricing flat 6 → 6; export 1 → 3 (too small to headline);
    battery 5 → 0; an uncovered "widget" theme appears this period, a "carplay" one is as big as before."""
    store = Store.open(tmp_path / "t.db")
    s = Seeder(store)
    for i, aspect in enumerate(["negative"] * 7 + ["positive"] + ["neutral"] * 2):
        s.add(f"acme post {i} about sync", 1 + i, topic="sync", aspect=aspect, score=float(i),
              evidence=f"sync lost my notes, case {i}" if aspect == "negative" else None)
    for i, aspect in enumerate(["negative", "positive", "positive", "neutral"]):
        s.add(f"acme older sync {i}", 26 + i, topic="sync", aspect=aspect)
    for i in range(6):
        s.add(f"acme price now {i}", 2 + i, topic="pricing", aspect="negative")
        s.add(f"acme price before {i}", 30 + i, topic="pricing", aspect="negative" if i < 3 else "neutral")
    for i in range(3):
        s.add(f"acme export {i}", 3 + i, topic="export", aspect="neutral")
    s.add("acme export before", 40, topic="export", aspect="neutral")
    for i in range(5):
        s.add(f"acme battery {i}", 28 + i, topic="battery")  # no aspect sentiment: net unknown
    if embeddings:
        for i in range(6):
            s.add(f"{EMERGING_TEXT['widget']} #{i}", 2 + i, cluster="widget", score=float(i))
            s.add(f"{EMERGING_TEXT['carplay']} #{i}", 3 + i, cluster="carplay")
            s.add(f"{EMERGING_TEXT['carplay']} again #{i}", 27 + i, cluster="carplay")
    s.add("notably sync is great", 2, topic="sync", aspect="positive", watch="notably")
    s.save()
    return store, parse_config(CONFIG)


def test_topic_counts_movers_and_emerging(tmp_path: Path) -> None:
    store, config = seeded(tmp_path)
    d = build_digest(store, config, until=NOW)
    t = d.topics
    assert t is not None and t.enriched
    lines = {x.name: x for x in t.topics}
    assert [(x.name, x.count, x.previous) for x in t.topics] == [
        ("sync", 11, 4), ("pricing", 6, 6), ("export", 3, 1), ("battery", 0, 5)]
    sync = lines["sync"]
    assert sync.net == pytest.approx((2 - 7) / 11) and sync.net_change == pytest.approx((2 - 7) / 11 - 0.25)
    assert lines["battery"].net is None and lines["pricing"].net_change == pytest.approx(-1 - (-0.5))
    assert [m.name for m in t.movers] == ["sync"]  # export 1 → 3 is below the minimum count
    quotes = t.movers[0].quotes
    assert 1 <= len(quotes) <= 2 and len({q.text for q in quotes}) == len(quotes)
    assert all(q.text.startswith("sync lost my notes") and q.sentiment == "negative" for q in quotes)
    assert [e.new for e in t.emerging] == [True] and "widget" in t.emerging[0].keywords
    e = t.emerging[0]
    assert (e.count, e.previous) == (6, 0) and e.quote is not None and "widget" in e.quote.text
    assert e.first_seen >= NOW - timedelta(hours=24)
    store.close()


def test_topics_section_in_markdown_text_html_and_json(tmp_path: Path) -> None:
    store, config = seeded(tmp_path)
    d = build_digest(store, config, until=NOW)
    md = render_markdown(d)
    assert "## Topics and aspects" in md and "| sync | 11 | ▲ 175% | -45 | ▼ 70 pts |" in md
    assert "| battery | 0 | ▼ 100% | – | – |" in md
    assert "### Biggest movers" in md and "**sync**: 4 → 11 (▲ 175%)" in md and "**export**" not in md
    assert "### Emerging topics new this period" in md and "new this period" in md
    assert "> sync lost my notes" in md and "](https://f.example/t/" in md
    text = render_text(d)
    assert "Mover: sync 4 -> 11 (▲ 175%)" in text and "Emerging: " in text and "widget" in text

    ed = build_email_digest(store, config, until=NOW)
    soup = BeautifulSoup(render_standalone(ed), "html.parser")
    page = soup.get_text(" ", strip=True)
    for expected in ("Topics and aspects", "Biggest movers", "Emerging topics new this period", "sync lost my notes",
                     "▼ 70 pts", "4 → 11 mentions"):
        assert expected in page, expected
    hrefs = {a["href"] for a in soup.find_all("a")}
    assert any(h.startswith("https://f.example/t/") for h in hrefs)
    data = digest_data(ed)
    assert data["topics"]["movers"][0]["name"] == "sync" and data["topics"]["emerging"][0]["new"] is True
    assert "Mover: sync" in digest_text(ed)
    out = digest_outgoing(ed)
    assert "Biggest topic movers" in str(out.slack["blocks"])
    store.close()


def test_team_digest_filters_topics_and_watches(tmp_path: Path) -> None:
    store, config = seeded(tmp_path)
    ed = build_email_digest(store, config, until=NOW, topics=["pricing"], name="billing")
    assert ed.base.topics is not None and [x.name for x in ed.base.topics.topics] == ["pricing"]
    assert ed.base.topics.movers == [] and ed.base.topics.scope == ("pricing",)
    assert "Topics and aspects · pricing" in BeautifulSoup(render_standalone(ed), "html.parser").get_text(" ")
    competitive = build_email_digest(store, config, until=NOW, watches=["notably"], name="competitive")
    assert competitive.base.topics is not None
    assert [(x.name, x.count) for x in competitive.base.topics.topics] == [("sync", 1)]
    with pytest.raises(ConfigError, match="unknown topic"):
        build_email_digest(store, config, until=NOW, topics=["nope"])
    jobs = digest_jobs(parse_config({**CONFIG, "digest": [{"name": "billing", "topics": ["pricing"]}]}))
    assert jobs[0].topics == ("pricing",)
    with pytest.raises(ConfigError, match=r"digest\.billing\.topics"):
        digest_jobs(parse_config({**CONFIG, "digest": [{"name": "billing", "topics": [1]}]}))
    store.close()


def test_section_degrades_without_insight_enrichments(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db")
    store.save_batch("forum", [Mention(source="forum", kind="discourse", native_id="x", url=None, title=None,
                                       text="acme is fine", author="a", created_at=NOW - timedelta(hours=1),
                                       matched=("acme",))], None)
    config = parse_config(CONFIG)
    d = build_digest(store, config, until=NOW)
    assert d.topics is not None and not d.topics.enriched
    assert "_Topics not enriched yet (run `listener enrich`)._" in render_markdown(d)
    assert "Topics: not enriched yet" in render_text(d)
    html = render_standalone(build_email_digest(store, config, until=NOW))
    assert "Topics not enriched yet" in BeautifulSoup(html, "html.parser").get_text(" ")
    store.close()
    empty = Store.open(tmp_path / "e.db")
    assert "Topics" not in render_markdown(build_digest(empty, config, until=NOW))  # no mentions: no section
    empty.close()
    (tmp_path / "no-vectors").mkdir()
    store, config = seeded(tmp_path / "no-vectors", embeddings=False)
    d = build_digest(store, config, until=NOW)
    assert d.topics is not None and d.topics.emerging == [] and d.topics.movers
    assert d.topics.emerging_note == "no embeddings yet (run `listener enrich`)"
    assert "_Emerging topics: no embeddings yet" in render_markdown(d)
    store.close()


EVIL = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def test_hostile_topic_quotes_and_cluster_text_arrive_inert(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db")
    s = Seeder(store)
    for i in range(6):
        s.add(f"acme {EVIL} {i}", 1 + i, topic="sync", aspect="negative", evidence=f"{EVIL} sync {i}",
              author=f'<b onmouseover="x">Mallory{i}</b>', url="javascript:alert(3)")
        s.add(f"{EMERGING_TEXT['widget']} {EVIL} #{i}", 2 + i, cluster="widget", url=" JavaScript:alert(4)",
              author="<i>eve</i>")
    s.save()
    config = parse_config({**CONFIG, "topics": [*TAXONOMY, {"name": "<b>sync</b>", "description": "x"}]})
    ed = build_email_digest(store, config, until=NOW)
    assert ed.base.topics is not None and ed.base.topics.movers and ed.base.topics.emerging
    html = render_standalone(ed)
    assert_inert(html)
    text = BeautifulSoup(html, "html.parser").get_text(" ")
    assert "<script>alert(2)</script>" in text and "Mallory" in text  # shown as text, not dropped
    md = render_markdown(ed.base)
    assert "<script>" not in md and "javascript:" not in md.lower() and "\\<script\\>" in md
    store.close()
