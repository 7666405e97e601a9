"""Reddit: subreddit posts and comments, site-wide search for watch phrases, comment trees of matches.

With OAuth app credentials the connector uses praw against oauth.reddit.com. praw talks HTTP through
its own `requests` session, not `listener.http`: that is deliberate for the OAuth API, because
praw/prawcore own Reddit's token flow and its X-Ratelimit-* headers (Reddit allows 100 requests a
minute per OAuth client; prawcore paces by those headers, `ratelimit_seconds` bounds how long it
may wait). On top, a per-run request budget (`max_requests`, default 90) keeps one run inside a
minute's allowance. Without credentials the connector degrades to Reddit's public RSS
(`/r/{sub}/new/.rss`, `/search.rss?q=…&sort=new`) through `listener.http` at 10 requests/minute:
no comments, no scores, no deletion checks.

Deleted/removed content: each OAuth run re-reads (via /api/info, 100 ids a request) the items it
yielded within `recheck_window` (default 2d, kept in the cursor) and yields those whose author or
body became "[deleted]"/"[removed]" again, with text "[deleted]" and extra {"deleted": True}, so
storage can purge the stored copy. `recheck(ids)` does the same for any fullnames storage passes in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ClassVar
from urllib.parse import quote_plus, urlsplit

from connectors.base import Connector, advance_stream, alternative_terms, moved, take_new
from connectors.rss import parse_feed
from listener import __version__
from listener.config import SourceConfig, parse_duration
from listener.errors import ParseError, SourceError
from listener.http import HttpClient
from listener.matching import WatchQuery, match_watches
from listener.types import Batch, Cursor, Mention, cap_raw, utcnow

WWW = "https://www.reddit.com"
LISTING_CAP = 1000
"""Reddit listings end after ~1000 items, however far back `after=` paging goes."""
RSS_RATE = 10 / 60
"""Unauthenticated clients get about 10 requests per minute."""
CHUNK = 100
GONE = ("[deleted]", "[removed]")
_THING = re.compile(r"(?:^|/)(t[1-6]_[a-z0-9]+)$|/comments/([a-z0-9]+)(?:/|$)", re.I)
_BOILERPLATE = re.compile(r"\s*submitted by\s*(\S+)\s*to\s*(\S+)\s*(?:\[link\])?\s*(?:\[(\d+) comments?\])?\s*$", re.S)


def _utc(ts: Any) -> datetime:
    return datetime.fromtimestamp(float(ts), UTC)


def _name_of(obj: Any) -> str | None:
    """praw turns authors/subreddits into lazy models; read the name without triggering a fetch."""
    if obj is None:
        return None
    if isinstance(obj, str):
        return obj
    data = vars(obj)
    return data.get("name") or data.get("display_name")


def _raw(d: dict[str, Any]) -> str | None:
    """The API fields as received (praw's own bookkeeping attributes dropped)."""
    skip = {"comment_limit", "comment_sort"}
    return cap_raw({k: v for k, v in d.items()
                    if not k.startswith("_") and k not in skip and isinstance(v, str | int | float | bool | None)})


def parse_praw_submission(submission: Any, *, source: str, fetched_at: datetime | None = None) -> Mention:
    """A praw Submission (as returned by a listing) → Mention. Reads only loaded fields: never fetches."""
    d = vars(submission)
    link = d.get("url") or None
    permalink = d.get("permalink") or ""
    return Mention(
        source=source, kind="reddit", native_id=f"t3_{d['id']}", url=f"{WWW}{permalink}" if permalink else link,
        title=d.get("title") or None, text=d.get("selftext") or "", author=_name_of(d.get("author")),
        created_at=_utc(d["created_utc"]), fetched_at=fetched_at or utcnow(), thread_id=f"t3_{d['id']}",
        score=float(d["score"]) if d.get("score") is not None else None, comments=d.get("num_comments"),
        extra={k: v for k, v in (
            ("subreddit", _name_of(d.get("subreddit"))), ("link", None if d.get("is_self") else link),
            ("flair", d.get("link_flair_text")), ("nsfw", d.get("over_18") or None),
            ("upvote_ratio", d.get("upvote_ratio"))) if v is not None},
        raw=_raw(d),
    )


def parse_praw_comment(comment: Any, *, source: str, fetched_at: datetime | None = None) -> Mention:
    """A praw Comment → Mention; thread_id is the submission fullname, parent_id the comment or post replied to."""
    d = vars(comment)
    permalink = d.get("permalink") or ""
    link_id = d.get("link_id") or None
    if not permalink and link_id:
        permalink = f"/comments/{link_id[3:]}/_/{d['id']}/"
    return Mention(
        source=source, kind="reddit", native_id=f"t1_{d['id']}", url=f"{WWW}{permalink}" if permalink else None,
        title=d.get("link_title") or None, text=d.get("body") or "", author=_name_of(d.get("author")),
        created_at=_utc(d["created_utc"]), fetched_at=fetched_at or utcnow(), thread_id=link_id,
        parent_id=d.get("parent_id") or None, score=float(d["score"]) if d.get("score") is not None else None,
        extra={"subreddit": _name_of(d.get("subreddit"))} if d.get("subreddit") else {},
        raw=_raw(d),
    )


def deletion_of(item: Any, *, source: str) -> Mention | None:
    """A purge marker when a re-read item's author/body became [deleted]/[removed]; None if it is intact."""
    d = vars(item)
    body = d.get("body") if "body" in d else d.get("selftext")
    gone = ("author" in d and d["author"] is None) or body in GONE or d.get("removed_by_category")
    if not gone:
        return None
    is_comment = "body" in d
    reason = body if body in GONE else str(d.get("removed_by_category") or "[deleted]")
    return Mention(
        source=source, kind="reddit", native_id=f"{'t1' if is_comment else 't3'}_{d['id']}",
        url=f"{WWW}{d['permalink']}" if d.get("permalink") else None,
        title=None if is_comment else d.get("title"), text=reason, author=None, created_at=_utc(d["created_utc"]),
        thread_id=d.get("link_id") if is_comment else f"t3_{d['id']}", extra={"deleted": True, "reason": reason},
    )


def normalise_rss_mention(m: Mention) -> Mention:
    """Reddit RSS entries → the same ids/authors as the API (fullname ids, no /u/ prefix, no boilerplate)."""
    found = _THING.search(m.native_id) or _THING.search(urlsplit(m.url or "").path.rstrip("/") + "/")
    native = (found.group(1) or f"t3_{found.group(2)}") if found else m.native_id
    text, author, comments = m.text, m.author, m.comments
    tail = _BOILERPLATE.search(text)
    if tail:
        text = text[: tail.start()].strip()
        author = author or tail.group(1)
        comments = int(tail.group(3)) if tail.group(3) else comments
    if author and author.startswith("/u/"):
        author = author[3:]
    extra = dict(m.extra)
    tags = extra.pop("tags", None)
    if tags:
        extra["subreddit"] = str(tags[0]).removeprefix("r/")
    thread = native if native.startswith("t3_") else None
    return replace(m, native_id=native, text=text, author=author, thread_id=thread, comments=comments, extra=extra)


class RedditConnector(Connector):
    """Posts and comments of subreddits and site-wide search: praw with OAuth, else public RSS (degraded)."""

    kind = "reddit"
    default_rate = 100 / 60
    auth = "OAuth app credentials (optional: RSS fallback)"
    params: ClassVar[dict[str, str]] = {
        "subreddits": 'subreddits whose new posts and comments are read, e.g. ["productivity"]',
        "search": "true: also search all of Reddit for the watch queries (default false)",
        "comments": "true: read the comment trees of matching posts (OAuth only; default false)",
        "client_id": "OAuth app id as { env = … }; without id and secret only public RSS is read",
        "client_secret": "OAuth app secret as { env = … }",
        "username": "optional account as { env = … } (script apps)",
        "password": "its password as { env = … }",
        "reddit_user": "Reddit user named in the User-Agent (default: `username`)",
        "app_id": 'app name in the User-Agent (default "customer-voice-listener")',
        "platform": 'platform in the User-Agent (default "python")',
        "version": "version in the User-Agent (default: the listener's)",
        "comment_threads": "comment trees fetched per run (default 5)",
        "replace_more": '"load more comments" stubs expanded per tree (default 4)',
        "max_requests": "OAuth requests per run (default 90; Reddit allows 100/minute)",
        "ratelimit_seconds": "longest wait praw may take for Reddit's rate limit (default 300)",
        "recheck_window": "how long yielded items are re-checked for deletion (default 2d)",
        "rss_base_url": "address of the public RSS fallback (default https://www.reddit.com)",
    }

    def __init__(self, source: SourceConfig, http: HttpClient, watches: Sequence[WatchQuery] = (),
                 *, session: Any = None) -> None:
        self.session = session
        """A requests.Session for praw (tests inject a cassette replayer)."""
        self.requests_made = 0
        self._reddit: Any = None
        super().__init__(source, http, watches)
        if not self.has_credentials and source.rate is None:
            for host in self.hosts():
                http.set_rate(host, RSS_RATE)

    @property
    def has_credentials(self) -> bool:
        return bool(self.source.secret("client_id") and self.source.secret("client_secret"))

    def hosts(self) -> list[str]:
        return [] if self.has_credentials else [urlsplit(self._rss_base()).netloc]

    def status(self) -> str:
        if self.has_credentials:
            return "ok"
        return "degraded: no Reddit credentials, public RSS only (no comments, no scores)"

    def user_agent(self) -> str:
        """Reddit's required format: `<platform>:<app id>:<version> (by /u/<user>)`."""
        app = self.source.param("app_id", "customer-voice-listener")
        user = self.source.param("reddit_user") or self.source.secret("username")
        base = f"{self.source.param('platform', 'python')}:{app}:{self.source.param('version', __version__)}"
        return f"{base} (by /u/{user})" if user else base

    def subreddits(self) -> list[str]:
        subs = self.source.param("subreddits") or []
        return [str(s).removeprefix("r/").strip("/") for s in subs if str(s).strip()]

    def search_query(self) -> str | None:
        if not self.source.param("search", False):
            return None
        # Each alternative is an AND of words/phrases; alternatives are OR-ed. Exclusions are applied locally.
        terms = alternative_terms(self.watches)
        if not terms:
            raise ParseError(self.name, "reddit `search = true` needs at least one [[watch]] with terms")
        if len(terms) == 1:
            return " ".join(terms[0])[:512]
        return " OR ".join(f"({' '.join(t)})" if len(t) > 1 else t[0] for t in terms)[:512]

    def _rss_base(self) -> str:
        return str(self.source.param("rss_base_url") or WWW).rstrip("/")

    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        if not self.subreddits() and not self.search_query():
            raise ParseError(self.name, "reddit source needs `subreddits = [...]` and/or `search = true`")
        if self.has_credentials:
            import prawcore

            try:
                yield from _OAuthRun(self, cursor).run()
            except prawcore.exceptions.PrawcoreException as exc:
                raise SourceError(self.name, f"Reddit API: {exc.__class__.__name__}: {exc}") from None
        else:
            yield from self._fetch_rss(cursor)

    # -- degraded mode: public RSS through listener.http -----------------------------------------
    def rss_feeds(self) -> list[tuple[str, str]]:
        base = self._rss_base()
        feeds = [(f"r/{s}/new", f"{base}/r/{s}/new/.rss?limit=100") for s in self.subreddits()]
        query = self.search_query()
        if query:
            feeds.append(("search", f"{base}/search.rss?q={quote_plus(query)}&sort=new&limit=100"))
        return feeds

    def _fetch_rss(self, cursor: Cursor) -> Iterator[Batch]:
        lookback = self.source.lookback > timedelta(0)
        yielded: set[str] = set()  # a post found by a subreddit feed and by search is yielded once
        for key, url in self.rss_feeds():
            streams: dict[str, Any] = dict(cursor.extra.get("streams", {}))
            state = dict(streams.get(key, {}))
            resp = self.http.get(url, etag=state.get("etag"), last_modified=state.get("last_modified"))
            if resp.not_modified:
                yield Batch([], cursor, notes=(f"not modified: {key}",))
                continue
            raw, notes = parse_feed(resp.content, source=self.name, kind=self.kind, feed_url=url, headers=resp.headers)
            fresh = take_new((normalise_rss_mention(m) for m in raw), state, self.stream_since(state), lookback)
            if fresh:
                state = {**state, **advance_stream(state, fresh)}
            fresh = [m for m in fresh if m.id not in yielded]
            yielded |= {m.id for m in fresh}
            state.update({k: v for k, v in (("etag", resp.etag), ("last_modified", resp.last_modified)) if v})
            streams[key] = state
            cursor = moved(cursor, fresh, streams=streams)
            yield Batch(fresh, cursor, notes=tuple(notes))

    # -- deleted / removed content -----------------------------------------------------------------
    def recheck(self, ids: Sequence[str]) -> list[Mention]:
        """Re-read fullnames (t1_/t3_) and return purge markers for those now deleted or removed."""
        markers = (deletion_of(item, source=self.name) for item in self.reddit().info(fullnames=list(ids)))
        return [m for m in markers if m is not None]

    def thread(self, submission: str) -> list[Mention]:
        """Comments of one post (id or t3_ fullname), newest sort, `replace_more` "load more" stubs expanded."""
        post = self.reddit().submission(id=submission.removeprefix("t3_"))
        post.comment_sort = "new"
        post.comments.replace_more(limit=int(self.source.param("replace_more", 4)))
        return [parse_praw_comment(c, source=self.name) for c in post.comments.list() if type(c).__name__ == "Comment"]

    def reddit(self) -> Any:
        """The praw client, built once per connector (one token, one request counter)."""
        if self._reddit is None:
            self._reddit = self._build_reddit()
        return self._reddit

    def _build_reddit(self) -> Any:
        import praw  # optional at import time so RSS-only installs still load this module

        kwargs: dict[str, Any] = {
            "client_id": self.source.secret("client_id"), "client_secret": self.source.secret("client_secret"),
            "user_agent": self.user_agent(), "ratelimit_seconds": int(self.source.param("ratelimit_seconds", 300)),
            "check_for_updates": False, "check_for_async": False,
        }
        username, password = self.source.secret("username"), self.source.secret("password")
        if username and password:
            kwargs.update(username=username, password=password)
        if self.session is None:
            import requests

            self.session = requests.Session()
        self.session.hooks.setdefault("response", []).append(self._count)  # the per-run request budget
        return praw.Reddit(**kwargs, requestor_kwargs={"session": self.session})

    def _count(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        self.requests_made += 1
        return response


class _OAuthRun:
    """One OAuth fetch: recheck recent items, then each stream oldest-first in committed chunks."""

    def __init__(self, connector: RedditConnector, cursor: Cursor) -> None:
        self.c = connector
        self.cursor = cursor
        self.reddit = connector.reddit()
        self.budget = int(connector.source.param("max_requests", 90))
        self.seen: set[str] = set()
        self.threads_left = int(connector.source.param("comment_threads", 5))

    def run(self) -> Iterator[Batch]:
        yield from self._recheck_recent()
        for key, listing in self._streams():
            if self.c.requests_made >= self.budget:
                yield Batch([], self.cursor, notes=(f"request budget of {self.budget} reached; {key} waits",))
                continue
            yield from self._stream(key, listing)

    def _streams(self) -> Iterator[tuple[str, Callable[[], Iterable[Any]]]]:
        r = self.reddit
        for sub in self.c.subreddits():
            subreddit = r.subreddit(sub)  # lazy: no request until a listing is iterated
            yield f"r/{sub}/new", partial(subreddit.new, limit=None, request_limit=CHUNK)
            yield f"r/{sub}/comments", partial(subreddit.comments, limit=None, request_limit=CHUNK)
        query = self.c.search_query()
        if query:
            yield "search", partial(r.subreddit("all").search, query, sort="new", time_filter="all", limit=None,
                                    request_limit=CHUNK)

    def _stream(self, key: str, listing: Callable[[], Iterable[Any]]) -> Iterator[Batch]:
        import prawcore

        streams: dict[str, Any] = dict(self.cursor.extra.get("streams", {}))
        state = dict(streams.get(key, {}))
        since = self.c.stream_since(state)
        items: list[Mention] = []
        exhausted = True
        try:
            for thing in listing():
                parse = parse_praw_comment if type(thing).__name__ == "Comment" else parse_praw_submission
                m = parse(thing, source=self.c.name)
                items.append(m)
                if m.created_at < since:
                    exhausted = False
                    break
        except prawcore.exceptions.Forbidden as exc:
            why = "private, quarantined or banned"
            raise SourceError(self.c.name, f"{key}: HTTP 403 Forbidden ({why}): {exc}") from None
        except (prawcore.exceptions.ResponseException, prawcore.exceptions.RequestException) as exc:
            raise SourceError(self.c.name, f"{key}: {exc}") from None
        notes = []
        oldest = min((m.created_at for m in items), default=None)
        cursor_known = state.get("t") is not None
        if exhausted and oldest and oldest > since and (cursor_known or len(items) >= LISTING_CAP * 0.9):
            notes.append(f"{key}: backlog larger than the 1000-item listing cap; items before "
                         f"{oldest.isoformat()} may be missing")
        fresh = [m for m in take_new(items, state, since, self.c.source.lookback > timedelta(0))
                 if m.id not in self.seen]
        for start in range(0, max(len(fresh), 1), CHUNK):
            chunk = fresh[start : start + CHUNK]
            if chunk:
                state = advance_stream(state, chunk)
            streams[key] = state
            out = chunk + self._threads(chunk)
            self.seen |= {m.id for m in out}
            self.cursor = moved(self.cursor, out, streams=streams, recent=self._recent(out))
            yield Batch(out, self.cursor, notes=tuple(notes) if start == 0 else ())

    def _threads(self, chunk: Sequence[Mention]) -> list[Mention]:
        """Comment trees of posts that matched a watch (all posts when match = "all"), bounded per run."""
        if not self.c.source.param("comments", False):
            return []
        out: list[Mention] = []
        for m in chunk:
            if not m.native_id.startswith("t3_") or self.threads_left <= 0 or self.c.requests_made >= self.budget:
                continue
            if self.c.source.match != "all" and not match_watches(m.body, self.c.watches):
                continue
            self.threads_left -= 1
            out.extend(self.c.thread(m.native_id))
        return [m for m in out if m.id not in self.seen]

    def _recent(self, out: Sequence[Mention]) -> list[list[Any]]:
        window = parse_duration(str(self.c.source.param("recheck_window", "2d")))
        floor = (utcnow() - window).timestamp()
        recent = [r for r in self.cursor.extra.get("recent", []) if r[1] >= floor]
        recent += [[m.native_id, m.created_at.timestamp()] for m in out if m.created_at.timestamp() >= floor]
        return recent[-300:]

    def _recheck_recent(self) -> Iterator[Batch]:
        recent = list(self.cursor.extra.get("recent", []))
        if not recent:
            return
        gone = self.c.recheck([r[0] for r in recent])
        dead = {m.native_id for m in gone}
        kept = [r for r in recent if r[0] not in dead]
        self.cursor = self.cursor.advanced(extra={**self.cursor.extra, "recent": kept})
        note = (f"{len(gone)} recently stored items were deleted or removed",) if gone else ()
        yield Batch(gone, self.cursor, notes=note)
