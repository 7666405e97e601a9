"""`listener demo` on a fresh database: every bundled entry stored, searchable, digested, 2nd fetch free."""

from __future__ import annotations

from pathlib import Path

import feedparser
from rich.console import Console

from listener.demo.runner import FEEDS, run_demo


def test_demo_stores_every_bundled_entry(tmp_path: Path) -> None:
    expected = sum(len(feedparser.parse(p.read_bytes()).entries) for p in FEEDS.iterdir() if p.is_file())
    assert expected >= 80
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
    finally:
        store.close()
    # a second demo run on the same file starts fresh and stores the same count
    again = run_demo(db=tmp_path / "demo.db", enrich=False, console=Console(record=True))
    try:
        assert again.count() == expected
    finally:
        again.close()
