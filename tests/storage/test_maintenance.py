"""check(), index repair and purge."""

from __future__ import annotations

from datetime import timedelta

import pytest

from enrich.base import Enrichment
from storage import Store
from tests.storage.conftest import T0, make_mention


def test_check_healthy(store: Store) -> None:
    store.save_batch("hn", [make_mention(i, matched=("acme",)) for i in range(3)], None)
    assert store.check() == []


def test_check_reports_fts_out_of_sync_and_rebuild_repairs(sqlite_store: Store) -> None:
    sqlite_store.save_batch("hn", [make_mention(1), make_mention(2, text="invisible words")], None)
    with sqlite_store.engine.begin() as conn:  # the index loses a row
        conn.exec_driver_sql(
            "INSERT INTO mention_fts (mention_fts, rowid, title, text, author)"
            " SELECT 'delete', seq, title, text, author FROM mention WHERE native_id = 'item-2'"
        )
    problems = sqlite_store.check()
    assert any("full-text index has 1 rows but there are 2 mentions" in p for p in problems)
    assert sqlite_store.count("invisible") == 0
    sqlite_store.rebuild_search_index()
    assert sqlite_store.check() == []
    assert sqlite_store.count("invisible") == 1


def test_other_writers_still_get_the_insert_trigger(sqlite_store: Store) -> None:
    sqlite_store.save_batch("hn", [make_mention(1)], None)  # bulk path leaves the trigger armed
    with sqlite_store.engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT active FROM fts_bulk").scalar_one() == 0
        conn.exec_driver_sql(
            "INSERT INTO mention (id, source, kind, native_id, text, created_at, fetched_at, updated_at,"
            " matched, extra, content_hash, deleted) VALUES ('x1', 'hn', 'rss', 'n1', 'handwritten row',"
            " '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000',"
            " '[]', '{}', '-', 0)"
        )
    assert sqlite_store.count("handwritten") == 1
    assert sqlite_store.check() == []


def test_check_reports_fts_content_mismatch(sqlite_store: Store) -> None:
    sqlite_store.save_batch("hn", [make_mention(1, text="original")], None)
    with sqlite_store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER mention_fts_au")
        conn.exec_driver_sql("UPDATE mention SET text = 'changed behind the index'")
    assert any("does not match" in p for p in sqlite_store.check())


def test_check_reports_orphans_and_watch_drift(store: Store) -> None:
    m = make_mention(1, matched=("acme",))
    store.save_batch("hn", [m], None)
    store.save_enrichments([Enrichment(m.id, "s", "v", {})])
    ghost = "INSERT INTO enrichment VALUES ('ghost', 's', 'v', '{}', '2026-01-01 00:00:00.000000')"
    if store.dialect == "sqlite":  # a writer with foreign keys off (the sqlite3 shell's default)
        raw = store.engine.raw_connection()
        try:
            raw.driver_connection.executescript(  # type: ignore[union-attr]
                f"PRAGMA foreign_keys = OFF; {ghost}; DELETE FROM mention_watch; PRAGMA foreign_keys = ON;"
            )
        finally:
            raw.close()
    else:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("SET session_replication_role = replica")  # skips FK triggers
            conn.exec_driver_sql(ghost)
            conn.exec_driver_sql("DELETE FROM mention_watch")
            conn.exec_driver_sql("SET session_replication_role = DEFAULT")
    problems = store.check()
    assert any("1 enrichment rows belong to no mention" in p for p in problems)
    assert any("1 mentions have a watch index out of sync" in p for p in problems)


def test_purge_requires_a_filter(store: Store) -> None:
    with pytest.raises(ValueError, match="at least one"):
        store.purge()


def test_purge_by_author_source_and_date(store: Store) -> None:
    hn = [make_mention(i, author="alice" if i % 2 else "bob", matched=("acme",)) for i in range(6)]
    store.save_batch("hn", hn, None)
    store.save_batch("reddit", [make_mention(9, source="reddit", author="alice")], None)
    store.save_enrichments([Enrichment(m.id, "s", "v", {}) for m in hn])

    assert store.purge(author="alice", source="hn") == 3
    assert store.count(authors=["alice"]) == 1  # reddit's alice untouched (filters AND together)
    assert store.enrichments_for([m.id for m in hn if m.author == "alice"]) == {}
    assert store.count("message") == 4  # FTS follows via the delete trigger / generated column

    assert store.purge(before=T0 + timedelta(minutes=3)) == 2  # bob's 0 and 2
    assert store.purge(source="reddit") == 1
    assert store.purge(source="nobody") == 0
    assert [m.native_id for m in store.mentions_between(T0, T0 + timedelta(days=1))] == ["item-4"]
    totals = {s.source: s.total_mentions for s in store.source_states()}
    assert totals == {"hn": 1, "reddit": 0}
    assert store.check() == []
