"""save_batch, cursors, runs and source health, on every backend."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import storage.ingest
from listener.errors import StorageError
from listener.types import Cursor
from storage import Store
from tests.storage.conftest import T0, make_mention


def test_mention_round_trips_exactly(store: Store) -> None:
    full = make_mention(
        1,
        created_at=datetime(2026, 3, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2))),
        thread_id="t1",
        parent_id="p1",
        score=12.5,
        comments=3,
        rating=4.0,
        language="de",
        matched=("acme", "globex"),
        extra={"tags": ["a", "b"], "nested": {"x": 1, "ü": None}, "n": 1.5},
        raw='{"id": 1, "body": "ünïcode"}',
        title="Grüße — “quotes” 日本",
    )
    bare = make_mention(2, url=None, title=None, author=None)
    store.save_batch("hn", [full, bare], None)
    for original in (full, bare):
        loaded = store.get_mention(original.id)
        assert loaded == original
        assert loaded is not None and loaded.created_at.tzinfo == UTC and loaded.fetched_at.tzinfo == UTC
    assert store.get_mention("missing") is None


def test_same_batch_twice_is_idempotent(store: Store) -> None:
    batch = [make_mention(i) for i in range(5)]
    first = store.save_batch("hn", batch, Cursor(last_id="4"))
    assert (first.new, first.duplicates, first.updated) == (5, 0, 0)
    assert first.new_ids == [m.id for m in batch]
    second = store.save_batch("hn", batch, Cursor(last_id="4"))
    assert (second.new, second.duplicates, second.updated, second.new_ids) == (0, 5, 0, [])
    assert store.count() == 5
    assert store.source_states()[0].total_mentions == 5


def test_edit_counts_as_updated_and_search_follows(store: Store) -> None:
    original = make_mention(1, text="the old wording", score=1.0)
    store.save_batch("hn", [original], None)
    edited = replace(original, text="completely rewritten", score=7.0, fetched_at=T0 + timedelta(days=1))
    result = store.save_batch("hn", [edited], None)
    assert (result.new, result.duplicates, result.updated) == (0, 0, 1)
    assert store.get_mention(original.id) == edited
    assert store.count("wording") == 0
    assert store.count("rewritten") == 1
    assert store.check() == []


def test_refetch_only_changes_fetched_at_and_raw_is_duplicate(store: Store) -> None:
    m = make_mention(1, raw="{}", extra={"a": 1, "b": 2})
    store.save_batch("hn", [m], None)
    again = replace(m, fetched_at=T0 + timedelta(days=3), raw='{"v": 2}', extra={"b": 2, "a": 1})
    assert store.save_batch("hn", [again], None).duplicates == 1
    assert store.get_mention(m.id) == m  # untouched


def test_matched_is_merged_and_watch_index_kept_in_sync(store: Store) -> None:
    m = make_mention(1, matched=("acme",))
    store.save_batch("hn", [m], None)
    result = store.save_batch("hn", [m.with_matches(("globex", "acme"))], None)
    assert result.duplicates == 1
    loaded = store.get_mention(m.id)
    assert loaded is not None and loaded.matched == ("acme", "globex")
    assert store.count(watches=["globex"]) == 1
    # an edit keeps earlier watches too
    store.save_batch("hn", [replace(m, text="edited", matched=("initech",))], None)
    loaded = store.get_mention(m.id)
    assert loaded is not None and loaded.matched == ("acme", "globex", "initech")
    assert store.count(watches=["acme"]) == store.count(watches=["initech"]) == 1
    assert store.check() == []


def test_duplicates_within_one_batch(store: Store) -> None:
    a = make_mention(1, matched=("acme",))
    b = make_mention(1, matched=("globex",), text="newer copy")
    result = store.save_batch("hn", [a, b], None)
    assert (result.new, result.duplicates) == (1, 1)
    loaded = store.get_mention(a.id)
    assert loaded is not None and loaded.text == "newer copy" and loaded.matched == ("acme", "globex")


def test_mention_from_another_source_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="belongs to source 'other'"):
        store.save_batch("hn", [make_mention(1, source="other")], None)


def test_deletion_reported_by_source_hides_mention(store: Store) -> None:
    m = make_mention(1)
    store.save_batch("hn", [m], None)
    gone = replace(m, extra={"deleted": True})
    assert store.save_batch("hn", [gone], None).updated == 1
    assert store.count() == 0
    assert store.count(include_deleted=True) == 1
    assert store.get_mention(m.id) == gone


def test_cursor_round_trip_and_none_keeps_previous(store: Store) -> None:
    assert store.get_cursor("hn") == Cursor()
    cursor = Cursor(last_time=T0, last_id="9", etag='W/"x"', last_modified="Sun", extra={"r/acme": "t3_1"})
    store.save_batch("hn", [], cursor)
    assert store.get_cursor("hn") == cursor
    store.save_batch("hn", [make_mention(1)], None)
    assert store.get_cursor("hn") == cursor


def test_failure_mid_transaction_stores_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.save_batch("hn", [make_mention(0)], Cursor(last_id="0"))

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    # The cursor write comes after the mention inserts: failing there must roll the inserts back.
    monkeypatch.setattr(storage.ingest, "ensure_source", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.save_batch("hn", [make_mention(i) for i in range(1, 4)], Cursor(last_id="3"))
    monkeypatch.undo()
    assert store.count() == 1
    assert store.get_cursor("hn") == Cursor(last_id="0")


def test_constraint_violation_rolls_back_batch_and_cursor(store: Store) -> None:
    bad = make_mention(2, text=None)  # NOT NULL violation, after a valid row in the same batch
    with pytest.raises(StorageError, match="save batch for source 'hn' failed"):
        store.save_batch("hn", [make_mention(1), bad], Cursor(last_id="2"))
    assert store.count() == 0
    assert store.get_cursor("hn") == Cursor()
    assert store.check() == []


def test_runs_and_health(store: Store) -> None:
    run_id = store.start_run("hn")
    assert store.runs()[0].status == "running"
    store.save_batch("hn", [make_mention(1)], None, run_id=run_id)
    assert store.runs("hn")[0].new == 1  # counted as batches land, before the run finishes
    store.finish_run(run_id, status="ok", new=1, duplicates=0, notes=["backlog capped"])
    (state,) = store.source_states()
    assert state.consecutive_failures == 0 and state.last_success_at is not None
    assert state.notes == ("backlog capped",)
    assert state.last_run is not None and state.last_run.id == run_id and state.last_run.duration_s is not None

    for _ in range(2):
        failed = store.start_run("hn")
        store.finish_run(failed, status="failed", new=0, duplicates=0, error="HTTP 503")
    (state,) = store.source_states()
    assert state.consecutive_failures == 2 and state.last_error == "HTTP 503"
    assert state.last_run is not None and state.last_run.status == "failed"
    assert [r.status for r in store.runs("hn")] == ["failed", "failed", "ok"]
    assert store.runs("other") == [] and len(store.runs(limit=1)) == 1

    partial = store.start_run("hn")
    store.finish_run(partial, status="partial", new=3, duplicates=1, error="rate-limited")
    (state,) = store.source_states()
    assert state.consecutive_failures == 0 and state.last_error == "rate-limited"


def test_finish_run_validation(store: Store) -> None:
    with pytest.raises(ValueError, match="status"):
        store.finish_run(1, status="done", new=0, duplicates=0)
    with pytest.raises(StorageError, match="run 999 does not exist"):
        store.finish_run(999, status="ok", new=0, duplicates=0)


def test_reset_source_keeps_mentions(store: Store) -> None:
    store.save_batch("hn", [make_mention(1), make_mention(2)], Cursor(last_id="2"))
    run_id = store.start_run("hn")
    store.finish_run(run_id, status="failed", new=0, duplicates=0, error="x", notes=["degraded: no credentials"])
    store.reset_source("hn")
    (state,) = store.source_states()
    assert state.cursor == Cursor() and state.consecutive_failures == 0 and state.notes == ()
    assert state.last_error is None and state.last_run_at is None and state.total_mentions == 2
    assert store.count() == 2
    store.reset_source("never-seen")  # creates a clean state instead of failing
    assert {s.source for s in store.source_states()} == {"hn", "never-seen"}


def test_concurrent_writers_on_one_sqlite_file(tmp_path: Path) -> None:
    """Two processes' worth of stores: BEGIN IMMEDIATE + busy_timeout serialise them, nobody fails."""
    path = tmp_path / "listener.db"
    Store.open(path).close()
    errors: list[BaseException] = []

    def writer(source: str) -> None:
        try:
            with Store.open(path) as s:
                for b in range(10):
                    batch = [make_mention(b * 20 + i, source=source) for i in range(20)]
                    s.save_batch(source, batch, Cursor(last_id=str(b)))
                    s.search("message", sources=[source], limit=5)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("hn", "reddit")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store.open(path) as s:
        assert s.count(sources=["hn"]) == s.count(sources=["reddit"]) == 200
        assert s.get_cursor("reddit") == Cursor(last_id="9")
        assert s.check() == []


def test_nul_characters_do_not_fail_the_batch(store: Store) -> None:
    m = make_mention(1, text="bad\x00byte", title="t\x00", extra={"k": "v\x00"})
    assert store.save_batch("hn", [m, make_mention(2)], None).new == 2
    loaded = store.get_mention(m.id)
    assert loaded is not None and loaded.text == "bad\ufffdbyte" and loaded.extra == {"k": "v\ufffd"}
    assert store.count("bad") == 1


def test_batch_wide_values_are_converted_once_and_equal_ones_each() -> None:
    calls: list[object] = []

    def process(value: object) -> str:
        calls.append(value)
        return repr(value)

    clock = datetime(2026, 3, 1, tzinfo=UTC)
    assert storage.ingest._converted(process, [clock] * 4) == [repr(clock)] * 4 and calls == [clock]
    calls.clear()
    equal = [1, 1.0, True, 1]  # equal, yet not the same value
    assert storage.ingest._converted(process, equal) == ["1", "1.0", "True", "1"]
    assert len(calls) == 4
