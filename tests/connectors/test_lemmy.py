"""Lemmy parsing and paging on fixtures recorded in the documented v3 shapes (fixtures/lemmy/SOURCES.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.lemmy import LemmyConnector, parse_lemmy
from listener.errors import ParseError, SourceError
from listener.http import HttpClient
from listener.matching import WatchQuery
from listener.types import Cursor
from tests.connectors.contract import json_file, json_reply, make_source, query_value, run
from tests.support.server import ReplayServer, Reply, Seen

FIXTURES = Path(__file__).parent / "fixtures" / "lemmy"
BASE = "https://lemmy.ml"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_bytes())


def post_list(seen: Seen) -> Reply:
    name = "post_list_new_page2.json" if query_value(seen, "page_cursor") == "Pa1199310" else "post_list_new_page1.json"
    return json_file(FIXTURES / name)


def serve(server: ReplayServer) -> None:
    server.routes["/api/v3/search"] = json_file(FIXTURES / "search_all_new.json")
    server.routes["/api/v3/post/list"] = post_list


def connector(server: ReplayServer, http: HttpClient, **params: Any) -> LemmyConnector:
    source = make_source("lemmy", "lemmy", base_url=server.url, **params)
    return LemmyConnector(source, http, [WatchQuery.build("acme", ['"acme cloud" -hiring'])])


def test_parse_search_posts_and_comments() -> None:
    mentions, notes = parse_lemmy(load("search_all_new.json"), source="l", base_url=BASE)
    assert notes == []  # deleted items are dropped quietly: they are gone, not malformed
    by_id = {m.native_id: m for m in mentions}
    assert sorted(by_id) == ["comment/6631502", "comment/6633120", "post/1184377", "post/1190021"]
    post = by_id["post/1184377"]
    assert post.title == "Acme Cloud backups silently failing since the 4.2 update?"
    assert post.text.startswith("Since updating to **4.2**")
    assert post.author == "alice_k@lemmy.ml" and post.url == "https://lemmy.ml/post/1184377"
    assert post.created_at == datetime(2024, 3, 5, 9, 12, 44, 318220, tzinfo=UTC)
    assert post.score == 23.0 and post.comments == 2 and post.extra["community"] == "selfhosted@lemmy.ml"
    federated = by_id["post/1190021"]
    assert federated.author == "bobw@feddit.de" and federated.text == ""
    assert federated.extra["link"] == "https://example.org/blog/leaving-acme"
    assert federated.extra["community"] == "technology@lemmy.world"
    top, reply = by_id["comment/6631502"], by_id["comment/6633120"]
    assert top.parent_id == "post/1184377" and top.thread_id == "post/1184377"
    assert reply.parent_id == "comment/6631502" and reply.author == "alice_k@lemmy.ml"
    assert top.score == 7.0 and top.comments == 1 and top.title is None
    assert top.extra["post_title"].startswith("Acme Cloud backups")
    assert reply.url == "https://lemmy.ml/comment/6633120"


def test_naive_018_timestamps_are_utc_and_bad_items_noted() -> None:
    payload = load("search_all_new.json")
    payload["posts"][0]["post"]["published"] = "2024-03-06T17:40:03.005112"  # 0.18 sent no zone
    payload["comments"][0]["comment"].pop("post_id")
    mentions, notes = parse_lemmy(payload, source="l", base_url=BASE)
    assert {m.native_id: m.created_at for m in mentions}["post/1190021"] == datetime(
        2024, 3, 6, 17, 40, 3, 5112, tzinfo=UTC)
    assert notes == ["skipped a malformed comment"]
    with pytest.raises(ParseError, match="'posts'/'comments'"):
        parse_lemmy({"error": "couldnt_find_community"}, source="l", base_url=BASE)


def test_search_each_phrase_and_community_paging(replay_server: ReplayServer, http: HttpClient) -> None:
    serve(replay_server)
    batches, mentions = run(connector(replay_server, http, communities=["selfhosted"]))
    times = [m.created_at for m in mentions]
    assert times == sorted(times)
    assert {m.native_id for m in mentions} == {"comment/6631502", "comment/6633120", "post/1184377",
                                               "post/1190021", "post/1199310", "post/1201555"}
    search = replay_server.hits("/api/v3/search")
    assert [query_value(s, "q") for s in search] == ["acme cloud"]
    assert query_value(search[0], "type_") == "All" and query_value(search[0], "sort") == "New"
    pages = replay_server.hits("/api/v3/post/list")
    assert [query_value(p, "page_cursor") for p in pages] == [None, "Pa1199310"]
    assert query_value(pages[0], "community_name") == "selfhosted"
    assert batches[-1].cursor.last_time == datetime(2024, 3, 8, 6, 0, tzinfo=UTC)


def test_incremental_stops_paging_at_the_cursor(replay_server: ReplayServer, http: HttpClient) -> None:
    serve(replay_server)
    start = Cursor(last_time=datetime(2024, 3, 7, 12, 0, tzinfo=UTC))
    _, mentions = run(connector(replay_server, http, communities="selfhosted", queries=[]), start)
    assert [m.native_id for m in mentions] == ["post/1199310", "post/1201555"]
    assert len(replay_server.hits("/api/v3/post/list")) == 2
    start = Cursor(last_time=datetime(2024, 3, 7, 13, 0, tzinfo=UTC))  # page 1 already reaches back
    _, mentions = run(connector(replay_server, http, communities="selfhosted", queries=[]), start)
    assert [m.native_id for m in mentions] == ["post/1201555"]
    assert len(replay_server.hits("/api/v3/post/list")) == 3


def test_needs_base_url_and_something_to_read(replay_server: ReplayServer, http: HttpClient) -> None:
    with pytest.raises(SourceError, match="needs `base_url`"):
        run(LemmyConnector(make_source("l", "lemmy"), http, [WatchQuery.build("a", ["acme"])]))
    with pytest.raises(SourceError, match="needs `communities`"):
        run(LemmyConnector(make_source("l", "lemmy", base_url=replay_server.url), http))
    replay_server.routes["/api/v3/search"] = json_reply({"error": "rate_limit_error"})
    with pytest.raises(ParseError, match=r"rate_limit|'posts'"):
        run(connector(replay_server, http))
