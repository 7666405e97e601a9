"""Hacker News parsing on the real Algolia capture and Firebase README items (hackernews/SOURCES.md)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.base import chunk_by_time
from connectors.hackernews import HackerNewsConnector, parse_algolia_hits, parse_firebase_item
from listener.errors import ParseError, SourceError
from listener.http import HttpClient
from listener.matching import WatchQuery
from listener.types import Cursor
from tests.connectors.contract import json_file, json_reply, make_source, query_value, run
from tests.support.server import ReplayServer, Reply, Seen


def algolia_payload(corpora: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((corpora / "hackernews/algolia/search_by_date_query_nodejs.json").read_bytes())
    return data


def fake_algolia(payload: dict[str, Any]) -> Any:
    """Algolia's own semantics over the real hits: `created_at_i>N` filter, newest first, hitsPerPage/page."""

    def handler(seen: Seen) -> Reply:
        flt = query_value(seen, "numericFilters", "created_at_i>0") or ""
        since = int(flt.split(">", 1)[1])
        hits = sorted((h for h in payload["hits"] if h["created_at_i"] > since), key=lambda h: -h["created_at_i"])
        per_page = int(query_value(seen, "hitsPerPage", "20") or 20)
        page = int(query_value(seen, "page", "0") or 0)
        pages = (len(hits) + per_page - 1) // per_page
        body = {**payload, "hits": hits[page * per_page:(page + 1) * per_page], "page": page, "nbPages": pages,
                "hitsPerPage": per_page, "nbHits": len(hits)}
        return json_reply(body)

    return handler


def test_parse_algolia_story_and_comment(corpora: Path) -> None:
    mentions, notes = parse_algolia_hits(algolia_payload(corpora), source="hn")
    assert notes == []
    assert len(mentions) == 20
    by_id = {m.native_id: m for m in mentions}
    comment = by_id["15353312"]
    assert comment.author == "RealJon"
    assert comment.title is None
    assert comment.text.startswith("You don't need to plug in any Java code")  # &#x27; decoded, <p> → lines
    assert "<p>" not in comment.text and "\n" in comment.text
    assert comment.created_at == datetime(2017, 9, 27, 23, 33, 24, tzinfo=UTC)
    assert comment.thread_id == "15345483" and comment.parent_id == "15352681"
    assert comment.url == "https://news.ycombinator.com/item?id=15353312"
    assert comment.extra["story_title"].startswith("Open-Sourcing Vespa")
    assert comment.score is None
    story = by_id["15348473"]
    assert story.title == "Node v8.6.0" and story.author == "nikolay"
    assert story.score == 1.0 and story.comments == 2
    assert story.thread_id == "15348473" and story.parent_id is None
    assert story.extra["type"] == "story"
    assert sum(m.extra["type"] == "story" for m in mentions) == 4


def test_parse_algolia_rejects_other_shapes_and_skips_bad_hits(corpora: Path) -> None:
    with pytest.raises(ParseError, match="expected a JSON object with 'hits'"):
        parse_algolia_hits({"message": "Invalid application-id"}, source="hn")
    with pytest.raises(ParseError, match="JSON list"):
        parse_algolia_hits([], source="hn")
    payload = algolia_payload(corpora)
    payload["hits"] = [*payload["hits"][:2], {"objectID": "x"}, "junk"]
    mentions, notes = parse_algolia_hits(payload, source="hn")
    assert [m.native_id for m in mentions] == ["15353312", "15353234"]
    assert len(notes) == 2 and all("skipped malformed" in n for n in notes)


def test_parse_firebase_items(corpora: Path) -> None:
    base = corpora / "hackernews/firebase_api_readme"
    story = parse_firebase_item(json.loads((base / "item_8863.json").read_bytes()), source="hn", item_id="8863")
    assert story == {"id": "8863", "type": "story", "title": "My YC app: Dropbox - Throw away your USB drive",
                     "deleted": False}
    comment = parse_firebase_item(json.loads((base / "item_2921983.json").read_bytes()), source="hn", item_id="2921983")
    assert comment["parent"] == "2921506" and comment["type"] == "comment"
    assert parse_firebase_item(None, source="hn", item_id="1") == {}
    with pytest.raises(ParseError, match="item object"):
        parse_firebase_item(json.loads((base / "maxitem.json").read_bytes()), source="hn", item_id="maxitem")


def test_chunks_never_split_a_second(corpora: Path) -> None:
    mentions, _ = parse_algolia_hits(algolia_payload(corpora), source="hn")
    same = mentions[0]
    chunks = list(chunk_by_time([*mentions, replace(same, native_id="twin")], 1))
    for a, b in itertools.pairwise(chunks):
        assert a[-1].created_at < b[0].created_at
    assert sum(len(c) for c in chunks) == 21


