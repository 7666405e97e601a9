"""One mention query for every read surface (CLI search, export, REST API, web UI).

Every filter runs in storage (FTS5/tsvector, keyset pages; enrichment labels such as topic, intent,
journey stage, language, sentiment and canonical-only through the indexed `mention_label` rows), and
`semantic` ranks by embedding similarity instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from listener.types import Mention
from storage import SearchPage, Store, StoredMention, stats

LABEL_FILTERS = ("topic", "intent", "stage", "lang", "sentiment")
MAX_SCANNED_PAGES = 50


@dataclass(frozen=True)
class MentionQuery:
    text: str | None = None
    sources: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    watches: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    sort: str = "newest"
    limit: int = 50
    after: str | None = None
    topic: str | None = None
    intent: str | None = None
    stage: str | None = None
    lang: str | None = None
    sentiment: str | None = None
    canonical_only: bool = False
    semantic: str | None = None
    min_score: float | None = None

    @property
    def label_filters(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in LABEL_FILTERS}

    @property
    def filters_on_labels(self) -> bool:
        return self.canonical_only or any(self.label_filters.values())

    def describe(self) -> str:
        parts = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) not in (None, (), False)
        ]
        return ", ".join(parts)


def _storage_page(store: Store, q: MentionQuery, after: str | None, limit: int) -> SearchPage:
    return store.search(
        q.text,
        sources=q.sources,
        kinds=q.kinds,
        watches=q.watches,
        since=q.since,
        until=q.until,
        limit=limit,
        after=after,
        sort=q.sort,
        labels=q.label_filters,
        canonical_only=q.canonical_only,
        min_score=q.min_score,
    )


def run_query(store: Store, q: MentionQuery) -> SearchPage:
    """Raises ValueError (bad query syntax, bad page token) for the caller to report as a usage error."""
    if q.semantic:
        return _semantic(store, q)
    return _storage_page(store, q, q.after, q.limit)


def _semantic(store: Store, q: MentionQuery) -> SearchPage:
    """Nearest mentions by embedding among those the other filters allow (first page only)."""
    from enrich.stages import semantic_search

    assert q.semantic is not None
    candidates: list[str] | None = None
    narrowed = q.text or q.sources or q.kinds or q.watches or q.since or q.until or q.min_score is not None
    if narrowed or q.filters_on_labels:
        candidates = []
        after = None
        for _ in range(MAX_SCANNED_PAGES):
            page = _storage_page(store, q, after, 1000)
            candidates += [i.id for i in page.items]
            after = page.next_after
            if after is None:
                break
    items = []
    for rank, (mid, score) in enumerate(semantic_search(store, q.semantic, k=q.limit, ids=candidates), start=1):
        mention = store.get_mention(mid)
        if mention is not None:
            items.append(StoredMention(mention=mention, id=mid, seq=rank, similarity=round(float(score), 4)))
    return SearchPage(items, None)


BUCKETS = stats.BUCKETS
GROUPS = stats.GROUPS
MAX_HOURLY_SPAN = timedelta(days=800)
bucket_start = stats.bucket_start


def volume(
    store: Store,
    start: datetime,
    end: datetime,
    bucket: str,
    group_by: str,
    sources: Sequence[str] = (),
    watches: Sequence[str] = (),
) -> tuple[int, dict[str, dict[str, int]]]:
    """(total, group → bucket start ISO → count) of mentions created in [start, end) (see `Store.volume`).

    Raises ValueError for an unknown bucket/group or when the buckets would be too many (hourly over
    more than 800 days).
    """
    if bucket not in BUCKETS or group_by not in GROUPS:
        raise ValueError(f"bucket must be one of {BUCKETS} and group_by one of {GROUPS}")
    if bucket == "hour" and end - start > MAX_HOURLY_SPAN:
        raise ValueError("hourly buckets over more than 800 days are too many; use day or week")
    return store.volume(start, end, bucket=bucket, group_by=group_by, sources=sources, watches=watches)


def thread_of(store: Store, m: Mention, limit: int = 50) -> list[StoredMention]:
    """The other mentions of the same source and thread, oldest first."""
    if not m.thread_id:
        return []
    return [i for i in store.thread(m.source, m.thread_id, limit=limit + 1) if i.id != m.id][:limit]
