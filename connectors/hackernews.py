"""Hacker News: Algolia's `search_by_date` finds stories and comments per watch phrase; the official
Firebase item API fills in thread context (story title, parent/story ids) when Algolia lacks it.

Algolia pages newest-first, so every phrase is paged to the end (or `max_pages`) before anything is
yielded; then the merged hits go out oldest-first, and a batch boundary never splits one second, so
the strict ``created_at_i > cursor`` filter on the next run loses nothing after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from connectors.base import Connector, describe, from_epoch, iso_time, list_of, str_or_none, time_batches
from connectors.html import html_to_text
from listener.errors import ParseError, SourceError
from listener.types import Batch, Cursor, Mention, cap_raw, utcnow

log = logging.getLogger(__name__)

ALGOLIA_URL = "https://hn.algolia.com/api/v1"
FIREBASE_URL = "https://hacker-news.firebaseio.com/v0"
ITEM_URL = "https://news.ycombinator.com/item?id={}"
BATCH_SIZE = 100


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _str_id(value: Any) -> str | None:
    number = _int(value)
    return str(number) if number is not None else None


def _hit_time(hit: Mapping[str, Any]) -> datetime | None:
    return from_epoch(_int(hit.get("created_at_i"))) or iso_time(hit.get("created_at"))


def parse_algolia_hits(
    payload: Any, *, source: str, kind: str = "hackernews", fetched_at: datetime | None = None
) -> tuple[list[Mention], list[str]]:
    """Algolia search payload → (mentions, notes). Pure. Raises ParseError when `hits` is missing."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("hits"), list):
        raise ParseError(source, f"expected a JSON object with 'hits' from Algolia but got {describe(payload)}")
    now = fetched_at or utcnow()
    mentions: list[Mention] = []
    notes: list[str] = []
    for hit in payload["hits"]:
        mention = _hit_to_mention(hit, source=source, kind=kind, fetched_at=now)
        if mention is None:
            ident = hit.get("objectID") if isinstance(hit, Mapping) else None
            notes.append(f"skipped malformed Algolia hit {ident!r}")
            continue
        mentions.append(mention)
    return mentions, notes


def _hit_to_mention(hit: Any, *, source: str, kind: str, fetched_at: datetime) -> Mention | None:
    if not isinstance(hit, Mapping):
        return None
    native = _str_id(hit.get("objectID"))
    created = _hit_time(hit)
    if native is None or created is None:
        return None
    tags = [t for t in list_of(hit.get("_tags")) if isinstance(t, str)]
    is_comment = "comment" in tags or hit.get("comment_text") is not None
    story_id = _str_id(hit.get("story_id"))
    extra: dict[str, Any] = {"type": "comment" if is_comment else "story"}
    if is_comment:
        title = None
        text = html_to_text(hit.get("comment_text"))
        thread_id = story_id
        parent_id = _str_id(hit.get("parent_id"))
        for key in ("story_title", "story_url"):
            if hit.get(key):
                extra[key] = hit[key]
    else:
        title = html_to_text(hit.get("title")) or None
        text = html_to_text(hit.get("story_text"))
        thread_id, parent_id = native, None
        if hit.get("url"):
            extra["link"] = hit["url"]
    if not title and not text:
        return None
    raw = {k: v for k, v in hit.items() if k != "_highlightResult"}
    return Mention(
        source=source,
        kind=kind,
        native_id=native,
        url=ITEM_URL.format(native),
        title=title,
        text=text,
        author=str_or_none(hit.get("author")),
        created_at=created,
        fetched_at=fetched_at,
        thread_id=thread_id,
        parent_id=parent_id,
        score=float(hit["points"]) if isinstance(hit.get("points"), int | float) else None,
        comments=_int(hit.get("num_comments")),
        extra=extra,
        raw=cap_raw(raw),
    )


def parse_firebase_item(payload: Any, *, source: str, item_id: str) -> dict[str, Any]:
    """Firebase `/item/{id}.json` → the thread facts we need. `null` (deleted/unknown item) → {}."""
    if payload is None:
        return {}
    if not isinstance(payload, Mapping) or "id" not in payload:
        raise ParseError(source, f"expected a Hacker News item object for {item_id} but got {describe(payload)}")
    facts = {
        "id": _str_id(payload.get("id")),
        "type": payload.get("type"),
        "title": html_to_text(payload.get("title")) or None,
        "parent": _str_id(payload.get("parent")),
        "deleted": bool(payload.get("deleted") or payload.get("dead")),
    }
    return {k: v for k, v in facts.items() if v is not None}


