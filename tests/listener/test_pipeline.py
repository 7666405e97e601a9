"""Pipeline end to end against a local server: fetch → match → store, isolation of failures, idempotence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from listener.config import Config, SourceConfig
from listener.http import HttpClient
from listener.matching import WatchQuery
from listener.pipeline import Pipeline, keep_matching
from listener.types import Mention, utcnow
from storage import Store
from tests.support.postgres import BACKENDS
from tests.support.server import ReplayServer, Reply

FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><guid>1</guid><title>Acme sync is broken</title><description>since the update</description><pubDate>Mon, 23 Nov 2026 10:00:00 GMT</pubDate></item>
<item><guid>2</guid><title>Unrelated</title><description>cats</description><pubDate>Mon, 23 Nov 2026 11:00:00 GMT</pubDate></item>
<item><guid>3</guid><title>Notably vs acme</title><description>which one?</description><pubDate>Mon, 23 Nov 2026 12:00:00 GMT</pubDate></item>
</channel></rss>"""


def config(url: str, *, match: str = "watch", extra: tuple[SourceConfig, ...] = ()) -> Config:
    return Config(
        path=None,
        watches=(WatchQuery.build("acme", ["acme"]), WatchQuery.build("notably", ["notably"], competitor=True)),
        sources=(SourceConfig("feed", "rss", {"url": url}, backfill=timedelta(days=3650), match=match), *extra),
    )


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The pipeline on both stores: SQLite (embedded default) and PostgreSQL (servers)."""
    target = request.getfixturevalue("pg_url") if request.param == "postgres" else str(tmp_path / "t.db")
    s = Store.open(target)
    yield s
    s.close()


def test_fetch_match_store_and_idempotent(replay_server: ReplayServer, http: HttpClient, store: Store) -> None:
    replay_server.routes["/feed"] = Reply(body=FEED, content_type="application/rss+xml")
    pipeline = Pipeline(config(replay_server.url + "/feed"), store, http)
    [run] = pipeline.run()
    assert (run.status, run.fetched, run.kept, run.new) == ("ok", 3, 2, 2)
    page = store.search("acme")
    assert {i.mention.native_id for i in page.items} == {"1", "3"}
    both = store.get_mention(next(i.id for i in page.items if i.mention.native_id == "3"))
    assert both is not None and both.matched == ("acme", "notably")
    [again] = pipeline.run()
    assert (again.new, again.duplicates) == (0, 2)
    state = {s.source: s for s in store.source_states()}["feed"]
    assert state.consecutive_failures == 0 and state.last_success_at is not None


def test_match_all_keeps_everything(replay_server: ReplayServer, http: HttpClient, store: Store) -> None:
    replay_server.routes["/feed"] = Reply(body=FEED, content_type="application/rss+xml")
    [run] = Pipeline(config(replay_server.url + "/feed", match="all"), store, http).run()
    assert run.new == 3


def test_one_failing_source_never_stops_the_others(replay_server: ReplayServer, http: HttpClient, store: Store) -> None:
    replay_server.routes["/feed"] = Reply(body=FEED, content_type="application/rss+xml")
    replay_server.routes["/broken"] = Reply(body=b"<html>login</html>", content_type="text/html")
    bad = SourceConfig("bad", "rss", {"url": replay_server.url + "/broken"})
    cfg = config(replay_server.url + "/feed", extra=(bad,))
    cfg = Config(path=None, watches=cfg.watches, sources=(bad, cfg.sources[0]))
    runs = {r.source: r for r in Pipeline(cfg, store, http).run()}
    assert runs["bad"].status == "failed" and "not a feed" in (runs["bad"].error or "")
    assert runs["feed"].status == "ok" and runs["feed"].new == 2
    states = {s.source: s for s in store.source_states()}
    assert states["bad"].consecutive_failures == 1 and "not a feed" in (states["bad"].last_error or "")
    Pipeline(cfg, store, http).run(["bad"])
    assert {s.source: s for s in store.source_states()}["bad"].consecutive_failures == 2


def test_keep_matching_merges_connector_matches() -> None:
    src = SourceConfig("s", "rss")
    cfg = Config(path=None, watches=(WatchQuery.build("acme", ["acme"]),))
    m = Mention(
        source="s",
        kind="rss",
        native_id="x",
        url=None,
        title=None,
        text="acme!",
        author=None,
        created_at=utcnow(),
        matched=("pre",),
    )
    [kept] = keep_matching(src, cfg, [m])
    assert kept.matched == ("pre", "acme")
