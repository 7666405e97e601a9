"""Four fake services (RSS, HN Algolia, Discourse, App Store) on one ReplayServer, with items added on demand.

`Services.add(kind)` publishes one more item (newer than all before); `faults` replaces a kind's
routes with a fault handler. `config()` builds a Config with one source per kind, `match = "all"`,
so every served item is stored and ids can be compared exactly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from listener.config import Config, SourceConfig
from listener.types import mention_id
from tests.support.server import ReplayServer, Reply, Seen

KINDS = ("rss", "hackernews", "discourse", "appstore")
SOURCE_OF = {"rss": "feed", "hackernews": "hn", "discourse": "forum", "appstore": "reviews"}
APP_ID = "123456"
PREFIX = {"rss": "/rss", "hackernews": "/hn", "discourse": "/forum", "appstore": "/apple"}


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Services:
    server: ReplayServer
    start: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(days=2))
    items: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})
    faults: dict[str, Callable[[Seen], Reply]] = field(default_factory=dict)
    counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        routes = {
            "rss": {"/rss/feed.xml": self._rss},
            "hackernews": {"/hn/search_by_date": self._hn},
            "discourse": {"/forum/latest.json": self._latest, "/forum/t/1.json": self._topic},
            "appstore": {f"/apple/us/rss/customerreviews/page=1/id={APP_ID}/sortby=mostrecent/json": self._apple},
        }
        self._handlers: dict[str, Callable[[Seen], Reply]] = {}
        for kind, table in routes.items():
            for path, handler in table.items():
                self.server.routes[path] = self._guard(kind, handler)
                self._handlers[path] = handler

    def serve(self, seen: Seen) -> Reply:
        """The healthy answer for `seen` (fault handlers wrap this)."""
        return self._handlers[seen.path](seen)

    def _guard(self, kind: str, handler: Callable[[Seen], Reply]) -> Callable[[Seen], Reply]:
        def route(seen: Seen) -> Reply:
            fault = self.faults.get(kind)
            return fault(seen) if fault is not None else handler(seen)

        return route

    # -- publishing -----------------------------------------------------------------------------
    def add(self, kind: str, n: int = 1) -> None:
        with self.lock:
            for _ in range(n):
                self.counter += 1
                self.items[kind].append(self.counter)

    def when(self, n: int) -> datetime:
        return self.start + timedelta(seconds=10 * n)

    def native_ids(self, kind: str) -> set[str]:
        if kind == "rss":
            return {f"urn:item:{n}" for n in self.items[kind]}
        return {str(1000 + n) for n in self.items[kind]}

    def mention_ids(self, kind: str) -> set[str]:
        return {mention_id(SOURCE_OF[kind], native) for native in self.native_ids(kind)}

    # -- the services ---------------------------------------------------------------------------
    def _rss(self, seen: Seen) -> Reply:
        entries = "".join(
            f"<item><guid>urn:item:{n}</guid><title>Acme item {n}</title><description>customer words {n}"
            f"</description><pubDate>{self.when(n):%a, %d %b %Y %H:%M:%S} GMT</pubDate></item>"
            for n in reversed(self.items["rss"])
        )
        body = f'<?xml version="1.0"?><rss version="2.0"><channel><title>f</title>{entries}</channel></rss>'
        return Reply(body=body.encode(), content_type="application/rss+xml")

    def _hn(self, seen: Seen) -> Reply:
        hits = [
            {
                "objectID": str(1000 + n),
                "created_at_i": int(self.when(n).timestamp()),
                "title": f"Acme story {n}",
                "_tags": ["story"],
                "author": f"user{n}",
                "points": n,
                "num_comments": 0,
            }
            for n in reversed(self.items["hackernews"])
        ]
        return json_reply({"hits": hits, "nbPages": 1, "page": 0})

    def _latest(self, seen: Seen) -> Reply:
        posts = self.items["discourse"]
        if not posts:
            return json_reply({"topic_list": {"topics": []}})
        last = _iso(self.when(posts[-1]))
        return json_reply(
            {
                "topic_list": {
                    "topics": [
                        {"id": 1, "title": "Acme", "last_posted_at": last, "created_at": _iso(self.when(posts[0]))}
                    ]
                }
            }
        )

    def _topic(self, seen: Seen) -> Reply:
        posts = [
            {
                "id": 1000 + n,
                "post_number": i + 1,
                "topic_id": 1,
                "created_at": _iso(self.when(n)),
                "cooked": f"<p>Acme post {n}</p>",
                "username": f"user{n}",
            }
            for i, n in enumerate(self.items["discourse"])
        ]
        return json_reply(
            {
                "id": 1,
                "title": "Acme",
                "slug": "acme",
                "post_stream": {"posts": posts, "stream": [p["id"] for p in posts]},
            }
        )

    def _apple(self, seen: Seen) -> Reply:
        entries = [
            {
                "id": {"label": str(1000 + n)},
                "im:rating": {"label": "4"},
                "updated": {"label": _iso(self.when(n))},
                "title": {"label": f"Review {n}"},
                "content": {"label": f"Acme review {n}"},
                "author": {"name": {"label": f"user{n}"}},
            }
            for n in reversed(self.items["appstore"])
        ]
        return json_reply({"feed": {"updated": {"label": _iso(self.start)}, "entry": entries}})

    # -- configuration --------------------------------------------------------------------------
    def sources(self, **overrides: dict[str, Any]) -> tuple[SourceConfig, ...]:
        url = self.server.url
        params: dict[str, dict[str, Any]] = {
            "rss": {"url": f"{url}/rss/feed.xml"},
            "hackernews": {"base_url": f"{url}/hn", "queries": ["acme"], "context": False},
            "discourse": {"base_url": f"{url}/forum", "mode": "latest"},
            "appstore": {"base_url": f"{url}/apple", "app_id": APP_ID, "country": "us", "pages": 1},
        }
        return tuple(
            SourceConfig(
                SOURCE_OF[k], k, {**params[k], **overrides.get(k, {})}, backfill=timedelta(days=30), match="all"
            )
            for k in KINDS
        )

    def config(self, **overrides: dict[str, Any]) -> Config:
        return Config(path=None, sources=self.sources(**overrides))

    def toml(self, database: str, *, rate: float | None = None, extra: str = "") -> str:
        """The same sources as a listener.toml, for the CLI subprocess tests."""
        lines = ['[listener]\ncontact = "rel@example.com"\n', f'[storage]\ndatabase = "{database}"\n']
        for s in self.sources():
            lines.append("[[source]]")
            lines.append(f'name = "{s.name}"\nkind = "{s.kind}"\nmatch = "all"\nbackfill = "30d"')
            if rate is not None:
                lines.append(f"rate = {rate}")
            for key, value in s.params.items():
                lines.append(f"{key} = {json.dumps(value)}")
            lines.append("")
        return "\n".join(lines) + extra


def json_reply(payload: Any, **kwargs: Any) -> Reply:
    return Reply(body=json.dumps(payload).encode(), content_type="application/json", **kwargs)
