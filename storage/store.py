"""`Store`: the project's only door to the database (SQLite file or PostgreSQL URL).

Every method is one short transaction and every failure is a `StorageError`, so callers never
see SQLAlchemy. Ingestion is the hot path (see storage.ingest); queries live in storage.search.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from enrich.base import Enrichment
from listener.errors import StorageError
from listener.types import Cursor, Mention, as_utc, utcnow
from storage import alerts, backfill, db, enrichments, host_slots, ingest, maintenance, stats
from storage import runs as run_log
from storage import search as queries
from storage.alerts import AlertRecord
from storage.models import mention, source_state
from storage.records import RunInfo, SaveResult, SearchPage, SourceState, StoredMention, to_mention

RUN_STATUSES = ("ok", "failed", "partial")


def _pairs(labels: Mapping[str, str | None] | None) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in (labels or {}).items() if value)


class Store:
    """Mentions, cursors, run history and enrichments. Open with `Store.open(target)`."""

    def __init__(self, engine: Engine, url: URL) -> None:
        self._engine = engine
        self._url = url
        self._closed = False
        self.url: str = url.render_as_string(hide_password=False)

    @classmethod
    def open(cls, target: str | Path, *, upgrade: bool = True) -> Store:
        """Open (and by default migrate) a database; a bad path or newer schema is a StorageError."""
        url = db.resolve_url(target)
        if url.get_backend_name() == "sqlite":
            db.check_sqlite_path(url)
        with db.translate_errors("open database", db.mask(url)):
            engine = db.create_engine(url)
        store = cls(engine, url)
        try:
            with store._tx("open database") as conn:
                db.ensure_not_newer(db.current_revision(conn))
            if upgrade:
                store.upgrade()
        except BaseException:
            engine.dispose()
            raise
        return store

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def display_url(self) -> str:
        """The URL with any password masked: safe for logs and error messages."""
        return db.mask(self._url)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def engine(self) -> Engine:
        """For maintenance tools and tests; application code should stay on the Store API."""
        return self._engine

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    @contextlib.contextmanager
    def _tx(self, what: str, *, write: bool = False) -> Iterator[Connection]:
        """One transaction; writers take the SQLite write lock up front (BEGIN IMMEDIATE)."""
        if self._closed:
            raise StorageError(f"{what} failed: store {self.display_url} is closed")
        with db.translate_errors(what, self.display_url), self._engine.connect() as conn:
            if write and self.dialect == "sqlite":
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def schema_revision(self) -> str | None:
        with self._tx("read schema revision") as conn:
            return db.current_revision(conn)

    def upgrade(self) -> None:
        with db.translate_errors("upgrade database schema", self.display_url):
            db.upgrade(self._engine)

    def check(self) -> list[str]:
        """Integrity problems, one line each ([] = healthy)."""
        problems = []
        revision, head = self.schema_revision(), db.head_revision()
        if revision != head:
            problems.append(f"schema revision is {revision or 'empty'}, expected {head} (run upgrade)")
            return problems
        with self._tx("check database", write=True) as conn:
            problems += maintenance.check(conn)
        return problems

    def rebuild_search_index(self) -> None:
        """Repair for a full-text index `check()` reports as out of sync."""
        with self._tx("rebuild search index", write=True) as conn:
            maintenance.rebuild_search_index(conn)

    # --- ingestion ---------------------------------------------------------------------------------

    def save_batch(
        self, source: str, mentions: Sequence[Mention], cursor: Cursor | None, *, run_id: int | None = None
    ) -> SaveResult:
        """Upsert mentions and move the cursor in ONE transaction: a crash never skips unsaved items.

        New ids are inserted, unchanged ones only merge their watch list, edited ones (content
        hash differs) are rewritten and counted as updated. Saving the same batch twice is a no-op.
        """
        with self._tx(f"save batch for source {source!r}", write=True) as conn:
            return ingest.save_batch(conn, source, mentions, cursor, utcnow(), run_id)

    def get_cursor(self, source: str) -> Cursor:
        with self._tx(f"read cursor of source {source!r}") as conn:
            text = conn.execute(sa.select(source_state.c.cursor).where(source_state.c.source == source)).scalar()
        try:
            return Cursor.from_json(text)
        except (ValueError, TypeError) as e:
            raise StorageError(f"stored cursor of source {source!r} is unreadable ({e}); reset the source") from None

    def reset_source(self, source: str) -> None:
        """Forget cursor and health so the next run starts afresh; mentions and run history stay."""
        with self._tx(f"reset source {source!r}", write=True) as conn:
            total = conn.execute(sa.select(sa.func.count()).where(mention.c.source == source)).scalar_one()
            cleared: dict[str, Any] = {
                "cursor": None,
                "last_run_at": None,
                "last_success_at": None,
                "last_error": None,
                "last_error_at": None,
                "consecutive_failures": 0,
                "notes": [],
                "total_mentions": total,
            }
            ingest.ensure_source(conn, source, cleared, cleared)

    def host_slots(self) -> host_slots.HostSlots:
        """Each host's request slots in this database, for `HttpClient(slots=...)`: every process using
        the database then keeps one rate (and one Retry-After) per host together."""
        return host_slots.HostSlots(lambda what: self._tx(what, write=True))

    # --- runs and health ---------------------------------------------------------------------------

    def start_run(self, source: str) -> int:
        with self._tx(f"start run of source {source!r}", write=True) as conn:
            return run_log.start(conn, source, utcnow())

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        new: int,
        duplicates: int,
        updated: int = 0,
        error: str | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        """Close a run and fold it into the source's health (see `storage.runs.finish`)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, not {status!r}")
        with self._tx(f"finish run {run_id}", write=True) as conn:
            run_log.finish(conn, run_id, utcnow(), status=status, new=new, duplicates=duplicates, updated=updated,
                        error=error, notes=notes)

    def source_states(self) -> list[SourceState]:
        with self._tx("read source states") as conn:
            return run_log.source_states(conn)

    def runs(self, source: str | None = None, limit: int = 20) -> list[RunInfo]:
        """Newest first."""
        with self._tx("read run history") as conn:
            return run_log.history(conn, source, limit)

    # --- queries -----------------------------------------------------------------------------------

    def search(
        self,
        query: str | None = None,
        *,
        sources: Sequence[str] = (),
        kinds: Sequence[str] = (),
        watches: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        authors: Sequence[str] = (),
        limit: int = 50,
        after: str | None = None,
        sort: str = "newest",
        include_deleted: bool = False,
        labels: Mapping[str, str | None] | None = None,
        canonical_only: bool = False,
        min_score: float | None = None,
    ) -> SearchPage:
        """Watch-query language search (`acme OR "acme cloud" -hiring`), filters, keyset pages.

        sort: "newest" | "relevance" (needs a query, else newest) | "engagement" (score).
        labels: {"topic"|"intent"|"stage"|"lang"|"sentiment": value} on the newest enrichments (None = any).
        Pass `page.next_after` as `after` for the next page; a bad token is ValueError.
        """
        filters = queries.Filters(
            sources, kinds, watches, since, until, authors, include_deleted, _pairs(labels), canonical_only, min_score
        )
        with self._tx("search mentions") as conn:
            return queries.search(conn, query, filters, limit=limit, after=after, sort=sort)

    def count(
        self,
        query: str | None = None,
        *,
        sources: Sequence[str] = (),
        kinds: Sequence[str] = (),
        watches: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        authors: Sequence[str] = (),
        include_deleted: bool = False,
        labels: Mapping[str, str | None] | None = None,
        canonical_only: bool = False,
        min_score: float | None = None,
    ) -> int:
        filters = queries.Filters(
            sources, kinds, watches, since, until, authors, include_deleted, _pairs(labels), canonical_only, min_score
        )
        with self._tx("count mentions") as conn:
            return queries.count(conn, query, filters)

    def volume(
        self,
        since: datetime,
        until: datetime,
        *,
        bucket: str = "day",
        group_by: str = "none",
        sources: Sequence[str] = (),
        watches: Sequence[str] = (),
    ) -> tuple[int, dict[str, dict[str, int]]]:
        """(mentions created in [since, until), group → bucket start ISO → count) for charts and /api/stats.

        bucket: hour | day | week (UTC, weeks start on Monday); group_by: none | source | kind | watch |
        topic | intent | stage | lang | sentiment (newest enrichment; "unknown" when there is none).
        """
        filters = queries.Filters(sources=sources, watches=watches, since=since, until=until)
        with self._tx("count mentions over time") as conn:
            return stats.volume(conn, as_utc(since), as_utc(until), bucket, group_by, filters)

    def thread(self, source: str, thread_id: str, *, limit: int = 50) -> list[StoredMention]:
        """Live mentions of one thread in one source, oldest first."""
        with self._tx("read thread") as conn:
            return queries.thread(conn, source, thread_id, limit)

    def get_mention(self, mention_id: str) -> Mention | None:
        with self._tx("read mention") as conn:
            row = conn.execute(sa.select(mention).where(mention.c.id == mention_id)).mappings().first()
            return to_mention(row) if row is not None else None

    def mentions_between(
        self, since: datetime, until: datetime, *, watches: Sequence[str] = (), limit: int | None = None
    ) -> list[Mention]:
        """Mentions created in [since, until), oldest first (digest input)."""
        with self._tx("read mentions") as conn:
            return queries.mentions_between(conn, since, until, watches, limit)

    # --- enrichment --------------------------------------------------------------------------------

    def iter_unenriched(
        self, stage: str, model_version: str, *, batch_size: int = 256, seq_range: tuple[int, int] | None = None
    ) -> Iterator[list[Mention]]:
        """Batches of mentions lacking (stage, model_version), in seq order; `seq_range` = [start, end) only.

        Each batch is its own short read, so the caller may save results between batches; a new
        iteration naturally resumes because finished mentions now have rows.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        position = 0 if seq_range is None else seq_range[0] - 1
        while True:
            with self._tx(f"read mentions to enrich ({stage})") as conn:
                if seq_range is None:
                    batch, position = enrichments.unenriched_batch(conn, stage, model_version, position, batch_size)
                else:
                    batch, position = backfill.unenriched_in_window(
                        conn, stage, model_version, position, seq_range[1], batch_size
                    )
            if not batch:
                return
            yield batch
            if len(batch) < batch_size:
                return

    def count_unenriched(self, stage: str, model_version: str) -> int:
        return self.count_unenriched_any([(stage, model_version)])

    def count_unenriched_any(self, stages: Sequence[tuple[str, str]]) -> int:
        """Mentions lacking any of these (stage, version) pairs: what `enrich_pending` will go through, once each."""
        with self._tx("count unenriched mentions") as conn:
            return enrichments.count_unenriched_any(conn, stages)

    def pending_enrichment_windows(
        self, stages: Sequence[tuple[str, str]], *, size: int, limit: int, from_seq: int = 0
    ) -> tuple[list[int], int]:
        """Start seqs of `[start, start + size)` windows with work left for any (stage, version) among
        seq >= from_seq, and the highest seq stored."""
        with self._tx("find mentions to enrich") as conn:
            return backfill.pending_windows(conn, stages, size, limit, from_seq)

    def save_enrichments(self, items: Sequence[Enrichment]) -> int:
        """Upsert in one transaction; returns rows written (results for purged mentions are dropped)."""
        if not items:
            return 0
        with self._tx("save enrichments", write=True) as conn:
            return enrichments.save(conn, items, utcnow())

    def enriched_ids(self, mention_ids: Sequence[str], stage: str, model_version: str) -> set[str]:
        """The subset of `mention_ids` that already has this stage at this model version."""
        with self._tx("check enrichments") as conn:
            return enrichments.enriched_ids(conn, mention_ids, stage, model_version)

    def enrichments_for(
        self, mention_ids: Sequence[str], stage: str | None = None, model_version: str | None = None
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """mention_id → stage → data (newest model version unless `model_version` is given)."""
        with self._tx("read enrichments") as conn:
            return enrichments.results_for(conn, mention_ids, stage, model_version)

    # --- data rights -------------------------------------------------------------------------------

    def purge(self, *, source: str | None = None, author: str | None = None, before: datetime | None = None) -> int:
        """Delete mentions (AND of the filters given) with their enrichments; returns the count."""
        with self._tx("purge mentions", write=True) as conn:
            return maintenance.purge(conn, source=source, author=author, before=before)

    # --- alerts ------------------------------------------------------------------------------------

    def claim_alert(self, record: AlertRecord, cooldown: timedelta,
                    same_incident: Callable[[AlertRecord], bool] | None = None) -> AlertRecord | None:
        """Record an alert unless its incident alerted within `cooldown`: returns that earlier alert, else None.

        The incident is `record.key`, or any recent alert of its kind `same_incident` accepts. Check and
        insert are one transaction serialised per key (per kind with a predicate), so concurrent
        checkers announce an incident once.
        """
        with self._tx("record alert", write=True) as conn:
            return alerts.claim(conn, record, cooldown, same_incident)

    def update_alert(self, alert_id: str, data: dict[str, Any]) -> bool:
        """Replace a stored alert's data (e.g. with its delivery results); False if it no longer exists."""
        with self._tx("update alert", write=True) as conn:
            return alerts.update_data(conn, alert_id, data)

    def alerts_since(self, since: datetime, *, kind: str | None = None, limit: int = 500) -> list[AlertRecord]:
        """Alerts at or after `since`, newest first."""
        with self._tx("read alerts") as conn:
            return alerts.since(conn, since, kind, limit)

    def import_alerts(self, records: Sequence[AlertRecord]) -> int:
        """Add alerts from an older history (ids already stored are skipped); returns how many were added."""
        with self._tx("import alerts", write=True) as conn:
            return alerts.import_records(conn, records)
