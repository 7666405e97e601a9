"""One mention query for every read surface (CLI search, export, REST API, web UI).

Text, source, watch and time filters run in storage (FTS5/tsvector, keyset pages). Filters on
enrichment labels (topic, intent, journey stage, language, sentiment, canonical-only) post-filter
pages from storage until the page is full, and `semantic` ranks by embedding similarity instead.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from storage import SearchPage, Store, StoredMention

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
    )


def run_query(store: Store, q: MentionQuery) -> SearchPage:
    """Raises ValueError (bad query syntax, bad page token) for the caller to report as a usage error."""
    if q.semantic:
        return _semantic(store, q)
    if not q.filters_on_labels:
        return _storage_page(store, q, q.after, q.limit)
    from enrich.stages import filter_ids

    kept: list[StoredMention] = []
    after = q.after
    for _ in range(MAX_SCANNED_PAGES):
        page = _storage_page(store, q, after, min(max(q.limit * 4, 200), 1000))
        wanted = set(filter_ids(store, [i.id for i in page.items], canonical_only=q.canonical_only, **q.label_filters))
        for item in page.items:
            if item.id in wanted:
                kept.append(item)
                if len(kept) == q.limit:
                    # Resume right after the last kept item: re-page from storage with it as the cursor.
                    tail = _storage_page(store, q, after, page.items.index(item) + 1)
                    return SearchPage(kept, tail.next_after if page.next_after or item is not page.items[-1] else None)
        after = page.next_after
        if after is None:
            break
    return SearchPage(kept, None)


def _semantic(store: Store, q: MentionQuery) -> SearchPage:
    """Nearest mentions by embedding among those the other filters allow (first page only)."""
    from enrich.stages import filter_ids, semantic_search

    assert q.semantic is not None
    candidates: list[str] | None = None
    if q.text or q.sources or q.kinds or q.watches or q.since or q.until:
        candidates = []
        after = None
        for _ in range(MAX_SCANNED_PAGES):
            page = _storage_page(store, q, after, 1000)
            candidates += [i.id for i in page.items]
            after = page.next_after
            if after is None:
                break
    ranked = semantic_search(store, q.semantic, k=q.limit * 4 if q.filters_on_labels else q.limit, ids=candidates)
    ids = [mid for mid, _ in ranked]
    if q.filters_on_labels:
        allowed = set(filter_ids(store, ids, canonical_only=q.canonical_only, **q.label_filters))
        ids = [i for i in ids if i in allowed]
    items = []
    for rank, (mid, score) in enumerate((r for r in ranked if r[0] in set(ids[: q.limit])), start=1):
        mention = store.get_mention(mid)
        if mention is not None:
            items.append(StoredMention(mention=mention, id=mid, seq=rank, snippet=f"similarity {score:.2f}"))
    return SearchPage(items, None)
