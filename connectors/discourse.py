"""Discourse forums (any instance): topics from `/latest.json` or `/search.json`, then every new post
of each topic from `/t/{id}.json` plus `/t/{id}/posts.json?post_ids[]=…` for the rest of the stream.

Topics are processed in order of last activity, one batch per topic. A reply can land in an old
topic, so post age alone cannot mark progress: the cursor keeps a *topic mark* (topics active up to
it are done) and, while a run is interrupted, the post lower bound that run started with.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

from connectors.base import Connector, describe, iso_time, list_of, moved, str_or_none, strict_int
from connectors.html import html_to_text
from listener.errors import ParseError, SourceError
from listener.types import Batch, Cursor, Mention, cap_raw, utcnow

log = logging.getLogger(__name__)

CHUNK = 20
"""Discourse serves a topic's post stream in chunks of 20 (`chunk_size`)."""
LIKE_ACTION = 2
"""`actions_summary` id of a like (post_action_types.like)."""
SMALL_ACTION = 3
"""`post_type` of a forum event (topic closed/pinned/split …)."""
_MEDIA = re.compile(r"""(?:href|src)=["'](https?://[^"']+)""")


def topic_activity(topic: Mapping[str, Any]) -> datetime | None:
    """When a listed topic last changed: last post, else bump, else creation (some lists carry nulls)."""
    for key in ("last_posted_at", "bumped_at", "created_at"):
        found = iso_time(topic.get(key))
        if found is not None:
            return found
    return None


def parse_topic_list(payload: Any, *, source: str) -> tuple[list[dict[str, Any]], str | None]:
    """`/latest.json` → (topics, more_topics_url). Pure."""
    topic_list = payload.get("topic_list") if isinstance(payload, Mapping) else None
    if not isinstance(topic_list, Mapping) or not isinstance(topic_list.get("topics"), list):
        raise ParseError(source, f"expected a JSON object with 'topic_list.topics' but got {describe(payload)}")
    topics = [dict(t) for t in topic_list["topics"] if isinstance(t, Mapping) and strict_int(t.get("id")) is not None]
    more = topic_list.get("more_topics_url")
    return topics, more if isinstance(more, str) and more else None


