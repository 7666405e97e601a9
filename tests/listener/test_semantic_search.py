"""Semantic search (`--semantic`, `semantic=`): the hits' texts and their similarity, in every surface."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enrich.vectors import EmbeddingStage
from listener.api import create_app
from listener.cli import main
from listener.config import Config
from listener.export import ExportFormat, export_mentions
from listener.query import MentionQuery, run_query
from listener.types import Mention
from storage import Store

TEXTS = [
    "Battery dies in an hour since the update",
    "Customer support never answered my ticket",
    "How do I export my notes to PDF?",
    "The new dark theme looks great",
]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "s.db"
    now = datetime.now(UTC)
    mentions = [
        Mention(source="forum", kind="discourse", native_id=str(i), url=f"https://f.example/t/{i}", title=None,
                text=t, author=f"u{i}", created_at=now - timedelta(hours=i))
        for i, t in enumerate(TEXTS)
    ]  # fmt: skip
    with Store.open(path) as store:
        store.save_batch("forum", mentions, None)
        store.save_enrichments(EmbeddingStage().run(mentions))
    yield path


def test_hits_carry_their_similarity_not_a_snippet(db: Path) -> None:
    with Store.open(db) as store:
        page = run_query(store, MentionQuery(semantic="my phone's battery drains quickly", limit=2))
    first, second = page.items
    assert first.mention.text == TEXTS[0]
    assert first.snippet is None and isinstance(first.similarity, float)
    assert 0 < second.similarity < first.similarity <= 1  # type: ignore[operator]


@pytest.mark.parametrize("fmt", [ExportFormat.json, ExportFormat.csv])
def test_exports_have_a_similarity_field(db: Path, fmt: ExportFormat) -> None:
    out = io.StringIO()
    with Store.open(db) as store:
        assert export_mentions(store, MentionQuery(semantic="battery", limit=3), fmt, None, stdout=out) == 3
    rows = json.loads(out.getvalue()) if fmt is ExportFormat.json else list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["text"] == TEXTS[0] and float(rows[0]["similarity"]) > float(rows[1]["similarity"]) > 0
    assert all("snippet" not in r for r in rows)


def test_plain_exports_keep_their_columns(db: Path) -> None:
    out = io.StringIO()
    with Store.open(db) as store:
        export_mentions(store, MentionQuery(limit=10), ExportFormat.csv, None, stdout=out)
    assert "similarity" not in out.getvalue().splitlines()[0]


def test_cli_table_shows_the_text_with_its_similarity(db: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as done:
        main(["--db", str(db), "search", "--semantic", "battery drains fast", "--limit", "2"])
    out = capsys.readouterr().out
    assert not done.value.code
    assert "Battery dies in an hour since the update" in out and "similarity" not in out
    assert "(0." in out  # the score before the text


def test_api_returns_similarity_as_a_number(db: Path) -> None:
    with Store.open(db) as store:
        client = TestClient(create_app(store, Config(path=None)))
        body = client.get("/api/mentions", params={"semantic": "export to pdf", "limit": 2}).json()
        assert body["items"][0]["text"] == TEXTS[2] and isinstance(body["items"][0]["similarity"], float)
        lines = client.get("/api/mentions", params={"semantic": "export to pdf", "limit": 2, "format": "csv"}).text
        assert lines.splitlines()[0].endswith(",similarity")
