"""Review pages: any URL whose HTML carries schema.org `Review` / `AggregateRating` markup.

Product pages, review sites and local-business pages publish reviews as JSON-LD or microdata for
search engines; reading that markup is far sturdier than scraping each site's HTML. extruct parses
both syntaxes (and tolerates JS comments / control characters in JSON-LD). Each JSON-LD script is
parsed on its own, so one malformed script costs a note, not the page. robots.txt is honoured:
a disallowed URL is skipped with a note.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import extruct
from extruct.jsonld import JsonLdExtractor

from connectors.base import Connector, moved, unseen
from connectors.html import html_to_text
from listener.errors import ParseError
from listener.types import Batch, Cursor, Mention, cap_raw, utcnow

log = logging.getLogger(__name__)

REVIEW_TYPES = frozenset({"Review", "UserReview", "CriticReview", "EmployerReview", "ClaimReview"})
SEEN_LIMIT = 1000
"""Review ids remembered per URL: pages list the latest reviews, dates are often day-only."""
_SCRIPT = re.compile(r"<script[^>]*type\s*=\s*[\"']?application/ld\+json[\"']?[^>]*>(.*?)</script>", re.I | re.S)


def _types(node: Mapping[str, Any]) -> set[str]:
    raw = node.get("@type")
    values = raw if isinstance(raw, list) else [raw]
    return {str(v).rsplit("/", 1)[-1] for v in values if v}


def _text(value: Any) -> str | None:
    """schema.org values may be a string, a list, or a node with a name/value."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Mapping):
        value = value.get("name") or value.get("value") or value.get("@value")
    if value is None or isinstance(value, Mapping | list):
        return None
    text = html_to_text(str(value))
    return text or None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    match = re.search(r"-?\d+(?:[.,]\d+)?", str(value))
    return float(match.group(0).replace(",", ".")) if match else None


def normalise_rating(value: Any, best: Any = None, worst: Any = None) -> float | None:
    """Map a rating onto 1-5 using bestRating/worstRating (schema.org defaults: 5 and 1)."""
    v = _number(value)
    if v is None:
        return None
    hi = _number(best) or 5.0
    lo = _number(worst)
    lo = 1.0 if lo is None else lo
    if hi <= lo:
        return None
    scaled = 1 + 4 * (v - lo) / (hi - lo)
    return round(min(5.0, max(1.0, scaled)), 3)


def _rating_of(node: Any) -> tuple[float | None, dict[str, Any]]:
    if isinstance(node, Mapping):
        value, best, worst = node.get("ratingValue"), node.get("bestRating"), node.get("worstRating")
    else:
        value, best, worst = node, None, None
    raw = {k: v for k, v in (("value", value), ("best", best), ("worst", worst)) if v is not None}
    return normalise_rating(value, best, worst), raw


def _date(value: Any) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _walk(node: Any, parent: str | None, found: list[tuple[str, Mapping[str, Any], str | None]]) -> None:
    """Collect (kind, node, name of the thing it is about) for every Review / AggregateRating node."""
    if isinstance(node, list):
        for item in node:
            _walk(item, parent, found)
        return
    if not isinstance(node, Mapping):
        return
    types = _types(node)
    name = _text(node.get("name")) if not types & REVIEW_TYPES else None
    if types & REVIEW_TYPES:
        reviewed = node.get("itemReviewed")
        found.append(("review", node, _text(reviewed) if reviewed else parent))
    elif "AggregateRating" in types:
        found.append(("aggregate", node, _text(node.get("itemReviewed")) or parent))
    for key, value in node.items():
        if key not in ("@context",) and isinstance(value, Mapping | list):
            _walk(value, name or parent, found)


def _jsonld_items(html: str, notes: list[str]) -> tuple[list[Any], int]:
    """Parse each JSON-LD script on its own; a broken one is skipped with a note."""
    scripts = _SCRIPT.findall(html)
    items: list[Any] = []
    extractor = JsonLdExtractor()
    for i, script in enumerate(scripts, 1):
        if not script.strip():
            continue
        wrapped = f'<html><head><script type="application/ld+json">{script}</script></head></html>'
        try:
            items.extend(extractor.extract(wrapped))
        except (ValueError, TypeError) as exc:
            notes.append(f"skipped malformed JSON-LD script #{i}: {exc.__class__.__name__}: {str(exc)[:80]}")
            log.warning("malformed JSON-LD script #%d skipped: %s", i, exc)
    return items, len(scripts)


