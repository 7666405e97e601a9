from __future__ import annotations

from pathlib import Path

from connectors.hackernews import HackerNewsConnector
from listener.http import HttpClient
from listener.matching import WatchQuery
from tests.connectors.contract import check_contract, fresh, json_file, make_source
from tests.connectors.test_hackernews import algolia_payload, fake_algolia
from tests.support.server import ReplayServer


def test_hackernews_contract(replay_server: ReplayServer, http: HttpClient, corpora: Path) -> None:
    payload = algolia_payload(corpora)
    payload["hits"] = [dict(h) for h in payload["hits"]]
    payload["hits"][0].pop("story_title")  # so the Firebase route is exercised (and broken) too
    replay_server.routes["/api/v1/search_by_date"] = fake_algolia(payload)
    story = corpora / "hackernews/firebase_api_readme/item_8863.json"
    replay_server.routes["/v0/item/15345483.json"] = json_file(story)
    source = make_source("hn", "hackernews", base_url=f"{replay_server.url}/api/v1",
                         firebase_url=f"{replay_server.url}/v0", hits_per_page=6, batch_size=4)
    watches = [WatchQuery.build("node", ["nodejs"])]
    mentions = check_contract(fresh(HackerNewsConnector, source, http, watches), replay_server, expect_min=20)
    assert len(mentions) == 20
