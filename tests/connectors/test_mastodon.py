"""Mastodon parsing and id paging on fixtures recorded in the documented shapes (fixtures/mastodon/SOURCES.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.mastodon import MastodonConnector, parse_status, parse_statuses
from listener.config import Secret
from listener.errors import ParseError, SourceError
from listener.http import HttpClient
from listener.matching import WatchQuery
from listener.types import Cursor, utcnow
from tests.connectors.contract import json_reply, make_source, query_value, run
from tests.support.server import ReplayServer, Reply, Seen

FIXTURES = Path(__file__).parent / "fixtures" / "mastodon"
IDS = ["112042417357520896", "112042506657464320", "112050103910400000", "112053232730046464", "112054296202444800"]


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_bytes())


def paged(statuses: list[dict[str, Any]], wrap: bool = False) -> Any:
    """The documented max_id / since_id / min_id / limit semantics over recorded statuses."""

    def handler(seen: Seen) -> Reply:
        items = sorted(statuses, key=lambda s: int(s["id"]), reverse=True)
        limit = int(query_value(seen, "limit", "20") or 20)
        if (max_id := query_value(seen, "max_id")) is not None:
            items = [s for s in items if int(s["id"]) < int(max_id)]
        if (since_id := query_value(seen, "since_id")) is not None:
            items = [s for s in items if int(s["id"]) > int(since_id)]
        if (min_id := query_value(seen, "min_id")) is not None:
            items = [s for s in items if int(s["id"]) > int(min_id)][-limit:]  # immediately newer
        items = items[:limit]
        return json_reply({"accounts": [], "statuses": items, "hashtags": []} if wrap else items)

    return handler


def serve(server: ReplayServer) -> None:
    server.routes["/api/v1/timelines/tag/acmecloud"] = paged(load("tag_acmecloud.json"))
    server.routes["/api/v2/search"] = paged(load("search_v2_statuses.json")["statuses"], wrap=True)


def connector(server: ReplayServer, http: HttpClient, **params: Any) -> MastodonConnector:
    source = make_source("masto", "mastodon", base_url=server.url, **params)
    return MastodonConnector(source, http, [WatchQuery.build("acme", ['acmecloud OR "acme cloud"'])])


def test_parse_timeline_statuses() -> None:
    mentions, ids, notes = parse_statuses(load("tag_acmecloud.json"), source="m", instance="mastodon.social")
    assert notes == [] and ids == IDS[::-1]
    by_id = {m.native_id: m for m in mentions}
    question = by_id[IDS[0]]
    assert question.text == 'Is anyone else seeing empty buckets after the #AcmeCloud 4.2 update? Backups say "success".'
    assert question.author == "ana@mastodon.social" and question.created_at == datetime(
        2024, 3, 5, 9, 40, 12, 511000, tzinfo=UTC)
    assert question.url == f"https://mastodon.social/@ana/{IDS[0]}"
    assert question.score == 14.0 and question.comments == 2 and question.extra["reblogs"] == 3
    assert question.extra["tags"] == ["acmecloud"] and question.language == "en"
    reply = by_id[IDS[1]]
    assert reply.parent_id == IDS[0] and reply.author == "jo@fosstodon.org"
    assert by_id[IDS[2]].language == "de"
    media = by_id[IDS[3]]
    assert media.title == "acme cloud rant" and media.text.startswith("Screenshot: Acme Cloud dashboard")
    assert by_id[IDS[4]].extra["edited_at"] == "2024-03-07T12:03:00.000Z"


def test_boosts_unwrap_and_bad_payloads() -> None:
    original = load("tag_acmecloud.json")[0]
    boost = {**original, "id": "112060000000000000", "content": "", "reblog": original}
    mention = parse_status(boost, source="m", instance="mastodon.social")
    assert mention is not None and mention.native_id == original["id"]
    mentions, _, notes = parse_statuses([{"id": "1", "content": "<p>x</p>"}, 7], source="m", instance="x")
    assert mentions == [] and notes == ["skipped status '1': malformed or empty", "skipped status None: malformed or empty"]
    with pytest.raises(ParseError, match="array of statuses"):
        parse_statuses({"error": "The access token is invalid"}, source="m", instance="x")


def test_first_run_pages_back_then_forward_by_min_id(replay_server: ReplayServer, http: HttpClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    serve(replay_server)
    monkeypatch.setattr("connectors.mastodon.LIMIT", 2)
    batches, mentions = run(connector(replay_server, http))
    assert [m.native_id for m in mentions] == IDS
    hits = replay_server.hits("/api/v1/timelines/tag/acmecloud")
    assert [query_value(h, "max_id") for h in hits] == [None, IDS[3], IDS[1]]
    cursor = batches[-1].cursor
    assert cursor.extra["streams"] == {"tag:acmecloud": IDS[4]}
    assert cursor.last_time == datetime(2024, 3, 7, 12, 1, 9, 300000, tzinfo=UTC)
    assert not replay_server.hits("/api/v2/search")  # no token: search skipped, and said so
    assert any("search skipped: no access_token" in n for b in batches for n in b.notes)

    replay_server.requests.clear()
    start = Cursor(extra={"streams": {"tag:acmecloud": IDS[1]}})
    batches, mentions = run(connector(replay_server, http), start)
    assert [m.native_id for m in mentions] == IDS[2:]
    assert [query_value(h, "min_id") for h in replay_server.requests] == [IDS[1], IDS[3]]  # 2nd page short: done
    assert [b.cursor.extra["streams"]["tag:acmecloud"] for b in batches] == [IDS[3], IDS[4]]


def test_backfill_horizon_bounds_the_first_run(replay_server: ReplayServer, http: HttpClient) -> None:
    serve(replay_server)
    window = utcnow() - datetime(2024, 3, 6, 0, 0, tzinfo=UTC)  # backfill reaching back to 6 March 2024
    source = make_source("masto", "mastodon", base_url=replay_server.url, backfill=window)
    _, mentions = run(MastodonConnector(source, http, [WatchQuery.build("acme", ["acmecloud"])]))
    assert [m.native_id for m in mentions] == IDS[2:]


def test_search_with_token(replay_server: ReplayServer, http: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(replay_server)
    monkeypatch.setenv("MASTO_TOKEN", "tok-1")
    conn = connector(replay_server, http, access_token=Secret("MASTO_TOKEN"), hashtags=[])
    assert conn.status() == "ok"
    batches, mentions = run(conn)
    assert {m.native_id for m in mentions} == {IDS[0], IDS[4], "112047859958022144"}
    searches = replay_server.hits("/api/v2/search")
    assert {query_value(s, "q") for s in searches} == {"acmecloud", "acme cloud"}
    assert all(s.headers["authorization"] == "Bearer tok-1" for s in replay_server.requests)
    assert query_value(searches[0], "type") == "statuses"
    assert set(batches[-1].cursor.extra["streams"]) == {"search:acmecloud", "search:acme cloud"}


def test_needs_something_to_read(replay_server: ReplayServer, http: HttpClient) -> None:
    conn = MastodonConnector(make_source("m", "mastodon", base_url=replay_server.url,
                                         queries=["acme cloud"]), http)
    assert conn.status().startswith("degraded: no access_token")
    with pytest.raises(SourceError, match="needs `hashtags`"):
        run(conn)
    with pytest.raises(SourceError, match="needs `base_url`"):
        run(MastodonConnector(make_source("m", "mastodon", hashtags=["acme"]), http))
