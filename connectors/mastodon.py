"""Mastodon (any instance): hashtag timelines (public, no account) and status search (`/api/v2/search`,
which most instances only answer with an access token).

Each stream (a hashtag or a query) keeps its own newest status id in the cursor. The first run pages
backwards with `max_id` to the backfill horizon and yields oldest-first; later runs page *forward*
with `min_id`, so every page can be committed as soon as it arrives.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from connectors.base import Connector, describe, iso_time, list_of, moved, str_list, str_or_none
from connectors.html import html_to_text
from listener.errors import ParseError, SourceError
from listener.types import Batch, Cursor, Mention, cap_raw, utcnow

log = logging.getLogger(__name__)

LIMIT = 40
"""Mastodon caps `limit` at 40 statuses."""
_TAG = re.compile(r"^[\w]+$")


def _id_key(status_id: str) -> tuple[int, str]:
    """Ids are strings "cast from an integer but not guaranteed to be a number": sort numerically when possible."""
    return (int(status_id), "") if status_id.isdigit() else (0, status_id)


def parse_status(status: Any, *, source: str, instance: str, kind: str = "mastodon",
                 fetched_at: datetime | None = None) -> Mention | None:
    """One Status entity → Mention (a boost becomes the boosted status). None when unusable."""
    if not isinstance(status, Mapping):
        return None
    if isinstance(status.get("reblog"), Mapping):
        status = status["reblog"]
    status_id, created = status.get("id"), iso_time(status.get("created_at"))
    if not isinstance(status_id, str) or not status_id or created is None:
        return None
    text = html_to_text(status.get("content"))
    if not text:  # media-only posts: their alt texts are what people wrote
        media = list_of(status.get("media_attachments"))
        text = "\n".join(str(m.get("description") or m.get("url") or "") for m in media if isinstance(m, Mapping))
    warning = str(status.get("spoiler_text") or "").strip()
    if not text.strip() and not warning:
        return None
    account = status.get("account") if isinstance(status.get("account"), Mapping) else {}
    acct = str(account.get("acct") or "")
    author = (acct if "@" in acct else f"{acct}@{instance}") if acct else None
    tags = [t.get("name") for t in list_of(status.get("tags")) if isinstance(t, Mapping) and t.get("name")]
    extra = {k: v for k, v in (("tags", tags[:20]), ("reblogs", status.get("reblogs_count")),
                               ("content_warning", warning), ("visibility", status.get("visibility")),
                               ("edited_at", status.get("edited_at"))) if v not in (None, "", [])}
    reply_to = status.get("in_reply_to_id")
    favourites = status.get("favourites_count")
    return Mention(
        source=source,
        kind=kind,
        native_id=status_id,
        url=str_or_none(status.get("url")) or str_or_none(status.get("uri")),
        title=warning or None,
        text=text.strip(),
        author=author,
        created_at=created,
        fetched_at=fetched_at or utcnow(),
        parent_id=reply_to if isinstance(reply_to, str) and reply_to else None,
        score=float(favourites) if isinstance(favourites, int) else None,
        comments=status.get("replies_count") if isinstance(status.get("replies_count"), int) else None,
        language=str_or_none(status.get("language")),
        extra=extra,
        raw=cap_raw(status),
    )


def parse_statuses(payload: Any, *, source: str, instance: str, kind: str = "mastodon",
                   fetched_at: datetime | None = None) -> tuple[list[Mention], list[str], list[str]]:
    """A timeline (array of Status) or a v2 search result (`{statuses: [...]}`) → (mentions, all ids, notes)."""
    statuses = payload.get("statuses") if isinstance(payload, Mapping) else payload
    if not isinstance(statuses, list):
        raise ParseError(source, f"expected an array of statuses or {{'statuses': [...]}} but got {describe(payload)}")
    now = fetched_at or utcnow()
    mentions: list[Mention] = []
    ids: list[str] = []
    notes: list[str] = []
    for status in statuses:
        if isinstance(status, Mapping) and isinstance(status.get("id"), str):
            ids.append(status["id"])
        mention = parse_status(status, source=source, instance=instance, kind=kind, fetched_at=now)
        if mention is None:
            ident = status.get("id") if isinstance(status, Mapping) else None
            notes.append(f"skipped status {ident!r}: malformed or empty")
        else:
            mentions.append(mention)
    return mentions, ids, notes


class MastodonConnector(Connector):
    """Hashtag timelines (public) and status search (with a token) of one instance, per-stream positions."""

    kind = "mastodon"
    default_rate = 1.0  # documented: 300 requests per 5 minutes per account/IP
    auth = "access token"
    params: ClassVar[dict[str, str]] = {
        "base_url": "the instance, e.g. https://mastodon.social (required)",
        "hashtags": "hashtag timelines to read, without # (default: the watch phrases, spaces removed)",
        "queries": "status searches (default: the watch phrases); only run with an access_token",
        "access_token": "access token as { env = … }: most instances refuse status search without one",
        "max_pages": "pages per stream and run (default 10)",
    }

    @property
    def base_url(self) -> str:
        return self.required_url("base_url", "the instance, e.g. https://mastodon.social")

    def _token(self) -> str | None:
        return self.source.secret("access_token")

    def status(self) -> str:
        if self.queries() and not self._token():
            return "degraded: no access_token, so only hashtag timelines are read (search needs a token)"
        return "ok"

    def hashtags(self) -> list[str]:
        configured = str_list(self.source.param("hashtags"))
        found = [p for w in self.watches for p in w.phrases] if configured is None else configured
        tags = (str(t).lstrip("#").replace(" ", "") for t in found)
        return list(dict.fromkeys(t.lower() for t in tags if t and _TAG.match(t)))

    def queries(self) -> list[str]:
        configured = str_list(self.source.param("queries"))
        return configured if configured is not None else list(dict.fromkeys(p for w in self.watches for p in w.phrases))

    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        base = self.base_url
        streams: list[tuple[str, str, dict[str, Any]]] = [
            (f"tag:{t}", f"{base}/api/v1/timelines/tag/{quote(t)}", {}) for t in self.hashtags()]
        notes: list[str] = []
        if self._token():
            streams += [(f"search:{q}", f"{base}/api/v2/search", {"q": q, "type": "statuses"})
                        for q in self.queries()]
        elif self.queries():
            notes.append("search skipped: no access_token (most instances refuse status search without one)")
        if not streams:
            raise SourceError(self.name, "mastodon needs `hashtags`, or `queries` with an access_token")
        # A stream without a stored id starts at the backfill horizon, whatever other streams have reached.
        since = self.since(Cursor())
        seen: set[str] = set()
        for key, url, params in streams:
            positions = dict(cursor.extra.get("streams") or {})
            for mentions, newest_id, more in self._stream(url, params, positions.get(key), since):
                fresh = [m for m in mentions if m.native_id not in seen]
                seen |= {m.native_id for m in fresh}
                if newest_id is not None:  # a fresh dict: earlier batches' cursors must not change under them
                    positions = {**positions, key: newest_id}
                cursor = moved(cursor, fresh, streams=positions)
                yield Batch(fresh, cursor, notes=tuple(notes + more))
                notes = []
        if notes:
            yield Batch([], cursor, notes=tuple(notes))

    def _get(self, url: str, params: dict[str, Any]) -> Any:
        token = self._token()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return self.http.get(url, params=params, headers=headers).json()

    def _stream(self, url: str, params: dict[str, Any], position: str | None,
                since: datetime) -> Iterator[tuple[list[Mention], str | None, list[str]]]:
        """Yields (mentions oldest-first, newest id now safe to store, notes) per committed step."""
        max_pages = int(self.source.param("max_pages", 10))
        instance = urlsplit(self.base_url).netloc
        if position:  # forward from the stored id: each page is complete and newer than the last
            for _ in range(max_pages):
                payload = self._get(url, {**params, "min_id": position, "limit": LIMIT})
                mentions, ids, notes = parse_statuses(payload, source=self.name, instance=instance, kind=self.kind)
                if not ids:
                    return
                position = max(ids, key=_id_key)
                yield sorted(mentions, key=lambda m: _id_key(m.native_id)), position, notes
                if len(ids) < LIMIT:
                    return
            yield [], None, [f"more than {max_pages} pages new on {url}; the rest follows next run"]
            return
        collected: list[Mention] = []
        notes, newest, max_id = [], None, None
        for page in range(max_pages):  # first run: backwards to the backfill horizon, then oldest-first
            query = {**params, "limit": LIMIT, **({"max_id": max_id} if max_id else {})}
            mentions, ids, more = parse_statuses(self._get(url, query), source=self.name, instance=instance,
                                                 kind=self.kind)
            notes += more
            collected += mentions
            if not ids:
                break
            newest = newest or max(ids, key=_id_key)
            max_id = min(ids, key=_id_key)
            if len(ids) < LIMIT or any(m.created_at <= since for m in mentions):
                break
            if page == max_pages - 1:
                notes.append(f"backfill capped at {max_pages} pages on {url}")
        bounded = [m for m in collected if m.created_at > since]
        yield sorted(bounded, key=lambda m: _id_key(m.native_id)), newest, notes
