"""One mention query for every read surface (CLI search, export, REST API, web UI).

Text, source, watch and time filters run in storage (FTS5/tsvector, keyset pages). Filters on
enrichment labels (topic, intent, journey stage, language, sentiment, canonical-only) post-filter
pages from storage until the page is full, and `semantic` ranks by embedding similarity instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from listener.types import Mention
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


BUCKETS = ("hour", "day", "week")
GROUPS = ("none", "source", "kind", "watch", "sentiment")
MAX_HOURLY_SPAN = timedelta(days=800)


def bucket_start(when: datetime, bucket: str) -> datetime:
    when = when.astimezone(UTC)
    if bucket == "hour":
        return when.replace(minute=0, second=0, microsecond=0)
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if bucket == "week" else day


def volume(
    store: Store,
    start: datetime,
    end: datetime,
    bucket: str,
    group_by: str,
    sources: Sequence[str] = (),
    watches: Sequence[str] = (),
) -> tuple[int, dict[str, dict[str, int]]]:
    """(total, group → bucket start ISO → count) of mentions created in [start, end).

    Ungrouped or by source, the counts come from `Store.count` per bucket and group (indexed COUNTs, no
    rows leave the database); by kind, watch or sentiment, mentions are read and counted here. (A
    GROUP BY in storage would serve all five in one query: see docs/search_benchmark.md.)
    Raises ValueError when the buckets would be too many (hourly over more than 800 days).
    """
    if bucket not in BUCKETS or group_by not in GROUPS:
        raise ValueError(f"bucket must be one of {BUCKETS} and group_by one of {GROUPS}")
    if bucket == "hour" and end - start > MAX_HOURLY_SPAN:
        raise ValueError("hourly buckets over more than 800 days are too many; use day or week")
    if group_by in ("none", "source"):
        counted = _volume_by_counts(store, start, end, bucket, group_by, sources, watches)
        if counted is not None:
            return counted
    mentions = [m for m in store.mentions_between(start, end, watches=watches) if not sources or m.source in sources]
    labels: dict[str, str | None] = {}
    if group_by == "sentiment" and mentions:
        found = store.enrichments_for([m.id for m in mentions], stage="sentiment")
        labels = {k: (v.get("sentiment") or {}).get("label") for k, v in found.items()}
    counts: Counter[tuple[str, str]] = Counter()
    for m in mentions:
        key = bucket_start(m.created_at, bucket).isoformat()
        for group in _groups(m, group_by, labels):
            counts[(key, group)] += 1
    series: dict[str, dict[str, int]] = {}
    for (key, group), n in sorted(counts.items()):
        series.setdefault(group, {})[key] = n
    return len(mentions), series


STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}
MAX_COUNTS = 1000
"""Beyond this many COUNT queries (buckets × groups), reading the rows once is cheaper."""


def _volume_by_counts(
    store: Store,
    start: datetime,
    end: datetime,
    bucket: str,
    group_by: str,
    sources: Sequence[str],
    watches: Sequence[str],
) -> tuple[int, dict[str, dict[str, int]]] | None:
    """Per-bucket COUNTs, or None when they would be too many."""
    try:
        edges = []
        key = bucket_start(start, bucket)
        while key < end:
            edges.append((key, max(key, start), min(key + STEPS[bucket], end)))
            key += STEPS[bucket]
    except OverflowError:
        return None
    if group_by == "none":
        groups: dict[str, Sequence[str]] = {"all": sources}
    else:  # by source: one group per source that ever stored anything (or per source asked for)
        total = store.count(sources=sources, watches=watches, since=start, until=end)
        names = sources or sorted({s.source for s in store.source_states()})
        sizes = {name: store.count(sources=[name], watches=watches, since=start, until=end) for name in names}
        if sum(sizes.values()) != total:
            return None  # e.g. a source named twice: count from the rows instead
        groups = {name: [name] for name in names if sizes[name]}
    if len(edges) * len(groups) > MAX_COUNTS:
        return None
    series: dict[str, dict[str, int]] = {}
    for group, narrow in groups.items():
        for key, since, until in edges:
            n = store.count(sources=narrow, watches=watches, since=since, until=until)
            if n:
                series.setdefault(group, {})[key.isoformat()] = n
    return sum(sum(counts.values()) for counts in series.values()), series


def _groups(m: Mention, group_by: str, labels: dict[str, str | None]) -> tuple[str, ...]:
    if group_by == "watch":
        return m.matched or ("(none)",)
    if group_by == "source":
        return (m.source,)
    if group_by == "kind":
        return (m.kind,)
    if group_by == "sentiment":
        return (labels.get(m.id) or "unknown",)
    return ("all",)


THREAD_WINDOW = (timedelta(days=1), timedelta(days=7))
THREAD_SCAN = 200
"""Storage has no thread index yet, so replies are looked for among the source's mentions from a day before
to a week after this one, and only the THREAD_SCAN newest of those (see docs/search_benchmark.md)."""


def thread_of(store: Store, m: Mention, limit: int = 50) -> list[StoredMention]:
    """Other mentions of the same source and thread near the mention's time, oldest first (best effort)."""
    if not m.thread_id:
        return []
    before, after = THREAD_WINDOW
    try:
        since, until = m.created_at - before, m.created_at + after
    except OverflowError:  # a date at the end of the calendar
        return []
    page = store.search(None, sources=[m.source], since=since, until=until, limit=THREAD_SCAN)
    same = [i for i in page.items if i.mention.thread_id == m.thread_id and i.id != m.id]
    return sorted(same, key=lambda i: (i.mention.created_at, i.seq))[:limit]
