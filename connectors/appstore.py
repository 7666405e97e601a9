"""Apple App Store customer reviews via the public customer-reviews RSS feed (JSON flavour).

`https://itunes.apple.com/{country}/rss/customerreviews/page={n}/id={app_id}/sortby=mostrecent/json`
needs no key, serves 50 reviews a page and at most 10 pages (the 500 most recent reviews per
country). Reviews are about *your* app, so `match = "all"` is the natural setting for this source:
with the default `match = "watch"` only reviews that name a watch term would be kept.

Incremental runs rely on review ids (Apple's ids grow over time) plus the per-entry `updated`
date where the feed carries one (older captures do not; then the backfill window cannot be applied
and the batch says so).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from connectors.base import Connector, iso_time, str_or_none
from listener.errors import FetchError, ParseError
from listener.types import Batch, Cursor, Mention, cap_raw, utcnow

DEFAULT_BASE = "https://itunes.apple.com"
MAX_PAGES = 10
"""Apple serves pages 1..10; later pages answer an error or an empty feed."""


def _label(node: Any) -> str | None:
    if isinstance(node, Mapping):
        value = node.get("label")
        return value if isinstance(value, str) else None
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def parse_appstore_feed(
    payload: Any, *, source: str, app_id: str | None = None, country: str | None = None,
    fetched_at: datetime | None = None,
) -> tuple[list[Mention], list[str]]:
    """Customer-reviews JSON → review mentions (newest first, as served). Returns (mentions, notes).

    Raises ParseError when the payload is not a customer-reviews feed at all.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("feed"), Mapping):
        got = type(payload).__name__ if not isinstance(payload, Mapping) else f"keys {sorted(payload)[:5]}"
        raise ParseError(source, f"App Store feed layout changed: expected a JSON object with 'feed', got {got}")
    feed = payload["feed"]
    entries = feed.get("entry", [])
    if isinstance(entries, Mapping):  # a page with a single entry is not wrapped in a list
        entries = [entries]
    if not isinstance(entries, list):
        raise ParseError(source, f"App Store feed layout changed: 'feed.entry' is a {type(entries).__name__}")
    now = fetched_at or utcnow()
    feed_time = iso_time(_label(feed.get("updated")))
    notes: list[str] = []
    mentions: list[Mention] = []
    undated = 0
    for entry in entries:
        if not isinstance(entry, Mapping):
            notes.append("skipped a non-object entry")
            continue
        if "im:rating" not in entry and "im:name" in entry:
            continue  # older feeds put the app's own description first; it is not a review
        review_id = _label(entry.get("id"))
        rating = _int(_label(entry.get("im:rating")))
        if not review_id or rating is None:
            notes.append(f"skipped an entry without id or im:rating ({review_id or 'no id'})")
            continue
        created = iso_time(_label(entry.get("updated")))
        if created is None:
            undated += 1
        author_node = entry.get("author")
        author: Mapping[str, Any] = author_node if isinstance(author_node, Mapping) else {}
        link = entry.get("link")
        attributes = link.get("attributes") if isinstance(link, Mapping) else None
        href = str_or_none(attributes.get("href")) if isinstance(attributes, Mapping) else None
        version = _label(entry.get("im:version"))
        extra: dict[str, Any] = {
            k: v
            for k, v in (
                ("app_id", app_id), ("country", country), ("version", version),
                ("author_uri", _label(author.get("uri"))), ("vote_count", _int(_label(entry.get("im:voteCount")))),
            )
            if v is not None
        }
        if created is None:
            extra["date_estimated"] = True
        mentions.append(
            Mention(
                source=source,
                kind="appstore",
                native_id=review_id,
                url=href,
                title=_label(entry.get("title")) or None,
                text=(_label(entry.get("content")) or "").strip(),
                author=_label(author.get("name")) or None,
                created_at=created or feed_time or now,
                fetched_at=now,
                thread_id=f"app:{app_id}" if app_id else None,
                score=_int(_label(entry.get("im:voteSum"))),
                rating=float(min(5, max(1, rating))),
                extra=extra,
                raw=cap_raw(dict(entry)),
            )
        )
    if undated:
        notes.append(f"{undated} reviews carry no date; the feed's update time is used and backfill cannot be applied")
    return mentions, notes


