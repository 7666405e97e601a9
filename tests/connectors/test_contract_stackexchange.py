from __future__ import annotations

from pathlib import Path

from connectors.stackexchange import StackExchangeConnector
from listener.http import HttpClient
from listener.matching import WatchQuery
from tests.connectors.contract import check_contract, fresh, make_source
from tests.connectors.test_stackexchange import serve
from tests.support.server import ReplayServer


def test_stackexchange_contract(replay_server: ReplayServer, http: HttpClient, corpora: Path) -> None:
    """Gzip'd replies of perceval's paged capture (titles/bodies filled, see test_stackexchange)."""
    serve(replay_server, corpora)
    source = make_source("se", "stackexchange", base_url=f"{replay_server.url}/2.3", batch_size=1)
    watches = [WatchQuery.build("pd", ["pandas"])]
    mentions = check_contract(fresh(StackExchangeConnector, source, http, watches), replay_server, expect_min=3)
    assert sorted(m.native_id for m in mentions) == ["a1", "a2", "q1"]
