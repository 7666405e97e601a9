"""RSS / Atom / RDF / JSON Feed: blogs, news, forum feeds, release notes, Reddit's public .rss.

Bytes come through `listener.http` (conditional GET, size cap); feedparser only parses — it never
fetches. Ill-formed feeds are kept when feedparser recovers entries ("bozo"), with a health note.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import feedparser

from connectors.base import Connector, moved
from connectors.html import html_to_text
from listener.errors import ParseError
from listener.types import Batch, Cursor, Mention, cap_raw, utcnow

log = logging.getLogger(__name__)


def _entry_time(entry: Mapping[str, Any]) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if value:
            try:
                return datetime.fromtimestamp(calendar.timegm(value), UTC)
            except (OverflowError, ValueError, TypeError):
                continue
    return None


def _entry_text(entry: Mapping[str, Any]) -> str:
    contents = entry.get("content") or []
    # Prefer the richest body: content:encoded / atom content over the summary.
    best = max((c.get("value", "") for c in contents), key=len, default="")
    summary = entry.get("summary", "") or ""
    return html_to_text(best if len(best) >= len(summary) else summary)


def _native_id(entry: Mapping[str, Any]) -> str | None:
    for key in ("id", "guid", "link"):
        value = entry.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    title = entry.get("title") or ""
    body = _entry_text(entry)
    if not title and not body:
        return None
    return "sha1:" + hashlib.sha1(f"{title}\x1f{body}".encode()).hexdigest()


def parse_feed(
    content: bytes,
    *,
    source: str,
    kind: str = "rss",
    feed_url: str | None = None,
    headers: Mapping[str, str] | None = None,
    fetched_at: datetime | None = None,
) -> tuple[list[Mention], list[str]]:
    """Parse feed bytes into mentions. Returns (mentions, notes). Pure: no I/O.

    Raises ParseError when the bytes are not a feed at all (e.g. an HTML error page).
    """
    parsed = feedparser.parse(content, response_headers=dict(headers or {}))
    notes: list[str] = []
    entries = parsed.get("entries", [])
    problem = parsed.get("bozo_exception")
    if not entries and not parsed.get("version"):
        what = problem or "no RSS/Atom/RDF/JSON Feed root element"
        raise ParseError(source, f"not a feed ({feed_url or 'bytes'}): {what}")
    if parsed.get("bozo") and not isinstance(problem, feedparser.CharacterEncodingOverride):
        notes.append(f"ill-formed feed, {len(entries)} entries recovered: {problem}")
        log.warning("source %s: ill-formed feed %s: %s", source, feed_url, problem)
    now = fetched_at or utcnow()
    feed_title = html_to_text(parsed.get("feed", {}).get("title"))
    feed_time = _entry_time(parsed.get("feed", {}))
    mentions: list[Mention] = []
    for entry in entries:
        native = _native_id(entry)
        if native is None:
            notes.append("skipped an entry with no id, link, title or text")
            continue
        author = entry.get("author") or (entry.get("author_detail") or {}).get("name")
        tags = [t.get("term") for t in entry.get("tags", []) if t.get("term")]
        raw = {k: entry.get(k) for k in ("id", "link", "title", "published", "updated", "author")}
        mentions.append(
            Mention(
                source=source,
                kind=kind,
                native_id=native,
                url=entry.get("link") or None,
                title=html_to_text(entry.get("title")) or None,
                text=_entry_text(entry),
                author=html_to_text(author) or None,
                created_at=_entry_time(entry) or feed_time or now,
                fetched_at=now,
                comments=_int(entry.get("slash_comments")),
                extra={k: v for k, v in (("feed", feed_title), ("feed_url", feed_url), ("tags", tags[:20])) if v},
                raw=cap_raw(raw),
            )
        )
    return mentions, notes


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class RSSConnector(Connector):
    """RSS/Atom/RDF/JSON feeds. Each URL keeps its own ETag/Last-Modified in the cursor."""

    kind = "rss"
    default_rate = 1.0
    params: ClassVar[dict[str, str]] = {
        "url": "the feed's address",
        "urls": "several feeds in one source",
    }

    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        urls = self.urls()
        if not urls:
            raise ParseError(self.name, "rss source needs `url` or `urls`")
        # Feeds are short: after the first (backfill-bounded) run keep every entry and let storage
        # de-duplicate, so an entry published late with an old date is not lost.
        since = self.since(cursor) if cursor.last_time is None else None
        per_url: dict[str, Any] = dict(cursor.extra.get("feeds", {}))
        for url in urls:
            state = per_url.get(url, {})
            resp = self.http.get(url, etag=state.get("etag"), last_modified=state.get("last_modified"))
            if resp.not_modified:
                yield Batch([], cursor, notes=(f"not modified: {url}",))
                continue
            mentions, notes = parse_feed(
                resp.content, source=self.name, kind=self.kind, feed_url=url, headers=resp.headers
            )
            fresh = [m for m in mentions if since is None or m.created_at >= since]
            per_url[url] = resp.validators
            cursor = moved(cursor, fresh, feeds=dict(per_url))
            yield Batch(fresh, cursor, notes=tuple(notes))
