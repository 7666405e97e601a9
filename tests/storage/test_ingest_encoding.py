"""The fast paths of ingestion produce exactly what the plain ones did.

`one_shot_encoder` reuses the stdlib's C JSON encoder: its text must equal `JSONEncoder.encode`'s
for any JSON value, because stored content hashes are compared with freshly computed ones (a
changed text would turn every re-fetched mention into an "edit"). The pinned hashes were computed
by the code before the fast path.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.errors import StorageError
from listener.types import Cursor, Mention
from storage import Store
from storage.models import one_shot_encoder
from storage.records import content_hash
from tests.storage.conftest import make_mention

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, derandomize=True)
@given(JSON_VALUES, st.booleans())
def test_one_shot_encoder_writes_what_json_encoder_writes(value: Any, sort_keys: bool) -> None:
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, default=str)
    assert one_shot_encoder(encoder)(value) == encoder.encode(value)


def test_odd_values_are_stringified_as_before() -> None:
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)
    value = {
        "when": datetime(2026, 1, 1, tzinfo=UTC),
        "zone": UTC,
        "big": 10**30,
        "nul": "a\x00b",
        "nan": [float("nan")],
    }
    assert one_shot_encoder(encoder)(value) == encoder.encode(value)


def test_content_hashes_are_unchanged() -> None:
    """Values computed with the previous implementation (getattr over HASHED_FIELDS, JSONEncoder.encode)."""
    rich = Mention(
        source="s",
        kind="reddit",
        native_id="n1",
        url="https://e.com/ü",
        title='Tïtle "q"',
        text="line\nbreak \u2028 😀",
        author=None,
        created_at=datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
        score=1.5,
        comments=3,
        rating=None,
        language="de",
        extra={"z": [1, 2.25, None, True], "a": {"y": "é", "b": 10**20}, "when": datetime(2026, 1, 1, tzinfo=UTC)},
    )
    plain = Mention(
        source="s", kind="hn", native_id="2", url=None, title=None, text="x", author="a",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert content_hash(rich) == "584567befc946a5857cc6be9da6ec485"
    assert content_hash(plain) == "a174b5b8305f47af299796ffebac5e3a"


def test_a_batch_larger_than_any_bound_parameter_limit_is_deduplicated(store: Store) -> None:
    """The stored-ids lookup sends the ids as one JSON array / one array parameter, whatever their number."""
    batch = [make_mention(n) for n in range(1500)]
    assert store.save_batch("hn", batch, Cursor(last_id="a")).new == 1500
    again = store.save_batch("hn", [*batch, make_mention(1500)], Cursor(last_id="b"))
    assert (again.new, again.duplicates, again.updated) == (1, 1500, 0)
    assert store.count(include_deleted=True) == 1501
    assert store.check() == []


def test_times_in_other_zones_are_stored_as_utc(store: Store) -> None:
    """The UTC fast path of the SQLite datetime conversion leaves other zones to the full conversion."""
    local = datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    store.save_batch("hn", [make_mention(1, created_at=local), make_mention(2)], None)
    stored = store.get_mention(make_mention(1).id)
    assert stored is not None and stored.created_at == local and stored.created_at.tzinfo == UTC
    page = store.search(since=datetime(2026, 3, 1, 12, 29, tzinfo=UTC), until=datetime(2026, 3, 1, 12, 31, tzinfo=UTC))
    assert [item.id for item in page.items] == [make_mention(1).id]


def test_a_large_batch_leaves_the_insert_trigger_as_it_was(sqlite_store: Store) -> None:
    """The bulk path swaps SQLite's per-row FTS trigger out and back in its own transaction."""

    def trigger() -> str | None:
        with sqlite_store.engine.connect() as conn:
            sql = "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'mention_fts_ai'"
            return conn.exec_driver_sql(sql).scalar()

    armed = trigger()
    assert armed is not None
    sqlite_store.save_batch("hn", [make_mention(n) for n in range(100)], None)
    assert trigger() == armed
    failing = [*(make_mention(n) for n in range(100, 200)), make_mention(200, text=None)]  # NOT NULL violation
    with pytest.raises(StorageError):
        sqlite_store.save_batch("hn", failing, None)
    assert trigger() == armed  # rolled back with the batch
    assert sqlite_store.count("message") == 100
    assert sqlite_store.check() == []


def test_readers_on_other_connections_are_not_disturbed_by_the_trigger_swap(sqlite_store: Store) -> None:
    """Searches and counts from another Store (its own connections) while large batches commit schema changes."""
    reader = Store.open(sqlite_store.url)
    errors: list[BaseException] = []
    reads = [0]
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                reader.search("message", limit=5)
                reader.count()
                reads[0] += 1
        except BaseException as exc:  # reported below: any failure of a reader is the test's failure
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for b in range(8):
            sqlite_store.save_batch("hn", [make_mention(b * 100 + n) for n in range(100)], Cursor(last_id=str(b)))
    finally:
        done.set()
        thread.join(30)
        reader.close()
    assert errors == [] and reads[0] > 0
    assert sqlite_store.count("message") == 800
    assert sqlite_store.check() == []
