"""Label filters page correctly over storage pages; exports stream every match in each format."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from enrich.base import Enrichment
from listener.export import ExportFormat, export_mentions
from listener.query import MentionQuery, run_query
from listener.types import Mention
from storage import Store

NOW = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "q.db")
    mentions = [
        Mention(source="forum", kind="discourse", native_id=str(i), url=f"https://f.example/t/{i}", title=None,
                text=f"post {i} about sync, with a comma and a \"quote\"\nand a second line", author=f"u{i}",
                created_at=NOW - timedelta(minutes=i))
        for i in range(60)
    ]
    s.save_batch("forum", mentions, None)
    enrichments = []
    for i, m in enumerate(mentions):
        label = "question" if i % 3 == 0 else "complaint"
        enrichments.append(Enrichment(m.id, "intent", "t1", {"label": label}))
        enrichments.append(Enrichment(m.id, "language", "t1", {"lang": "de" if i % 10 == 0 else "en"}))
        enrichments.append(Enrichment(m.id, "sentiment", "t1", {"label": "negative" if i % 2 else "positive"}))
    s.save_enrichments(enrichments)
    yield s
    s.close()


def test_label_filter_pages_cover_every_match_once(store: Store) -> None:
    q = MentionQuery(intent="question", limit=7)
    seen: list[str] = []
    after = None
    for _ in range(10):
        page = run_query(store, replace(q, after=after))
        seen += [i.mention.native_id for i in page.items]
        after = page.next_after
        if after is None:
            break
    assert seen == [str(i) for i in range(0, 60, 3)]  # newest first, all 20, none twice


def test_filters_combine(store: Store) -> None:
    page = run_query(store, MentionQuery(intent="question", lang="de", sentiment="positive", limit=50))
    assert [i.mention.native_id for i in page.items] == ["0", "30"]
    assert run_query(store, MentionQuery(intent="praise")).items == []


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson", "parquet"])
def test_export_every_match(store: Store, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"x.{fmt}"
    q = MentionQuery(text="sync", intent="complaint", limit=7)  # small pages force streaming across pages
    count = export_mentions(store, q, ExportFormat(fmt), out)
    assert count == 40
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
        assert len(rows) == 40 and rows[0]["text"].endswith("second line") and rows[0]["sentiment"] == "negative"
    elif fmt == "json":
        assert len(json.loads(out.read_text(encoding="utf-8"))) == 40
    elif fmt == "ndjson":
        assert len(out.read_text(encoding="utf-8").splitlines()) == 40
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert table.num_rows == 40 and "sentiment" in table.column_names


def test_empty_export_still_has_a_csv_header(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "none.csv"
    assert export_mentions(store, MentionQuery(intent="praise"), ExportFormat.csv, out) == 0
    assert out.read_text(encoding="utf-8").startswith("id,source,kind")
