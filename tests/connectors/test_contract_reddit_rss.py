"""Reddit without credentials: public RSS/Atom through HttpClient, normalised to API-style ids."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.reddit import RSS_RATE, RedditConnector, normalise_rss_mention
from connectors.rss import parse_feed
from listener.errors import ParseError
from listener.matching import WatchQuery
from tests.connectors.contract import HTML_PAGE, check_contract, make_source, query_value, run
from tests.support.server import ReplayServer, Reply

FEEDS = "rss_realworld/rss_parser/input"


def feed(corpora: Path, name: str) -> bytes:
    return (corpora / FEEDS / name).read_bytes()


def parsed(corpora: Path, name: str) -> list[Any]:
    mentions, _ = parse_feed(feed(corpora, name), source="reddit", kind="reddit")
    return [normalise_rss_mention(m) for m in mentions]


def test_atom_feed_normalised(corpora: Path) -> None:
    mentions = parsed(corpora, "reddit-home.rss")
    first = mentions[0]
    assert first.native_id == "t3_42tizy" and first.thread_id == "t3_42tizy"
    assert first.author == "AngryRedditorsBelow"
    assert first.title == "How the British as seen by Americans and Europeans"
    assert first.url == "https://www.reddit.com/r/funny/comments/42tizy/how_the_british_as_seen_by_americans_and_europeans/"
    assert first.created_at == datetime(2016, 1, 26, 20, 31, 34, tzinfo=UTC)
    assert first.comments == 1143
    assert first.extra["subreddit"] == "funny"
    assert "submitted by" not in first.text
    assert all(m.native_id.startswith("t3_") for m in mentions)


def test_rss2_feed_normalised(corpora: Path) -> None:
    mentions = parsed(corpora, "reddit.rss")
    first = mentions[0]
    assert first.native_id == "t3_3skxqc"
    assert first.author == "cakebeerandmorebeer"  # only in the "submitted by" line of RSS 2.0
    assert first.comments == 275 and first.extra["subreddit"] == "funny"
    ama = mentions[1]
    assert ama.native_id == "t3_3sl82z"
    assert ama.text.startswith("It's Aziz Ansari.") and "submitted by" not in ama.text
    assert ama.created_at == datetime(2015, 11, 12, 22, 27, 28, tzinfo=UTC)


def serve(server: ReplayServer, corpora: Path) -> None:
    server.routes["/r/funny/new/.rss"] = Reply(200, feed(corpora, "reddit.rss"), content_type="application/rss+xml")
    server.routes["/r/space/new/.rss"] = Reply(200, feed(corpora, "reddit-atom.rss"),
                                               content_type="application/rss+xml")
    server.routes["/search.rss"] = Reply(200, feed(corpora, "reddit-home.rss"), content_type="application/atom+xml")


def make(server: ReplayServer, http: Any) -> RedditConnector:
    source = make_source("reddit", "reddit", rss_base_url=server.url, subreddits=["funny", "r/space"], search=True)
    watches = [WatchQuery.build("acme", ['acme OR "acme cloud" -hiring'])]
    return RedditConnector(source, http, watches)


def test_contract(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    serve(replay_server, corpora)
    full = check_contract(lambda: make(replay_server, http), replay_server, expect_min=70, json_api=False)
    assert len(full) == len({m.native_id for m in full}) >= 70
    search = replay_server.hits("/search.rss")[0]
    assert query_value(search, "q") == 'acme OR "acme cloud"' and query_value(search, "sort") == "new"


def test_degraded_status_and_rate(http: Any) -> None:
    connector = RedditConnector(make_source("reddit", "reddit", subreddits=["acme"]), http)
    assert connector.status() == "degraded: no Reddit credentials, public RSS only (no comments, no scores)"
    assert connector.hosts() == ["www.reddit.com"]
    assert http._limiters["www.reddit.com"].interval == pytest.approx(1 / RSS_RATE)
    assert connector.rss_feeds() == [("r/acme/new", "https://www.reddit.com/r/acme/new/.rss?limit=100")]


def test_html_instead_of_feed_fails_loudly(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    serve(replay_server, corpora)
    replay_server.routes["/r/space/new/.rss"] = Reply(200, HTML_PAGE, content_type="text/html")
    with pytest.raises(ParseError, match="not a feed"):
        run(make(replay_server, http))


def test_nothing_to_listen_to(http: Any) -> None:
    with pytest.raises(ParseError, match="needs `subreddits"):
        run(RedditConnector(make_source("reddit", "reddit"), http))
    with pytest.raises(ParseError, match="at least one"):
        run(RedditConnector(make_source("reddit", "reddit", search=True), http))
