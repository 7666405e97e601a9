"""Lemmy (any instance, API v3): `/api/v3/search` for watch phrases (posts and comments) and/or
`/api/v3/post/list` for named communities, newest first, paged back to the cursor.

Lemmy's search is a plain substring match on the whole string, so each watch *phrase* is searched
on its own and the AND/NOT logic is left to local matching. Ids are the instance's own (the source is
one instance), URLs the canonical ActivityPub ids. Results are collected, then yielded oldest-first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from connectors.base import Connector, describe, iso_time, list_of, str_list, str_or_none, strict_int, time_batches
from listener.errors import ParseError, SourceError
from listener.types import Batch, Cursor, Mention, cap_raw, utcnow

log = logging.getLogger(__name__)

PAGE_LIMIT = 50
"""Lemmy caps `limit` at 50."""
BATCH_SIZE = 100


def _handle(person: Any) -> str | None:
    """`name@instance`: names are only unique per instance in the fediverse."""
    if not isinstance(person, Mapping) or not person.get("name"):
        return None
    host = urlsplit(str(person.get("actor_id") or "")).netloc
    return f"{person['name']}@{host}" if host else str(person["name"])


def _community(view: Mapping[str, Any]) -> str | None:
    community = view.get("community")
    return _handle(community) if isinstance(community, Mapping) else None


def _post_view(view: Any, *, source: str, kind: str, base_url: str, fetched_at: datetime) -> Mention | None:
    post = view.get("post") if isinstance(view, Mapping) else None
    if not isinstance(post, Mapping) or post.get("deleted") or post.get("removed"):
        return None
    post_id, created = strict_int(post.get("id")), iso_time(post.get("published"))
    title = str(post.get("name") or "").strip()
    if post_id is None or created is None or not title:
        return None
    counts = view.get("counts") if isinstance(view.get("counts"), Mapping) else {}
    extra = {k: v for k, v in (("community", _community(view)), ("link", post.get("url")),
                               ("nsfw", post.get("nsfw") or None), ("type", "post")) if v}
    return Mention(
        source=source, kind=kind, native_id=f"post/{post_id}",
        url=str_or_none(post.get("ap_id")) or f"{base_url}/post/{post_id}",
        title=title, text=str(post.get("body") or "").strip(), author=_handle(view.get("creator")),
        created_at=created, fetched_at=fetched_at, thread_id=f"post/{post_id}", parent_id=None,
        score=float(counts["score"]) if strict_int(counts.get("score")) is not None else None,
        comments=strict_int(counts.get("comments")), extra=extra, raw=cap_raw(view),
    )


def _comment_view(view: Any, *, source: str, kind: str, base_url: str, fetched_at: datetime) -> Mention | None:
    comment = view.get("comment") if isinstance(view, Mapping) else None
    if not isinstance(comment, Mapping) or comment.get("deleted") or comment.get("removed"):
        return None
    comment_id, post_id = strict_int(comment.get("id")), strict_int(comment.get("post_id"))
    created, text = iso_time(comment.get("published")), str(comment.get("content") or "").strip()
    if comment_id is None or post_id is None or created is None or not text:
        return None
    # `path` is "0.<ancestor ids>.<own id>": the id before our own is the parent comment, "0" the post.
    path = [p for p in str(comment.get("path") or "").split(".") if p.isdigit()]
    parent = path[-2] if len(path) >= 2 and path[-1] == str(comment_id) else "0"
    counts = view.get("counts") if isinstance(view.get("counts"), Mapping) else {}
    post = view.get("post") if isinstance(view.get("post"), Mapping) else {}
    extra = {k: v for k, v in (("community", _community(view)), ("post_title", post.get("name")),
                               ("type", "comment")) if v}
    return Mention(
        source=source, kind=kind, native_id=f"comment/{comment_id}",
        url=str_or_none(comment.get("ap_id")) or f"{base_url}/comment/{comment_id}",
        title=None, text=text, author=_handle(view.get("creator")),
        created_at=created, fetched_at=fetched_at, thread_id=f"post/{post_id}",
        parent_id=f"comment/{parent}" if parent != "0" else f"post/{post_id}",
        score=float(counts["score"]) if strict_int(counts.get("score")) is not None else None,
        comments=strict_int(counts.get("child_count")), extra=extra, raw=cap_raw(view),
    )


def parse_lemmy(
    payload: Any, *, source: str, base_url: str, kind: str = "lemmy", fetched_at: datetime | None = None
) -> tuple[list[Mention], list[str]]:
    """A SearchResponse or GetPostsResponse → (mentions, notes). Pure. Deleted/removed items are dropped."""
    if not isinstance(payload, Mapping) or not (
        isinstance(payload.get("posts"), list) or isinstance(payload.get("comments"), list)
    ):
        raise ParseError(source, f"expected a Lemmy response with 'posts'/'comments' but got {describe(payload)}")
    now = fetched_at or utcnow()
    mentions: list[Mention] = []
    notes: list[str] = []
    for key, parse in (("posts", _post_view), ("comments", _comment_view)):
        for view in list_of(payload.get(key)):
            mention = parse(view, source=source, kind=kind, base_url=base_url, fetched_at=now)
            if mention is not None:
                mentions.append(mention)
            elif not _gone(view, key[:-1]):
                notes.append(f"skipped a malformed {key[:-1]}")
    return mentions, notes


def _gone(view: Any, key: str) -> bool:
    item = view.get(key) if isinstance(view, Mapping) else None
    return isinstance(item, Mapping) and bool(item.get("deleted") or item.get("removed"))


def _needs_more(payload: Mapping[str, Any], since: datetime) -> bool:
    """Another page is worth asking for while some list came back full of items all newer than `since`."""
    for key, inner in (("posts", "post"), ("comments", "comment")):
        views = [v for v in payload.get(key) or [] if isinstance(v, Mapping)]
        times = [t for v in views if isinstance(v.get(inner), Mapping) and (t := iso_time(v[inner].get("published")))]
        if len(views) >= PAGE_LIMIT and times and min(times) > since:
            return True
    return isinstance(payload.get("next_page"), str) and bool(payload.get("posts")) and all(
        t > since for v in payload["posts"] if isinstance(v, Mapping) and isinstance(v.get("post"), Mapping)
        and (t := iso_time(v["post"].get("published")))
    )


class LemmyConnector(Connector):
    """Posts and comments of one instance by search and/or community listings. Public reads need no account."""

    kind = "lemmy"
    default_rate = 0.5  # instances rate-limit per IP (admin-configurable buckets; search is the tightest)
    auth = "none"
    params: ClassVar[dict[str, str]] = {
        "base_url": "the instance, e.g. https://lemmy.world (required)",
        "communities": 'communities to list newest-first, "name" or "name@instance"',
        "community": "one community (same as `communities`)",
        "queries": "search strings (default: the watch phrases, one search each; [] turns search off)",
        "max_pages": "pages per search or community before a capped note (default 5)",
        "batch_size": "mentions per committed batch (default 100)",
    }

    @property
    def base_url(self) -> str:
        return self.required_url("base_url", "the instance, e.g. https://lemmy.ml")

    def queries(self) -> list[str]:
        """Search is a substring match on the whole string: one search per watch *phrase*, logic applied locally."""
        configured = str_list(self.source.param("queries"))
        if configured is not None:  # an explicit [] turns search off (community listing only)
            return configured
        return list(dict.fromkeys(p for w in self.watches for p in w.phrases))

    def communities(self) -> list[str]:
        found = self.source.param("communities") or self.source.param("community") or []
        return [found] if isinstance(found, str) else [str(c) for c in found]

    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        base = self.base_url
        queries, communities = self.queries(), self.communities()
        if not queries and not communities:
            raise SourceError(self.name, "lemmy needs `communities`, `queries` or watch queries")
        since = self.since(cursor)
        notes: list[str] = []
        found: dict[str, Mention] = {}
        requests = [(f"{base}/api/v3/search", {"q": q, "type_": "All", "sort": "New", "listing_type": "All"})
                    for q in queries]
        requests += [(f"{base}/api/v3/post/list", {"community_name": c, "sort": "New", "type_": "All"})
                     for c in communities]
        for url, params in requests:
            for m in self._pages(url, params, since, notes):
                found.setdefault(m.native_id, m)
        fresh = [m for m in found.values() if m.created_at > since]
        yield from time_batches(fresh, cursor, int(self.source.param("batch_size", BATCH_SIZE)), notes)

    def _pages(self, url: str, params: dict[str, Any], since: datetime, notes: list[str]) -> Iterator[Mention]:
        """Newest first: stop at the first page reaching back past `since`. 0.19 pages by `next_page` cursor."""
        max_pages = int(self.source.param("max_pages", 5))
        page_cursor: str | None = None
        for page in range(1, max_pages + 1):
            query = {**params, "limit": PAGE_LIMIT}
            query.update({"page_cursor": page_cursor} if page_cursor else {"page": page})
            payload = self.http.get(url, params=query).json()
            mentions, more = parse_lemmy(payload, source=self.name, base_url=self.base_url, kind=self.kind)
            notes.extend(more)
            yield from mentions
            if not _needs_more(payload, since):
                return
            next_page = payload.get("next_page")
            page_cursor = next_page if isinstance(next_page, str) and next_page else None
        notes.append(f"capped at {max_pages} pages: {params.get('q') or params.get('community_name')!r}")