def parse_search(payload: Any, *, source: str) -> tuple[list[dict[str, Any]], bool]:
    """`/search.json` → (topics, more pages?). Posts there only carry a blurb, so topics are fetched whole."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("topics", []), list) or (
        "topics" not in payload and "posts" not in payload
    ):
        raise ParseError(source, f"expected a search result with 'topics'/'posts' but got {describe(payload)}")
    topics = {t["id"]: dict(t) for t in payload.get("topics") or []
              if isinstance(t, Mapping) and strict_int(t.get("id"))}
    for post in list_of(payload.get("posts")):
        # Topics listed separately from posts; a post may point at a topic missing from `topics`.
        if isinstance(post, Mapping) and strict_int(post.get("topic_id")) and post["topic_id"] not in topics:
            topics[post["topic_id"]] = {"id": post["topic_id"], "last_posted_at": post.get("created_at")}
    grouped = payload.get("grouped_search_result")
    more = bool(grouped.get("more_full_page_results")) if isinstance(grouped, Mapping) else False
    return list(topics.values()), more


def _likes(post: Mapping[str, Any]) -> float | None:
    if isinstance(post.get("like_count"), int):
        return float(post["like_count"])
    for action in list_of(post.get("actions_summary")):
        if isinstance(action, Mapping) and action.get("id") == LIKE_ACTION and isinstance(action.get("count"), int):
            return float(action["count"])
    return None


def parse_discourse_posts(
    payload: Any, *, source: str, base_url: str, topic: Mapping[str, Any] | None = None,
    kind: str = "discourse", fetched_at: datetime | None = None,
) -> tuple[list[Mention], list[int], list[str]]:
    """`/t/{id}.json` or `/t/{id}/posts.json` → (mentions, stream post ids, notes). Pure.

    `topic` supplies title/slug when the payload (posts.json) lacks them.
    """
    stream = payload.get("post_stream") if isinstance(payload, Mapping) else None
    if not isinstance(stream, Mapping) or not isinstance(stream.get("posts"), list):
        raise ParseError(source, f"expected a topic with 'post_stream.posts' but got {describe(payload)}")
    info: dict[str, Any] = {**(topic or {}), **{k: v for k, v in payload.items() if k != "post_stream"}}
    title = html_to_text(info.get("title")) or None
    accepted = info.get("accepted_answer") if isinstance(info.get("accepted_answer"), Mapping) else None
    now = fetched_at or utcnow()
    mentions: list[Mention] = []
    notes: list[str] = []
    for post in stream["posts"]:
        mention = _post_to_mention(post, source=source, base_url=base_url, title=title, info=info,
                                   accepted=accepted, kind=kind, fetched_at=now)
        if mention is None:
            ident = post.get("id") if isinstance(post, Mapping) else None
            notes.append(f"skipped post {ident!r}: malformed or empty")
        else:
            mentions.append(mention)
    ids = [i for i in list_of(stream.get("stream")) if strict_int(i) is not None]
    return mentions, ids, notes


def _post_to_mention(
    post: Any, *, source: str, base_url: str, title: str | None, info: Mapping[str, Any],
    accepted: Mapping[str, Any] | None, kind: str, fetched_at: datetime,
) -> Mention | None:
    if not isinstance(post, Mapping):
        return None
    post_id, number, topic_id = (strict_int(post.get(k)) for k in ("id", "post_number", "topic_id"))
    created = iso_time(post.get("created_at"))
    if post_id is None or number is None or topic_id is None or created is None:
        return None
    if post.get("post_type") == SMALL_ACTION:  # "closed", "pinned", "split": forum events, not customer words
        return None
    cooked = str_or_none(post.get("cooked")) or str_or_none(post.get("raw")) or ""
    text = html_to_text(cooked) or " ".join(dict.fromkeys(_MEDIA.findall(cooked)))  # image/video-only posts
    if not text and number != 1:
        return None
    slug = str_or_none(post.get("topic_slug")) or str_or_none(info.get("slug")) or "-"
    reply_to = strict_int(post.get("reply_to_post_number"))
    extra: dict[str, Any] = {"post_number": number}
    if reply_to:
        extra["reply_to_post_number"] = reply_to
    if post.get("accepted_answer") or (accepted and accepted.get("post_number") == number):
        extra["accepted_answer"] = True
    topic_accepted = post.get("topic_accepted_answer") or info.get("has_accepted_answer") or accepted
    if topic_accepted:
        extra["topic_has_accepted_answer"] = True
    for key in ("category_id", "tags"):
        if info.get(key):
            extra[key] = info[key]
    if post.get("updated_at"):
        extra["updated_at"] = post["updated_at"]
    raw = {k: post.get(k) for k in ("id", "post_number", "topic_id", "username", "created_at", "updated_at",
                                    "reply_to_post_number", "accepted_answer", "cooked")}
    return Mention(
        source=source,
        kind=kind,
        native_id=str(post_id),
        url=f"{base_url}/t/{slug}/{topic_id}/{number}",
        title=title if number == 1 else None,
        text=text,
        author=str_or_none(post.get("username")),
        created_at=created,
        fetched_at=fetched_at,
        thread_id=str(topic_id),
        parent_id=None,  # reply_to_post_number names a post *number*: link_replies maps it to an id
        score=_likes(post),
        comments=strict_int(post.get("reply_count")),
        extra={**extra, "topic_title": title} if title and number != 1 else extra,
        raw=cap_raw(raw),
    )


def link_replies(mentions: list[Mention], numbers: Mapping[int, str]) -> list[Mention]:
    """Set parent_id to the id of the post each one replies to (`numbers`: post_number → post id)."""
    linked = []
    for m in mentions:
        target = numbers.get(m.extra.get("reply_to_post_number") or 0)
        linked.append(replace(m, parent_id=target) if target and target != m.native_id else m)
    return linked


def _iso(value: datetime) -> str:
    return value.isoformat()


class DiscourseConnector(Connector):
    """Topics from /latest.json or /search.json, then their new posts. Without a key only public categories show."""

    kind = "discourse"
    default_rate = 1.0  # Discourse's default per-IP limit is 200 requests/min; 1/s stays well under it.
    auth = "optional API key"
    params: ClassVar[dict[str, str]] = {
        "base_url": "the forum's address, e.g. https://community.example.com (required)",
        "mode": '"latest" (every new post) or "search" (default when match = "watch" and there are queries)',
        "queries": "search mode queries (default: one per watch alternative, words AND-ed, phrases quoted)",
        "category": 'latest mode: only this category, as "slug/id" (e.g. "support/5")',
        "max_pages": "topic-list or search pages per run before a capped note (default 10)",
        "max_post_pages": "post-stream requests per topic (default 25)",
        "api_key": "API key as { env = … } (private categories; higher limits)",
        "api_username": 'user the API key acts as (default "system")',
    }

    @property
    def base_url(self) -> str:
        return self.required_url("base_url", "the forum's address")

    def _headers(self) -> dict[str, str]:
        key = self.source.secret("api_key")
        if not key:
            return {}
        return {"Api-Key": key, "Api-Username": str(self.source.param("api_username") or "system")}

    def mode(self) -> str:
        mode = self.source.param("mode") or ("search" if self.source.match == "watch" and self.queries() else "latest")
        if mode not in ("latest", "search"):
            raise SourceError(self.name, f"mode must be 'latest' or 'search', not {mode!r}")
        return str(mode)

    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        base, headers = self.base_url, self._headers()
        notes: list[str] = []
        run = cursor.extra.get("run") if isinstance(cursor.extra.get("run"), Mapping) else None
        if run:  # an interrupted run resumes with its own post bound, skipping topics already done
            post_since = iso_time(run.get("post_since")) or self.since(cursor)
            mark = iso_time(run.get("topic_mark")) or post_since
            done = set(run.get("done_at_mark") or [])
        else:
            post_since = self.since(cursor)
            stored = iso_time(cursor.extra.get("topic_mark"))
            mark = max(post_since, stored - self.source.lookback) if stored else post_since
            done = set(cursor.extra.get("done_at_mark") or []) if stored and mark == stored else set()
        # Kept only when a run completes; a resumed run asks unconditionally (its pending topics need the list).
        validators = {} if run else dict(cursor.extra.get("latest_http") or {})
        topics = self._search(base, mark, headers, notes) if self.mode() == "search" else self._latest(
            base, mark, headers, notes, validators)
        pending = sorted(
            ((act, t) for t in topics
             if (act := topic_activity(t)) and (act > mark or (act == mark and t["id"] not in done))),
            key=lambda pair: (pair[0], pair[1]["id"]),
        )
        seen: set[str] = set()
        for activity, topic in pending:
            posts = [m for m in self._topic_posts(base, topic, post_since, headers, notes)
                     if m.created_at > post_since and m.native_id not in seen]
            seen |= {m.native_id for m in posts}
            done = (done if activity == mark else set()) | {topic["id"]}
            mark = activity
            state = {"post_since": _iso(post_since), "topic_mark": _iso(mark), "done_at_mark": sorted(done)}
            cursor = moved(cursor, posts, run=state)
            yield Batch(posts, cursor, notes=tuple(notes))
            notes = []
        extra = {k: v for k, v in cursor.extra.items() if k not in ("run", "latest_http")}
        extra.update(topic_mark=_iso(mark), done_at_mark=sorted(done))
        if validators:  # this run's list validators; none when the forum sent none
            extra["latest_http"] = validators
        yield Batch([], cursor.advanced(extra=extra), notes=tuple(notes))

    def _latest(self, base: str, mark: datetime, headers: dict[str, str], notes: list[str],
                validators: dict[str, str]) -> list[dict[str, Any]]:
        """Topic lists are ordered by bump: page until a page holds nothing newer than the mark.

        The first page is a conditional GET with the ETag / Last-Modified of the last completed run (kept in
        ``validators``, which this updates): any new post bumps a topic and changes the list, so a 304 means
        nothing happened and costs no body. Validators of another list URL (config changed) are not sent.
        """
        category = self.source.param("category")
        path = f"/c/{category}/l/latest.json" if category else "/latest.json"
        found: dict[int, dict[str, Any]] = {}
        max_pages = int(self.source.param("max_pages", 10))
        for page in range(max_pages):
            if page == 0:
                known = validators if validators.get("url") == path else {}
                first = self.http.get(f"{base}{path}", headers=headers, etag=known.get("etag"),
                                      last_modified=known.get("last_modified"))
                if first.not_modified:
                    return []
                validators.clear()
                validators.update(first.validators)
                if validators:
                    validators["url"] = path
                payload = first.json()
            else:
                payload = self.http.get(f"{base}{path}", params={"page": page}, headers=headers).json()
            topics, more = parse_topic_list(payload, source=self.name)
            fresh = [t for t in topics if (topic_activity(t) or mark) > mark or t.get("pinned")]
            for t in fresh:
                found.setdefault(t["id"], t)
            if not more or not any(not t.get("pinned") for t in fresh):
                return list(found.values())
        notes.append(f"topic list capped at {max_pages} pages")
        return list(found.values())

    def _search(self, base: str, mark: datetime, headers: dict[str, str], notes: list[str]) -> list[dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        max_pages = int(self.source.param("max_pages", 10))
        for query in self.queries():
            q = f"{query} after:{mark.date().isoformat()} order:latest"
            for page in range(1, max_pages + 1):
                payload = self.http.get(f"{base}/search.json", params={"q": q, "page": page}, headers=headers).json()
                topics, more = parse_search(payload, source=self.name)
                for t in topics:
                    found.setdefault(t["id"], t)
                if not more:
                    break
            else:
                notes.append(f"search capped at {max_pages} pages for {query!r}")
        return list(found.values())

    def _topic_posts(self, base: str, topic: Mapping[str, Any], post_since: datetime, headers: dict[str, str],
                     notes: list[str]) -> list[Mention]:
        """First chunk from the topic view; the rest of the stream tail-first until posts predate `post_since`."""
        topic_id = topic["id"]
        payload = self.http.get(f"{base}/t/{topic_id}.json", headers=headers).json()
        mentions, stream, more_notes = parse_discourse_posts(payload, source=self.name, base_url=base, kind=self.kind)
        notes.extend(more_notes)
        info = {k: payload.get(k) for k in ("title", "slug", "category_id", "tags", "accepted_answer")}
        have = {m.native_id for m in mentions}
        missing = [i for i in stream if str(i) not in have]
        budget = int(self.source.param("max_post_pages", 25))
        while missing:
            if budget <= 0:
                notes.append(f"topic {topic_id}: {len(missing)} older posts not fetched (max_post_pages)")
                break
            budget -= 1
            chunk, missing = missing[-CHUNK:], missing[:-CHUNK]
            page = self.http.get(f"{base}/t/{quote(str(topic_id))}/posts.json", params={"post_ids[]": chunk},
                                 headers=headers).json()
            got, _, more_notes = parse_discourse_posts(page, source=self.name, base_url=base, topic=info,
                                                       kind=self.kind)
            notes.extend(more_notes)
            mentions.extend(m for m in got if m.native_id not in have)
            have |= {m.native_id for m in got}
            if got and min(m.created_at for m in got) <= post_since:
                break  # the stream is in post order: everything before this chunk is older still
        numbers = {m.extra["post_number"]: m.native_id for m in mentions}
        return link_replies(mentions, numbers)