class HackerNewsConnector(Connector):
    """Stories and comments from Algolia's `search_by_date`, thread context from the Firebase item API."""

    kind = "hackernews"
    default_rate = 1.0  # Algolia allows 10k requests/hour per IP; Firebase has no documented limit.
    auth = "none"
    params: ClassVar[dict[str, str]] = {
        "queries": "Algolia queries (default: one per watch alternative, words AND-ed, phrases quoted)",
        "hits_per_page": "hits per Algolia page (default 100)",
        "max_pages": "pages per query before the backlog is capped with a note (default 10)",
        "batch_size": "mentions per committed batch (default 100)",
        "context": "fetch story titles from Firebase when Algolia lacks them (default true)",
        "base_url": f"Algolia API address (default {ALGOLIA_URL})",
        "firebase_url": f"Firebase item API address (default {FIREBASE_URL})",
    }

    @property
    def base_url(self) -> str:
        return str(self.source.param("base_url") or ALGOLIA_URL).rstrip("/")

    @property
    def firebase_url(self) -> str:
        return str(self.source.param("firebase_url") or FIREBASE_URL).rstrip("/")

    def hosts(self) -> list[str]:
        return sorted({urlsplit(self.base_url).netloc, urlsplit(self.firebase_url).netloc})

    _items: dict[str, dict[str, Any]]

    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        phrases = self.queries()
        if not phrases:
            raise SourceError(self.name, "hackernews needs watch queries or `queries = [...]` to search for")
        since = int(self.since(cursor).timestamp())
        found: dict[str, Mention] = {}
        notes: list[str] = []
        for phrase in phrases:
            for m in self._search(phrase, since, notes):
                if m.created_at.timestamp() > since:
                    found.setdefault(m.native_id, m)
        mentions = list(found.values())
        self._items: dict[str, dict[str, Any]] = {}
        if self.source.param("context", True):
            mentions = self._with_context(mentions, notes)
        yield from time_batches(mentions, cursor, int(self.source.param("batch_size", BATCH_SIZE)), notes, empty=False)

    def _search(self, phrase: str, since: int, notes: list[str]) -> Iterator[Mention]:
        per_page = int(self.source.param("hits_per_page", 100))
        max_pages = int(self.source.param("max_pages", 10))
        url = f"{self.base_url}/search_by_date"
        page = 0
        while True:
            params = {"query": phrase, "tags": "(story,comment)", "numericFilters": f"created_at_i>{since}",
                      "hitsPerPage": per_page, "page": page}
            payload = self.http.get(url, params=params).json()
            mentions, item_notes = parse_algolia_hits(payload, source=self.name, kind=self.kind)
            notes.extend(item_notes)
            yield from mentions
            pages = _int(payload.get("nbPages")) or 0
            if not payload["hits"] or page + 1 >= pages:
                return
            if page + 1 >= max_pages:
                notes.append(f"backlog capped at {max_pages} pages of {per_page} for {phrase!r}")
                return
            page += 1

    def _with_context(self, mentions: list[Mention], notes: list[str]) -> list[Mention]:
        """Comments whose hit lacks the story title or story id get them from Firebase (one request per thread)."""
        result: list[Mention] = []
        for m in mentions:
            if m.extra.get("type") != "comment" or (m.thread_id and m.extra.get("story_title")):
                result.append(m)
                continue
            story_id = m.thread_id or self._root_of(m.parent_id, notes)
            if story_id is None:
                result.append(m)
                continue
            title = self._item(story_id).get("title")
            extra = {**m.extra, **({"story_title": title} if title else {})}
            result.append(replace(m, thread_id=story_id, extra=extra))
        return result

    def _root_of(self, item_id: str | None, notes: list[str], depth: int = 40) -> str | None:
        """Walk `parent` links up to the story; HN threads are rarely deeper than a few dozen levels."""
        current = item_id
        for _ in range(depth):
            if current is None:
                return None
            facts = self._item(current)
            if not facts or facts.get("type") != "comment":
                return facts.get("id") if facts else None
            current = facts.get("parent")
        notes.append(f"thread of item {item_id} deeper than {depth}; left without story id")
        return None

    def _item(self, item_id: str) -> dict[str, Any]:
        if item_id not in self._items:
            payload = self.http.get(f"{self.firebase_url}/item/{item_id}.json").json()
            self._items[item_id] = parse_firebase_item(payload, source=self.name, item_id=item_id)
            if "id" in self._items[item_id]:
                self._items[self._items[item_id]["id"]] = self._items[item_id]
        return self._items[item_id]
