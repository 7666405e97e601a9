"""Discourse parsing and paging on real captures (discourse/SOURCES.md: perceval, discourse_api gem,
discuss.criticalfallibilism.com)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.discourse import (
    DiscourseConnector,
    parse_discourse_posts,
    parse_search,
    parse_topic_list,
    topic_activity,
)
from listener.config import Secret
from listener.errors import ParseError, SourceError
from listener.http import HttpClient
from listener.matching import WatchQuery
from listener.types import Cursor
from tests.connectors.contract import json_file, json_reply, make_source, run
from tests.support.server import ReplayServer, Reply, Seen

CF = "criticalfallibilism_capture"
BASE = "https://discuss.example"


def load(corpora: Path, name: str) -> Any:
    return json.loads((corpora / "discourse" / name).read_bytes())


def posts_by_ids(*payloads: Any) -> Any:
    """`/t/{id}/posts.json?post_ids[]=…` as Discourse answers it, over the real posts we hold."""
    known = {p["id"]: p for payload in payloads for p in payload["post_stream"]["posts"]}

    def handler(seen: Seen) -> Reply:
        wanted = {int(i) for i in seen.query.get("post_ids[]", [])}
        topic_id = int(seen.path.split("/")[2])
        posts = sorted((p for i, p in known.items() if i in wanted), key=lambda p: p["post_number"])
        return json_reply({"post_stream": {"posts": posts}, "id": topic_id})

    return handler


def search_reply(topic_view: dict[str, Any]) -> dict[str, Any]:
    """/search.json in the documented shape (docs.discourse.org, operation `search`): no real capture exists,
    so the topic entry is cut from a real topic view."""
    keys = ("id", "title", "fancy_title", "slug", "posts_count", "highest_post_number", "created_at",
            "last_posted_at", "category_id", "tags")
    return {"posts": [], "users": [], "categories": [], "groups": [],
            "topics": [{k: topic_view.get(k) for k in keys}],
            "grouped_search_result": {"term": "feminism", "more_full_page_results": None, "post_ids": []}}


def test_parse_topic_lists(corpora: Path) -> None:
    topics, more = parse_topic_list(load(corpora, "perceval/discourse_topics.json"), source="d")
    assert [t["id"] for t in topics] == [1148, 1149] and more is None
    assert topic_activity(topics[0]) == datetime(2016, 5, 25, 2, 52, 49, 526000, tzinfo=UTC)
    nulls, _ = parse_topic_list(load(corpora, "perceval/discourse_topics_last_posted_at_null.json"), source="d")
    assert topic_activity(nulls[0]) == datetime(2017, 8, 14, 19, 46, 41, 794000, tzinfo=UTC)  # bumped_at
    assert parse_topic_list(load(corpora, "perceval/discourse_topics_empty.json"), source="d") == ([], None)
    _, more = parse_topic_list(load(corpora, "discourse_api_gem/latest.json"), source="d")
    assert more == "/latest.json?page=1"
    with pytest.raises(ParseError, match=r"topic_list\.topics"):
        parse_topic_list(load(corpora, "discourse_api_gem/posts_latest.json"), source="d")


def test_parse_topic_view_posts(corpora: Path) -> None:
    view = load(corpora, f"{CF}/t_2108_post_452.json")
    mentions, stream, notes = parse_discourse_posts(view, source="d", base_url=BASE)
    assert notes == [] and len(stream) == 446 and len(mentions) == 20
    last = mentions[-1]
    assert last.native_id == "20181" and last.author == "anonymous45"
    assert last.url == f"{BASE}/t/comments-on-the-boyfriends-introduction-to-feminism/2108/452"
    assert last.created_at == datetime(2026, 1, 19, 0, 47, 25, 767000, tzinfo=UTC)
    assert last.thread_id == "2108" and last.title is None
    assert last.extra["topic_title"] == "Comments on The Boyfriend's Introduction to Feminism"
    assert last.extra["reply_to_post_number"] == 451
    assert "<p>" not in last.text and last.text
    liked = {m.extra["post_number"]: m.score for m in mentions}
    assert liked[440] == 1.0 and liked[439] is None
    assert not any("accepted_answer" in m.extra for m in mentions)


def test_parse_offsets_likes_and_first_post_title(corpora: Path) -> None:
    mentions, stream, _ = parse_discourse_posts(load(corpora, "discourse_api_gem/topic.json"), source="d", base_url=BASE)
    assert stream == [83, 84, 86, 226]
    first = mentions[0]
    assert first.title == "THIS SITE IS A SANDBOX -- it is reset every day"
    assert first.created_at == datetime(2013, 2, 4, 20, 26, 26, 278000, tzinfo=UTC)  # -05:00 converted
    assert first.url == f"{BASE}/t/this-site-is-a-sandbox-it-is-reset-every-day/57/1"
    assert [m.score for m in mentions] == [0.0, 0.0, 5.0, 5.0]
    assert mentions[2].text == "http://i288.photobucket.com/albums/ll164/stienman/ahh.gif"  # image-only post
    assert mentions[3].extra["post_number"] == 14 and mentions[3].extra["reply_to_post_number"] == 1


def test_accepted_answers_are_marked(corpora: Path) -> None:
    payload = load(corpora, "perceval/discourse_posts.json")
    assert all(p["accepted_answer"] is False for p in payload["post_stream"]["posts"])
    payload["post_stream"]["posts"][2]["accepted_answer"] = True  # as the Solved plugin marks an answer
    payload["accepted_answer"] = {"post_number": 3, "username": "jprause"}
    mentions, _, _ = parse_discourse_posts(payload, source="d", base_url=BASE)
    assert mentions[2].native_id == "4393" and mentions[2].extra["accepted_answer"] is True
    assert all(m.extra["topic_has_accepted_answer"] for m in mentions)
    assert not any(m.extra.get("accepted_answer") for m in mentions if m.native_id != "4393")


def test_malformed_posts_are_skipped_not_fatal(corpora: Path) -> None:
    payload = load(corpora, f"{CF}/t_2144_posts_pn_5.json")
    payload["post_stream"]["posts"][1].pop("created_at")
    payload["post_stream"]["posts"].append("junk")
    mentions, _, notes = parse_discourse_posts(payload, source="d", base_url=BASE)
    assert [m.native_id for m in mentions] == ["20110", "20102", "20089"]
    assert notes == ["skipped post 20104: malformed or empty", "skipped post None: malformed or empty"]
    with pytest.raises(ParseError, match=r"post_stream\.posts"):
        parse_discourse_posts(load(corpora, "discourse_api_gem/search.json"), source="d", base_url=BASE)


def test_parse_search_collects_topics_of_posts() -> None:
    payload = {"posts": [{"id": 9, "topic_id": 77, "created_at": "2024-01-02T00:00:00Z", "blurb": "…"}],
               "topics": [{"id": 5, "last_posted_at": "2024-01-01T00:00:00Z"}],
               "grouped_search_result": {"more_full_page_results": True}}
    topics, more = parse_search(payload, source="d")
    assert sorted(t["id"] for t in topics) == [5, 77] and more is True
    with pytest.raises(ParseError, match="search result"):
        parse_search([{"type": "topic", "results": []}], source="d")


def serve_2108(server: ReplayServer, corpora: Path) -> None:
    view = load(corpora, f"{CF}/t_2108_post_452.json")
    server.routes["/search.json"] = json_reply(search_reply(view))
    server.routes["/t/2108.json"] = json_file(corpora / "discourse" / CF / "t_2108_post_452.json")
    server.routes["/t/2108/posts.json"] = posts_by_ids(
        view, load(corpora, f"{CF}/t_2108_posts.json"), load(corpora, f"{CF}/t_2108_posts_pn_41.json"))


def search_2108(server: ReplayServer, http: HttpClient, corpora: Path) -> DiscourseConnector:
    """Topic 2108 served (see `serve_2108`) and a search-mode connector looking for "feminism" in it."""
    serve_2108(server, corpora)
    source = make_source("cf", "discourse", base_url=server.url)
    return DiscourseConnector(source, http, [WatchQuery.build("fem", ["feminism"])])


def test_search_mode_pages_the_post_stream_tail_first(replay_server: ReplayServer, http: HttpClient,
                                                      corpora: Path) -> None:
    batches, mentions = run(search_2108(replay_server, http, corpora))
    assert len(mentions) == 60  # posts 1-40 and 433-452: the ones the captures hold
    assert {m.extra["post_number"] for m in mentions} == set(range(1, 41)) | set(range(433, 453))
    search = replay_server.hits("/search.json")[0]
    assert search.query["q"][0].startswith("feminism after:") and search.query["q"][0].endswith(" order:latest")
    pages = replay_server.hits("/t/2108/posts.json")
    assert len(pages) == 22 and all(1 <= len(p.query["post_ids[]"]) <= 20 for p in pages)
    assert pages[0].query["post_ids[]"][-1] == "19901"  # the stream id just before post 433 (19902)
    by_number = {m.extra["post_number"]: m for m in mentions}
    assert by_number[452].parent_id == by_number[451].native_id == "20166"
    assert by_number[22].parent_id == by_number[19].native_id
    assert batches[-1].cursor.extra["topic_mark"] == "2026-01-19T00:47:25.767000+00:00"
    assert "run" not in batches[-1].cursor.extra


def test_incremental_stops_walking_back_at_old_posts(replay_server: ReplayServer, http: HttpClient,
                                                     corpora: Path) -> None:
    since = datetime(2025, 9, 29, 13, 0, tzinfo=UTC)  # between posts 25 and 26
    _, mentions = run(search_2108(replay_server, http, corpora), Cursor(last_time=since))
    assert min(m.extra["post_number"] for m in mentions) == 26
    asked = {i for p in replay_server.hits("/t/2108/posts.json") for i in p.query["post_ids[]"]}
    assert "18869" in asked and "18843" not in asked  # post 21's chunk fetched, post 1's never


def test_api_key_headers_only_when_configured(replay_server: ReplayServer, http: HttpClient, corpora: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    replay_server.routes["/latest.json"] = json_file(corpora / "discourse/perceval/discourse_topics_empty.json")
    run(DiscourseConnector(make_source("d", "discourse", base_url=replay_server.url, match="all"), http))
    assert "api-key" not in replay_server.requests[-1].headers
    monkeypatch.setenv("FORUM_KEY", "k-123")
    source = make_source("d", "discourse", base_url=replay_server.url, match="all",
                         api_key=Secret("FORUM_KEY"), api_username="listener")
    run(DiscourseConnector(source, http))
    seen = replay_server.requests[-1].headers
    assert seen["api-key"] == "k-123" and seen["api-username"] == "listener"


def test_config_problems_name_the_source(http: HttpClient) -> None:
    with pytest.raises(SourceError, match="source 'd': discourse source needs `base_url`"):
        run(DiscourseConnector(make_source("d", "discourse"), http))
    with pytest.raises(SourceError, match="mode must be 'latest' or 'search'"):
        run(DiscourseConnector(make_source("d", "discourse", base_url="https://f.example", mode="hot"), http))


def test_latest_mode_stops_paging_at_the_mark(replay_server: ReplayServer, http: HttpClient, corpora: Path) -> None:
    replay_server.routes["/latest.json"] = json_file(corpora / "discourse/discourse_api_gem/latest.json")
    source = make_source("d", "discourse", base_url=replay_server.url, match="all")
    cursor = Cursor(last_time=datetime(2014, 1, 1, tzinfo=UTC))  # newer than every listed topic
    batches, mentions = run(DiscourseConnector(source, http), cursor)
    assert mentions == [] and len(replay_server.hits("/latest.json")) == 1  # more_topics_url not followed
    assert batches[-1].cursor.extra["topic_mark"] == "2014-01-01T00:00:00+00:00"


def test_latest_mode_asks_again_conditionally_and_a_304_costs_no_topic_reads(
    replay_server: ReplayServer, http: HttpClient, corpora: Path
) -> None:
    """The topic list's ETag is kept after a completed run; an unchanged list is a 304 with no body."""
    listing = json_file(corpora / "discourse/discourse_api_gem/latest.json")
    listing.etag = '"v1"'
    replay_server.routes["/latest.json"] = listing
    source = make_source("d", "discourse", base_url=replay_server.url, match="all")
    start = Cursor(last_time=datetime(2014, 1, 1, tzinfo=UTC))
    batches, _ = run(DiscourseConnector(source, http), start)
    kept = batches[-1].cursor
    assert kept.extra["latest_http"] == {"etag": '"v1"', "url": "/latest.json"}
    assert "if-none-match" not in replay_server.requests[-1].headers

    sent_before = replay_server.body_bytes_sent
    batches, mentions = run(DiscourseConnector(source, http), kept)
    assert replay_server.requests[-1].headers["if-none-match"] == '"v1"'
    assert mentions == [] and replay_server.body_bytes_sent == sent_before  # 304: no body, no topic reads
    assert batches[-1].cursor.extra["latest_http"]["etag"] == '"v1"'
    assert batches[-1].cursor.extra["topic_mark"] == kept.extra["topic_mark"]

    listing.etag = '"v2"'  # the list changed: a full reply, and its new ETag is kept
    batches, _ = run(DiscourseConnector(source, http), kept)
    assert replay_server.body_bytes_sent > sent_before
    assert batches[-1].cursor.extra["latest_http"]["etag"] == '"v2"'

    mark = kept.extra["topic_mark"]
    resumed = Cursor(last_time=kept.last_time, extra={**kept.extra, "run": {"post_since": mark, "topic_mark": mark}})
    run(DiscourseConnector(source, http), resumed)  # an interrupted run's pending topics need the full list
    assert "if-none-match" not in replay_server.requests[-1].headers

    other = make_source("d", "discourse", base_url=replay_server.url, match="all", category="support/5")
    replay_server.routes["/c/support/5/l/latest.json"] = json_file(corpora / "discourse/discourse_api_gem/latest.json")
    run(DiscourseConnector(other, http), kept)  # another list: the old validators are not sent
    assert "if-none-match" not in replay_server.requests[-1].headers
