"""Google Play reviews, read from the public app detail page.

Google offers no reviews API to third parties (the Play Developer API only serves your own apps,
with an OAuth service account). The detail page
`https://play.google.com/store/apps/details?id={package}&hl={lang}&gl={country}` embeds the data
the page renders as `AF_initDataCallback({key: 'ds:N', … data: …})` script blocks; one of them
holds a few dozen reviews ("most relevant", not a complete or newest-first history). Block keys and
positions shift between layouts, so reviews are found by *shape* (id "gp:…", [author, avatar],
stars 1-5, text, [seconds, nanos]) wherever they sit; when no block has that shape any more the
source fails with a ParseError saying so. robots.txt is checked before every page fetch (Google's
allows /store/apps/details for all agents).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from connectors.base import Connector, moved, unseen
from listener.errors import ParseError
from listener.types import Batch, Cursor, Mention, cap_raw, utcnow

DEFAULT_BASE = "https://play.google.com"
SEEN_LIMIT = 2000
MAX_EPOCH = 253402300800
"""Seconds of 10000-01-01: a larger "timestamp" is not one (and datetime cannot represent it)."""
_BLOCK_START = re.compile(r"AF_initDataCallback\s*\(\s*\{\s*key\s*:\s*'([^']+)'")
# 2019 layout: data:function(){return [...]}});   current layout: data:[...], sideChannel: {}});
_IS_ERROR = re.compile(r"\s*,\s*isError\s*:\s*true")
_DATA_FN = re.compile(r"data\s*:\s*function\s*\(\)\s*\{\s*return\s*(.*?)\s*\}\s*\}\s*\)\s*;?\s*</script>", re.S)
_DATA_LIT = re.compile(r"data\s*:\s*(.*?)\s*,\s*sideChannel\s*:\s*\{\s*\}\s*\}\s*\)\s*;?\s*</script>", re.S)


def extract_data_blocks(html: str) -> tuple[dict[str, Any], list[str]]:
    """`ds:N` key → decoded data for every AF_initDataCallback block; undecodable keys are returned apart."""
    blocks: dict[str, Any] = {}
    broken: list[str] = []
    for start in _BLOCK_START.finditer(html):
        key = start.group(1)
        end = html.find("</script>", start.end())
        tail = html[start.end() : end + len("</script>") if end >= 0 else len(html)]
        if _IS_ERROR.match(tail):
            continue  # a block Google itself marks as failed carries no data (`data:["er"]`)
        match = _DATA_FN.search(tail) or _DATA_LIT.search(tail)
        if not match:
            broken.append(key)
            continue
        try:
            blocks[key] = json.loads(match.group(1))
        except ValueError:
            broken.append(key)
    return blocks, broken


def _is_timestamp(value: Any) -> bool:
    return isinstance(value, list) and len(value) >= 1 and isinstance(value[0], int) and 0 < value[0] < MAX_EPOCH


def _looks_like_review(node: Any) -> bool:
    return (
        isinstance(node, list) and len(node) > 5
        and isinstance(node[0], str) and node[0].startswith("gp:")
        and isinstance(node[1], list) and len(node[1]) > 0 and isinstance(node[1][0], str)
        and isinstance(node[2], int) and 1 <= node[2] <= 5
        and (node[4] is None or isinstance(node[4], str))
        and _is_timestamp(node[5])
    )


def _find_reviews(node: Any, out: list[list[Any]], depth: int = 0) -> None:
    if not isinstance(node, list) or depth > 12:
        return
    if _looks_like_review(node):
        out.append(node)
        return
    for child in node:
        _find_reviews(child, out, depth + 1)


def _mentions_gp_ids(node: Any) -> bool:
    return "\"gp:" in json.dumps(node)


def _at(node: list[Any], index: int) -> Any:
    return node[index] if len(node) > index else None


def parse_play_page(
    html: str, *, source: str, package: str, fetched_at: datetime | None = None
) -> tuple[list[Mention], list[str]]:
    """Reviews embedded in a Play detail page → mentions. Returns (mentions, notes).

    Raises ParseError naming what is missing when the page no longer has the structure described above.
    """
    now = fetched_at or utcnow()
    blocks, broken = extract_data_blocks(html)
    if not blocks:
        hint = f"{len(broken)} undecodable blocks" if broken else "no AF_initDataCallback blocks at all"
        raise ParseError(source, f"Google Play page for {package} is not the known layout: {hint} "
                                 "(a consent/bot page, or Google changed how the page embeds its data)")
    found: list[list[Any]] = []
    for key in sorted(blocks):
        _find_reviews(blocks[key], found)
    notes: list[str] = []
    if broken:
        notes.append(f"undecodable data blocks skipped: {', '.join(broken[:5])}")
    if not found:
        if any(_mentions_gp_ids(b) for b in blocks.values()):
            raise ParseError(source, f"Google Play page for {package}: review ids ('gp:…') are present but no array "
                                     "has the known review shape [id, [author, avatar], stars, _, text, [seconds, "
                                     "nanos]] any more; the review layout changed")
        notes.append(f"no reviews embedded in the page for {package}")
        return [], notes
    mentions: list[Mention] = []
    seen: set[str] = set()
    for review in found:
        review_id = review[0]
        if review_id in seen:
            continue  # the same review can appear in two blocks (featured + list)
        seen.add(review_id)
        text = (review[4] or "").strip()
        if not text:
            notes.append(f"skipped star-only review {review_id}")
            continue
        seconds = review[5][0]
        version = _at(review, 10)
        reply = _at(review, 7)
        extra: dict[str, Any] = {"package": package}
        if isinstance(version, str) and version:
            extra["version"] = version
        if isinstance(reply, list) and len(reply) > 1 and isinstance(reply[1], str):
            extra["developer_reply"] = reply[1][:2000]
            if len(reply) > 2 and _is_timestamp(reply[2]):
                extra["developer_reply_at"] = datetime.fromtimestamp(reply[2][0], UTC).isoformat()
        thumbs = _at(review, 6)
        mentions.append(Mention(
            source=source,
            kind="googleplay",
            native_id=review_id,
            url=f"{DEFAULT_BASE}/store/apps/details?id={quote(package)}&reviewId={quote(review_id, safe=':')}",
            title=None,
            text=text,
            author=review[1][0] or None,
            created_at=datetime.fromtimestamp(seconds, UTC),
            fetched_at=now,
            thread_id=f"app:{package}",
            score=float(thumbs) if isinstance(thumbs, int) else None,
            rating=float(review[2]),
            extra=extra,
            raw=cap_raw(review[:11]),
        ))
    return mentions, notes


class GooglePlayConnector(Connector):
    """The reviews embedded in each app's public detail page (a few dozen "most relevant", not a full history)."""

    kind = "googleplay"
    default_rate = 0.1
    """One page per 10 s: there is no documented quota for the store pages; stay far below anything noticeable."""
    auth = "none"
    params: ClassVar[dict[str, str]] = {
        "package": "the app id from the store URL (…/details?id=com.example.app)",
        "packages": "several app ids in one source",
        "lang": 'language of the reviews shown (`hl`, default "en")',
        "country": 'store country (`gl`, default "us")',
        "base_url": f"store address (default {DEFAULT_BASE})",
    }

    def _base(self) -> str:
        return str(self.source.param("base_url") or DEFAULT_BASE).rstrip("/")

    def hosts(self) -> list[str]:
        return [urlsplit(self._base()).netloc]

    def packages(self) -> list[str]:
        many = self.source.param("packages")
        single = self.source.param("package")
        return [str(p) for p in ([single] if single else []) + list(many or []) if p]

    def page_url(self, package: str) -> str:
        lang = self.source.param("lang", "en")
        country = self.source.param("country", "us")
        return f"{self._base()}/store/apps/details?id={quote(package)}&hl={quote(str(lang))}&gl={quote(str(country))}"

    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        packages = self.packages()
        if not packages:
            raise ParseError(self.name, "googleplay source needs `package` (e.g. com.example.app)")
        since = utcnow() - self.source.backfill
        for package in packages:
            url = self.page_url(package)
            if not self.http.robots_allowed(url):
                yield Batch([], cursor, notes=(f"robots.txt disallows {url}; skipped",))
                continue
            resp = self.http.get(url)
            if "html" not in resp.content_type:
                got = resp.content_type or "no content type"
                raise ParseError(self.name, f"{url}: expected the HTML detail page, got {got}")
            mentions, notes = parse_play_page(resp.text, source=self.name, package=package)
            apps: dict[str, Any] = dict(cursor.extra.get("apps", {}))
            seen: list[str] = list(apps.get(package, {}).get("seen", []))
            # The page shows "most relevant" reviews, not newest first: remember ids, and on a
            # package's first read keep only what falls inside the backfill window.
            new, remembered = unseen(mentions, seen, SEEN_LIMIT)
            fresh = sorted((m for m in new if seen or m.created_at >= since), key=lambda m: m.created_at)
            apps[package] = {"seen": remembered}
            cursor = moved(cursor, fresh, apps=apps)
            yield Batch(fresh, cursor, notes=tuple(notes))
