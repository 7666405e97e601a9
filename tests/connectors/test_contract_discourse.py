from __future__ import annotations

from pathlib import Path

from connectors.discourse import DiscourseConnector
from listener.http import HttpClient
from tests.connectors.contract import check_contract, fresh, json_file, make_source
from tests.connectors.test_discourse import load, posts_by_ids
from tests.support.server import ReplayServer


def test_discourse_contract_latest_mode(replay_server: ReplayServer, http: HttpClient, corpora: Path) -> None:
    """perceval's mapping: /latest.json lists topics 1148 and 1149, served by their topic views."""
    data = corpora / "discourse/perceval"
    replay_server.routes["/latest.json"] = json_file(data / "discourse_topics.json")
    views = {}
    for topic_id in (1148, 1149):
        replay_server.routes[f"/t/{topic_id}.json"] = json_file(data / f"discourse_topic_{topic_id}.json")
        views[topic_id] = load(corpora, f"perceval/discourse_topic_{topic_id}.json")
    for topic_id in (1148, 1149):
        replay_server.routes[f"/t/{topic_id}/posts.json"] = posts_by_ids(*views.values())
    source = make_source("forum", "discourse", base_url=replay_server.url, match="all")
    mentions = check_contract(fresh(DiscourseConnector, source, http), replay_server, expect_min=20)
    # The anonymised captures reuse post ids across both topics: each post is yielded once.
    assert len(mentions) == 20
    assert {m.thread_id for m in mentions} == {"1148", "1149"}


def test_discourse_contract_search_mode(replay_server: ReplayServer, http: HttpClient, corpora: Path) -> None:
    from listener.matching import WatchQuery
    from tests.connectors.test_discourse import serve_2108

    serve_2108(replay_server, corpora)
    source = make_source("cf", "discourse", base_url=replay_server.url)
    watches = [WatchQuery.build("fem", ["feminism"])]
    check_contract(fresh(DiscourseConnector, source, http, watches), replay_server, expect_min=60)