def parse_review_page(
    html: str, *, source: str, url: str, fetched_at: datetime | None = None
) -> tuple[list[Mention], list[str]]:
    """schema.org reviews on one page → mentions; AggregateRatings go into notes and each review's extra.

    Raises ParseError when the page has no Review/AggregateRating markup at all (layout change, bot wall).
    """
    now = fetched_at or utcnow()
    notes: list[str] = []
    jsonld, n_scripts = _jsonld_items(html, notes)
    try:
        microdata = extruct.extract(html, base_url=url, syntaxes=["microdata"], uniform=True)["microdata"]
    except Exception as exc:  # extruct/lxml raise assorted errors on broken markup
        microdata = []
        notes.append(f"microdata unreadable: {exc.__class__.__name__}")
    found: list[tuple[str, Mapping[str, Any], str | None]] = []
    _walk(jsonld, None, found)
    _walk(microdata, None, found)
    if not found:
        raise ParseError(source, (
            f"{url}: no schema.org Review or AggregateRating markup ({n_scripts} JSON-LD scripts, "
            f"{len(microdata)} microdata items); the page layout changed or a bot wall answered"))
    aggregate: dict[str, Any] | None = None
    for kind, node, about in found:
        if kind == "aggregate":
            value, raw = _rating_of(node)
            count = _number(node.get("reviewCount")) or _number(node.get("ratingCount"))
            aggregate = {k: v for k, v in (("rating", value), ("count", count), ("about", about), ("raw", raw)) if v}
            notes.append(f"aggregate rating {raw.get('value')} ({value}/5) from {count and int(count)} ratings"
                         + (f" for {about}" if about else ""))
            break
    mentions: list[Mention] = []
    for kind, node, about in found:
        if kind != "review":
            continue
        title = _text(node.get("name"))
        body = _text(node.get("reviewBody")) or _text(node.get("description")) or ""
        if not body and not title:
            notes.append("skipped a Review with neither reviewBody nor name")
            continue
        author = _text(node.get("author"))
        published = _date(node.get("datePublished")) or _date(node.get("dateCreated"))
        rating, rating_raw = _rating_of(node.get("reviewRating"))
        review_url = _text(node.get("url")) or None
        native = _text(node.get("@id")) or review_url or "sha1:" + hashlib.sha1(
            json.dumps([url, author, _text(node.get("datePublished")), title, body[:500]]).encode()).hexdigest()
        extra: dict[str, Any] = {"page_url": url}
        if about:
            extra["item_reviewed"] = about
        if rating_raw:
            extra["rating_raw"] = rating_raw
        if aggregate:
            extra["aggregate_rating"] = aggregate
        if published is None:
            extra["date_estimated"] = True
        mentions.append(Mention(
            source=source, kind="reviews", native_id=native, url=review_url or url, title=title, text=body,
            author=author, created_at=published or now, fetched_at=now, thread_id=url, rating=rating,
            language=_text(node.get("inLanguage")), extra=extra, raw=cap_raw(dict(node)),
        ))
    return mentions, notes


class ReviewPageConnector(Connector):
    """schema.org reviews on each page. Each URL keeps its validators and the review ids already seen."""

    kind = "reviews"
    default_rate = 0.2
    """Arbitrary sites: one request every 5 seconds per host is a polite crawl rate."""
    auth = "none"
    params: ClassVar[dict[str, str]] = {
        "urls": "pages carrying schema.org Review / AggregateRating markup (robots.txt is honoured)",
        "url": "one page (same as `urls`)",
    }

    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        urls = self.urls()
        if not urls:
            raise ParseError(self.name, "reviews source needs `urls = [...]`")
        since = utcnow() - self.source.backfill
        for url in urls:
            pages: dict[str, Any] = dict(cursor.extra.get("pages", {}))
            state: dict[str, Any] = dict(pages.get(url, {}))
            if not self.http.robots_allowed(url):
                yield Batch([], cursor, notes=(f"robots.txt disallows {url}; skipped",))
                continue
            resp = self.http.get(url, etag=state.get("etag"), last_modified=state.get("last_modified"))
            if resp.not_modified:
                yield Batch([], cursor, notes=(f"not modified: {url}",))
                continue
            if resp.content_type and "html" not in resp.content_type:
                raise ParseError(self.name, f"{url}: expected an HTML page, got {resp.content_type}")
            mentions, notes = parse_review_page(resp.text, source=self.name, url=url)
            seen = list(state.get("seen", []))
            new, remembered = unseen(mentions, seen, SEEN_LIMIT)
            # A URL's first read (also one added later) is bounded by the backfill window; after that, ids decide.
            fresh = [m for m in new if seen or m.extra.get("date_estimated") or m.created_at >= since]
            state.update({"seen": remembered, "etag": resp.etag, "last_modified": resp.last_modified})
            pages[url] = {k: v for k, v in state.items() if v}
            cursor = moved(cursor, fresh, pages=pages)
            yield Batch(fresh, cursor, notes=tuple(notes))
