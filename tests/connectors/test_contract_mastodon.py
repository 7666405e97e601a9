from __future__ import annotations

import pytest

from connectors.mastodon import MastodonConnector
from listener.config import Secret
from listener.http import HttpClient
from listener.matching import WatchQuery
from tests.connectors.contract import check_contract, fresh, make_source
from tests.connectors.test_mastodon import serve
from tests.support.server import ReplayServer


def test_mastodon_contract(replay_server: ReplayServer, http: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(replay_server)
    monkeypatch.setenv("MASTO_TOKEN", "tok-1")
    monkeypatch.setattr("connectors.mastodon.LIMIT", 2)  # several pages from five statuses
    source = make_source("masto", "mastodon", base_url=replay_server.url, access_token=Secret("MASTO_TOKEN"))
    watches = [WatchQuery.build("acme", ['acmecloud OR "acme cloud"'])]
    mentions = check_contract(fresh(MastodonConnector, source, http, watches), replay_server, expect_min=6)
    assert len(mentions) == 6
