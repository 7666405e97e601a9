"""The HTML digest: right numbers and sections from a real store, and every piece of user content inert."""

from __future__ import annotations

import base64
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup

from enrich.base import Enrichment
from listener.config import Config, parse_config
from listener.cues import intents, is_question, is_request
from listener.digest_html import build_email_digest, render_html, render_standalone, safe_url, source_health
from listener.types import Mention, utcnow
from storage import Store

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
EVIL_WATCH = '<img src=x onerror="alert(2)">'
CONFIG: dict[str, Any] = {
    "watch": [{"name": "acme", "terms": "acme"}, {"name": "notably", "terms": "notably", "competitor": True}],
    "source": [{"name": "forum", "kind": "discourse", "url": "https://forum.example"},
               {"name": "reviews", "kind": "appstore", "app_id": "1"}],
}


def mention(n: int, text: str, *, hours_ago: float, watch: str = "acme", source: str = "forum",
            kind: str = "discourse", author: str | None = None, url: str | None = None, score: float = 0.0,
            title: str | None = None) -> Mention:
    return Mention(source=source, kind=kind, native_id=f"n{n}", url=url or f"https://forum.example/t/{n}",
                   title=title, text=text, author=author or f"user{n}", created_at=NOW - timedelta(hours=hours_ago),
                   matched=(watch,), score=score)


def seed(store: Store, items: list[tuple[Mention, str | None]]) -> None:
    by_source: dict[str, list[Mention]] = {}
    for m, _ in items:
        by_source.setdefault(m.source, []).append(m)
    for source, ms in by_source.items():
        store.save_batch(source, ms, None)
    store.save_enrichments([Enrichment(m.id, "sentiment", "t1", {"label": lbl}) for m, lbl in items if lbl])


def realistic(tmp_path: Path) -> tuple[Store, Config]:
    """Current day: complaints, a request, a question, praise, a competitor; earlier days for trend and chart."""
    store = Store.open(tmp_path / "t.db")
    items: list[tuple[Mention, str | None]] = [
        (mention(1, "acme sync lost my notes again", hours_ago=2, score=40), "negative"),
        (mention(2, "acme sync lost my notes again", hours_ago=3, author="syndicator"), "negative"),  # same voice
        (mention(3, "acme pricing doubled, this is absurd", hours_ago=4, score=10), "negative"),
        (mention(4, "Please add dark mode to acme", hours_ago=5, score=5), "neutral"),
        (mention(5, "How do I export my acme notes to markdown", hours_ago=6), "neutral"),
        (mention(6, "acme offline mode is brilliant", hours_ago=7, source="reviews", kind="appstore"), "positive"),
        (mention(7, "notably summaries are great", hours_ago=8, watch="notably"), "positive"),
        (mention(8, "acme works, nothing special", hours_ago=9), None),  # not enriched yet
        (mention(9, "acme was fine yesterday", hours_ago=30), "positive"),
        (mention(10, "acme crashed yesterday", hours_ago=31), "negative"),
    ]
    items += [(mention(100 + d, f"acme note day {d}", hours_ago=24 * d + 1), "neutral") for d in range(2, 14)]
    seed(store, items)
    rid = store.start_run("reviews")
    store.finish_run(rid, status="failed", new=0, duplicates=0, error="HTTP 503 from the store")
    rid = store.start_run("forum")
    store.finish_run(rid, status="ok", new=10, duplicates=0)
    return store, parse_config(CONFIG)