class AppStoreConnector(Connector):
    """The newest reviews of one app per country storefront (at most 10 pages of ~50)."""

    kind = "appstore"
    default_rate = 1 / 3
    """Apple documents no limit for these feeds; ~20 requests/minute is what they tolerate without 403s."""
    auth = "none"
    params: ClassVar[dict[str, str]] = {
        "app_id": "the numeric id in the App Store URL (…/id1321994487) (required)",
        "countries": 'storefronts to read, e.g. ["us", "gb", "de"] (each keeps its own position)',
        "country": 'one storefront (default "us") when `countries` is not set',
        "pages": "pages of ~50 reviews per country and run, 1-10 (default 10)",
        "base_url": f"feed address (default {DEFAULT_BASE})",
    }

    def hosts(self) -> list[str]:
        return [urlsplit(self._base()).netloc]

    def _base(self) -> str:
        return str(self.source.param("base_url") or DEFAULT_BASE).rstrip("/")

    def _countries(self) -> list[str]:
        many = self.source.param("countries")
        if isinstance(many, list) and many:
            return [str(c).lower() for c in many]
        return [str(self.source.param("country", "us")).lower()]

    def page_url(self, country: str, page: int) -> str:
        app_id = self.source.param("app_id")
        return f"{self._base()}/{country}/rss/customerreviews/page={page}/id={app_id}/sortby=mostrecent/json"

    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        app_id = self.source.param("app_id")
        if not app_id or not str(app_id).isdigit():
            raise ParseError(self.name, "appstore source needs a numeric `app_id` (the id in the App Store URL)")
        pages = max(1, min(MAX_PAGES, int(self.source.param("pages", MAX_PAGES))))
        since = self.since(cursor)
        for country in self._countries():
            cursor = yield from self._fetch_country(cursor, str(app_id), country, pages, since)

    def _fetch_country(
        self, cursor: Cursor, app_id: str, country: str, pages: int, since: datetime
    ) -> Generator[Batch, None, Cursor]:
        state: dict[str, Any] = dict(cursor.extra.get("countries", {}).get(country, {}))
        max_seen = int(state.get("max_id", 0))
        collected: list[tuple[list[Mention], list[str]]] = []
        etag_state: dict[str, str] = {}
        for page in range(1, pages + 1):
            url = self.page_url(country, page)
            try:
                resp = self.http.get(url, etag=state.get("etag") if page == 1 else None)
            except FetchError as exc:
                if page > 1 and exc.status in (400, 404):
                    break  # past the last page Apple answers an error instead of an empty feed
                raise
            if resp.not_modified:
                yield Batch([], cursor, notes=(f"not modified: {country} reviews",))
                return cursor
            if page == 1 and resp.etag:
                etag_state["etag"] = resp.etag
            mentions, notes = parse_appstore_feed(resp.json(), source=self.name, app_id=app_id, country=country)
            fresh = [m for m in mentions if self._is_new(m, max_seen, since)]
            if not fresh:
                break
            collected.append((fresh, notes))
        # Pages come newest first; store oldest first so each batch's cursor is safe to commit.
        for fresh, notes in reversed(collected):
            max_seen = max([max_seen, *(int(m.native_id) for m in fresh if m.native_id.isdigit())])
            newest_time = max(m.created_at for m in fresh)
            last_time = cursor.last_time if cursor.last_time and cursor.last_time > newest_time else newest_time
            state = {**state, "max_id": max_seen}
            cursor = self._with_state(cursor, country, state, last_time)
            yield Batch(fresh[::-1], cursor, notes=tuple(notes))
        if etag_state:
            cursor = self._with_state(cursor, country, {**state, **etag_state}, cursor.last_time)
            yield Batch([], cursor)
        return cursor

    def _is_new(self, m: Mention, max_seen: int, since: datetime) -> bool:
        dated = not m.extra.get("date_estimated")
        if max_seen == 0:  # a country's first read: the backfill window bounds whatever carries a date
            return not dated or m.created_at >= utcnow() - self.source.backfill
        if m.native_id.isdigit() and int(m.native_id) > max_seen:
            return True
        # With a look-back, re-read dated reviews inside it (an edited review keeps its id, gets a new date).
        return dated and self.source.lookback > timedelta(0) and m.created_at >= since

    @staticmethod
    def _with_state(cursor: Cursor, country: str, state: dict[str, Any], last_time: datetime | None) -> Cursor:
        countries = dict(cursor.extra.get("countries", {}))
        countries[country] = state
        return cursor.advanced(last_time=last_time, extra={**cursor.extra, "countries": countries})
