from __future__ import annotations

from connectors.lemmy import LemmyConnector
from listener.http import HttpClient
from listener.matching import WatchQuery
from tests.connectors.contract import check_contract, fresh, make_source
from tests.connectors.test_lemmy import serve
from tests.support.server import ReplayServer


def test_lemmy_contract(replay_server: ReplayServer, http: HttpClient) -> None:
    serve(replay_server)
    source = make_source("lemmy", "lemmy", base_url=replay_server.url, communities=["selfhosted"], batch_size=2)
    watches = [WatchQuery.build("acme", ['"acme cloud"'])]
    mentions = check_contract(fresh(LemmyConnector, source, http, watches), replay_server, expect_min=6)
    assert len(mentions) == 6