def test_email_digest_numbers_sections_and_quotes(tmp_path: Path) -> None:
    store, config = realistic(tmp_path)
    ed = build_email_digest(store, config, until=NOW)
    assert ed.base.total == 8 and ed.base.previous_total == 2
    wants = {w.key: w for w in ed.wants}
    assert wants["complaints"].count == 3  # mention 2 counts, but its text is not quoted twice
    assert [q.text for q in wants["complaints"].quotes] == ["acme sync lost my notes again",
                                                            "acme pricing doubled, this is absurd"]
    assert [q.text for q in wants["requests"].quotes] == ["Please add dark mode to acme"]
    assert [q.text for q in wants["questions"].quotes] == ["How do I export my acme notes to markdown"]
    assert wants["complaints"].previous == 1
    headlines = {h.label: h for h in ed.headlines}
    assert headlines["Negative share"].value == "43%"  # 3 of 7 rated; 1 of 2 the day before
    assert (headlines["Negative share"].change, headlines["Negative share"].tone) == ("▼ 7 pts", "good")
    assert headlines["Mentions"].change == "▲ 300%"
    assert len(ed.daily) == 14 and sum(sum(d.counts.values()) for d in ed.daily) == 8 + 2 + 12
    assert sum(d.counts["unrated"] for d in ed.daily) == 1 and ed.daily[-1].counts["negative"] == 3
    kinds = {k.kind: k for k in ed.kinds}
    assert kinds["appstore"].warning and not kinds["discourse"].warning  # the failing source's channel is flagged
    assert [(v.name, v.count, v.competitor) for v in ed.voices] == [("acme", 7, False), ("notably", 1, True)]
    assert [h.source for h in ed.base.health] == ["reviews"]

    html = render_standalone(ed)
    soup = BeautifulSoup(html, "html.parser")
    text = soup.get_text(" ", strip=True)
    for expected in ("What customers want", "Top complaints", "Feature requests", "Questions", "By channel",
                     "Competitors", "Source health", "HTTP 503 from the store", "simple phrase cues"):
        assert expected in text
    img = soup.find("img")
    assert img is not None and str(img["src"]).startswith("data:image/png;base64,")
    assert base64.b64decode(str(img["src"]).split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    hrefs = {a["href"] for a in soup.find_all("a")}
    assert "https://forum.example/t/1" in hrefs
    assert render_html(ed, "cid:volume-chart").count('src="cid:volume-chart"') == 1
    store.close()


def test_team_digest_counts_only_its_watches(tmp_path: Path) -> None:
    store, config = realistic(tmp_path)
    ed = build_email_digest(store, config, until=NOW, watches=["notably"], name="competitive")
    assert ed.base.total == 1 and [w.name for w in ed.base.watches] == ["notably"]
    assert ed.subject.startswith("Customer voice [competitive]: 1 mentions")
    with pytest.raises(Exception, match="unknown watch"):
        build_email_digest(store, config, until=NOW, watches=["nope"])
    store.close()


def test_empty_store_renders_and_says_so(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db")
    ed = build_email_digest(store, Config(path=None), until=NOW)
    text = BeautifulSoup(render_standalone(ed), "html.parser").get_text(" ", strip=True)
    assert "None this period" in text and "No mentions in this period" in text
    assert "configured but never fetched" not in text
    store.close()


def test_lagging_and_never_fetched_sources_are_flagged(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db")
    rid = store.start_run("forum")
    store.finish_run(rid, status="ok", new=1, duplicates=0)
    config = parse_config(CONFIG)
    lines = {h.source: h.problem for h in source_health(store, config, utcnow() + timedelta(hours=5))}
    assert lines["forum"].startswith("lagging: no successful fetch for 5h")
    assert lines["reviews"].startswith("configured but never fetched")
    assert "forum" not in {h.source for h in source_health(store, config, utcnow())}
    store.close()


def assert_inert(html: str) -> None:
    """No script elements, no event-handler attributes, no javascript:/data: links: user markup stays text."""
    soup = BeautifulSoup(html, "html.parser")
    assert soup.find_all("script") == []
    for tag in soup.find_all(True):
        for attr, value in tag.attrs.items():
            assert not attr.lower().startswith("on"), (tag.name, attr)
            if attr in ("href", "src"):
                v = str(value).strip().lower()
                assert v.startswith(("http://", "https://", "cid:", "data:image/png;base64,")), (tag.name, value)
                assert tag.name == "img" or v.startswith(("http://", "https://"))
    allowed = {"html", "head", "meta", "title", "style", "body", "table", "tr", "td", "div", "span", "strong", "a",
               "img", "br"}
    assert {t.name for t in soup.find_all(True)} <= allowed
    styles = soup.find_all("style")  # only the template's own narrow-screen rules, in <head>
    assert len(styles) <= 1 and all(s.parent is not None and s.parent.name == "head" for s in styles)
    assert all("display:none" not in s.get_text().replace(" ", "") for s in styles)


XSS_TEXTS = [
    "acme <script>alert(1)</script> is broken",
    'acme <img src=x onerror="alert(1)"> please add a fix',
    "acme how do I <a href=javascript:alert(1)>click</a>?",
    'acme "><svg onload=alert(1)>',
]


def hostile_store(tmp_path: Path) -> tuple[Store, Config]:
    store = Store.open(tmp_path / "t.db")
    items: list[tuple[Mention, str | None]] = [
        (mention(i, text, hours_ago=1 + i, author=f'<b onmouseover="alert({i})">Mallory{i}</b>',
                 url=["javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,<script>x</script>",
                      "https://ok.example/?q=\"><script>"][i], title="<i>title</i>"), "negative")
        for i, text in enumerate(XSS_TEXTS)
    ]
    items.append((mention(9, "notably <style>body{display:none}</style>", hours_ago=2, watch=EVIL_WATCH), None))
    seed(store, items)
    rid = store.start_run("forum")
    store.finish_run(rid, status="failed", new=0, duplicates=0, error="<script>alert('err')</script>")
    config = parse_config({**CONFIG, "watch": [*CONFIG["watch"],
                                               {"name": EVIL_WATCH, "terms": "notably", "competitor": True}]})
    return store, config


def test_hostile_content_arrives_inert(tmp_path: Path) -> None:
    store, config = hostile_store(tmp_path)
    ed = build_email_digest(store, config, until=NOW)
    for html in (render_standalone(ed), render_html(ed, "cid:volume-chart")):
        assert_inert(html)
        text = BeautifulSoup(html, "html.parser").get_text(" ")
        assert "<script>alert(1)</script>" in text  # shown as text, not dropped: the reader sees what was said
        assert "Mallory" in text and EVIL_WATCH in text and "<script>alert('err')</script>" in text
    store.close()


@pytest.mark.parametrize(("url", "ok"), [
    ("https://a.example/x", True), ("http://a.example", True), ("javascript:alert(1)", False),
    ("JAVASCRIPT:alert(1)", False), ("java\tscript:alert(1)", False), ("//evil.example", False),
    ("data:text/html,x", False), ("https://a.example/\"onmouseover=x", False), ("", False), (None, False),
    ("https:///nohost", False),
])
def test_safe_url(url: str | None, ok: bool) -> None:
    assert (safe_url(url) is not None) is ok


@pytest.mark.parametrize(("text", "want"), [
    ("How do I export my notes", {"question"}),
    ("is this still maintained?", {"question"}),
    ("Please add a dark mode", {"request"}),
    ("Would love an offline mode, how do I vote?", {"request"}),  # a request phrased as a question is a request
    ("I wish it synced faster", {"request"}),
    ("Feature request: calendar view", {"request"}),
    ("Works great, thanks", set()),
    ("see https://example.com/page?id=3 for the changelog", set()),  # a '?' inside a link is not a question
    ("> how do I do this?\nYou open settings.", set()),  # quoting someone's question is an answer
])
def test_cues(text: str, want: set[str]) -> None:
    assert set(intents(text)) == want
    assert is_request(text) == ("request" in want)
    if want == {"question"}:
        assert is_question(text)


def test_digest_goes_out_without_chart_when_matplotlib_is_missing(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from listener.delivery import digest_outgoing

    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import now raises ImportError
    store, config = realistic(tmp_path)
    out = digest_outgoing(build_email_digest(store, config, until=NOW))
    assert out.images == {} and out.html is not None and "<img" not in out.html and "<img" not in render_standalone(
        build_email_digest(store, config, until=NOW))
    assert "Top complaints" in out.html
    store.close()