def connector(server: ReplayServer, http: HttpClient, **params: Any) -> HackerNewsConnector:
    source = make_source("hn", "hackernews", base_url=f"{server.url}/api/v1", firebase_url=f"{server.url}/v0",
                         **params)
    return HackerNewsConnector(source, http, [WatchQuery.build("node", ["nodejs"])])


def test_fetch_pages_oldest_first_with_algolia_params(replay_server: ReplayServer, http: HttpClient,
                                                      corpora: Path) -> None:
    replay_server.routes["/api/v1/search_by_date"] = fake_algolia(algolia_payload(corpora))
    batches, mentions = run(connector(replay_server, http, hits_per_page=7))
    assert len(mentions) == 20
    times = [m.created_at for m in mentions]
    assert times == sorted(times)
    assert batches[-1].cursor.last_time == datetime(2017, 9, 27, 23, 33, 24, tzinfo=UTC)
    seen = replay_server.hits("/api/v1/search_by_date")
    assert [query_value(s, "page") for s in seen] == ["0", "1", "2"]
    assert {query_value(s, "tags") for s in seen} == {"(story,comment)"}
    assert query_value(seen[0], "query") == "nodejs" and query_value(seen[0], "hitsPerPage") == "7"
    assert (query_value(seen[0], "numericFilters") or "").startswith("created_at_i>")
    assert not replay_server.hits("/v0/item/15345483.json")  # Algolia had the context already


def test_backlog_cap_is_noted(replay_server: ReplayServer, http: HttpClient, corpora: Path) -> None:
    replay_server.routes["/api/v1/search_by_date"] = fake_algolia(algolia_payload(corpora))
    batches, mentions = run(connector(replay_server, http, hits_per_page=5, max_pages=2))
    assert len(mentions) == 10
    assert any("backlog capped at 2 pages" in n for b in batches for n in b.notes)


def test_firebase_supplies_missing_thread_context(replay_server: ReplayServer, http: HttpClient,
                                                  corpora: Path) -> None:
    payload = algolia_payload(corpora)
    # Algolia omits story fields for some comments (e.g. on deleted stories): drop them from two real hits.
    payload["hits"] = [dict(h) for h in payload["hits"][:4]]
    payload["hits"][0].pop("story_title")
    del payload["hits"][3]["story_id"], payload["hits"][3]["story_title"]
    payload["hits"][3]["parent_id"] = 2921983
    base = corpora / "hackernews/firebase_api_readme"
    replay_server.routes["/api/v1/search_by_date"] = fake_algolia(payload)
    replay_server.routes["/v0/item/15345483.json"] = json_file(base / "item_8863.json")
    replay_server.routes["/v0/item/2921983.json"] = json_file(base / "item_2921983.json")
    replay_server.routes["/v0/item/2921506.json"] = json_file(base / "item_8863.json")
    _, mentions = run(connector(replay_server, http))
    by_id = {m.native_id: m for m in mentions}
    assert by_id["15353312"].extra["story_title"] == "My YC app: Dropbox - Throw away your USB drive"
    walked = by_id["15352955"]
    assert walked.thread_id == "8863" and walked.parent_id == "2921983"
    assert len(replay_server.hits("/v0/item/15345483.json")) == 1


def test_needs_phrases_and_fails_loudly(replay_server: ReplayServer, http: HttpClient) -> None:
    source = make_source("hn", "hackernews", base_url=replay_server.url)
    with pytest.raises(SourceError, match="needs watch queries"):
        run(HackerNewsConnector(source, http, []))
    replay_server.routes["/search_by_date"] = json_reply({"message": "Index does not exist", "status": 404})
    with pytest.raises(ParseError, match="'hits'"):
        run(HackerNewsConnector(source, http, [WatchQuery.build("x", ['"acme cloud" -hiring OR acme support'])]))
    assert query_value(replay_server.hits("/search_by_date")[0], "query") == '"acme cloud"'
    hn = HackerNewsConnector(source, http, [WatchQuery.build("x", ['"acme cloud" -hiring OR acme support'])])
    assert hn.queries() == ['"acme cloud"', "acme support"]


def test_incremental_asks_only_for_newer(replay_server: ReplayServer, http: HttpClient, corpora: Path) -> None:
    replay_server.routes["/api/v1/search_by_date"] = fake_algolia(algolia_payload(corpora))
    start = Cursor(last_time=datetime(2017, 9, 27, 23, 0, tzinfo=UTC))
    _, mentions = run(connector(replay_server, http), start)
    assert {m.native_id for m in mentions} == {"15353312", "15353234"}
    stamp = int(datetime(2017, 9, 27, 23, 0, tzinfo=UTC).timestamp())
    assert query_value(replay_server.requests[-1], "numericFilters") == f"created_at_i>{stamp}"
