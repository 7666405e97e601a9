"""`listener demo` on a fresh database: every bundled entry stored, searchable, digested, 2nd fetch free."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import feedparser
from rich.console import Console

from enrich.knowledge import solved_by_community, top_questions
from listener.demo.runner import FEEDS, run_demo

FORUM_POSTS = sum(len(json.loads(t.read_text())["post_stream"]["posts"]) for t in (FEEDS / "qa" / "t").glob("*.json"))


def test_demo_stores_every_bundled_entry(tmp_path: Path) -> None:
    expected = sum(len(feedparser.parse(p.read_bytes()).entries) for p in FEEDS.iterdir() if p.is_file())
    assert expected >= 80 and FORUM_POSTS >= 8
    expected += FORUM_POSTS
    console = Console(record=True, width=120)
    store = run_demo(db=tmp_path / "demo.db", enrich=False, console=console)
    try:
        assert store.count() == expected
        output = console.export_text()
        assert "0 new rows, 0 body bytes downloaded" in output
        assert "## acme-notes" in output and "](https://" in output  # quotes carry links
        hits = store.search('"acme notes" sync', limit=100).items
        assert hits and all("sync" in (h.mention.body.lower()) for h in hits)
        assert store.check() == []
        # the Q&A forum keeps thread structure: questions with accepted / top-voted answers, one unanswered
        qas = top_questions(store, since=datetime(2026, 11, 1, tzinfo=UTC))
        assert len(qas) == 4 and sorted(str(qa.how) for qa in qas) == ["None", "accepted", "top_voted", "top_voted"]
        solved = solved_by_community(store, since=datetime(2026, 11, 1, tzinfo=UTC))
        assert [qa.question.title for qa in solved] == ["iOS widget stopped updating after 5.2"]
    finally:
        store.close()
    # a second demo run on the same file starts fresh and stores the same count
    again = run_demo(db=tmp_path / "demo.db", enrich=False, console=Console(record=True))
    try:
        assert again.count() == expected
    finally:
        again.close()
