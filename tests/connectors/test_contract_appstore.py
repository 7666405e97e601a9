"""App Store customer-reviews feed: parser on the real capture, paging, incremental runs, the contract."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.appstore import AppStoreConnector, parse_appstore_feed
from listener.errors import ParseError
from tests.connectors.contract import check_contract, json_reply, make_source, run
from tests.support.server import ReplayServer, Reply, Seen

APP = "1321994487"
PAGE_SIZE = 20
"""Apple pages by 50; the 50-review capture is served in pages of 20 so paging is really exercised."""


def capture(corpora: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((corpora / "appstore_reviews/customerreviews_id1321994487_us.json").read_text())
    return data


def serve_pages(server: ReplayServer, payload: dict[str, Any], pages: int = 10) -> None:
    entries = payload["feed"]["entry"]

    def page_handler(n: int) -> Any:
        def handler(seen: Seen) -> Reply:
            chunk = entries[(n - 1) * PAGE_SIZE : n * PAGE_SIZE]
            feed = {k: v for k, v in payload["feed"].items() if k != "entry"}
            if chunk:
                feed["entry"] = chunk
            return json_reply({"feed": feed})

        return handler

    for n in range(1, pages + 1):
        server.routes[f"/us/rss/customerreviews/page={n}/id={APP}/sortby=mostrecent/json"] = page_handler(n)


def make(server: ReplayServer, http: Any, **params: Any) -> AppStoreConnector:
    source = make_source("ios-app", "appstore", match="all", base_url=server.url, app_id=APP, country="us", **params)
    return AppStoreConnector(source, http)


def test_parse_capture(corpora: Path) -> None:
    mentions, notes = parse_appstore_feed(capture(corpora), source="ios-app", app_id=APP, country="us")
    assert len(mentions) == 50
    first = mentions[0]
    assert first.native_id == "7175647643"
    assert first.author == "WB-SBB"
    assert first.rating == 2.0
    assert first.title == "Mobile app cannot recognize endorsement on business size checks."
    assert first.text.startswith("I use the mobile app to deposit checks.")
    assert first.extra["version"] == "8.0.9"
    assert first.extra["author_uri"] == "https://itunes.apple.com/us/reviews/id483654179"
    assert first.url == "https://itunes.apple.com/us/review?id=1321994487&type=Purple%20Software"
    assert first.thread_id == f"app:{APP}"
    assert mentions[-1].native_id == "6432878082" and mentions[-1].author == "Seville Sam"
    # No per-entry dates in this capture: the feed's update time (-07:00) stands in, converted to UTC, and flagged.
    assert first.created_at == datetime(2021, 4, 12, 19, 43, 52, tzinfo=UTC)
    assert all(m.extra["date_estimated"] for m in mentions)
    assert any("no date" in n for n in notes)
    assert Counter(int(m.rating or 0) for m in mentions) == {5: 20, 4: 7, 3: 3, 2: 9, 1: 11}


def test_parse_dated_entries_and_app_header(corpora: Path) -> None:
    payload = capture(corpora)
    entry = payload["feed"]["entry"][0]
    entry["updated"] = {"label": "2021-04-10T08:15:00-07:00"}
    header = {"im:name": {"label": "Webster Bank"}, "id": {"label": "https://apps.apple.com/app/id1321994487"}}
    broken = copy.deepcopy(payload["feed"]["entry"][1])
    del broken["im:rating"]
    payload["feed"]["entry"] = [header, entry, broken]
    mentions, notes = parse_appstore_feed(payload, source="s", app_id=APP)
    assert [m.native_id for m in mentions] == ["7175647643"]
    assert mentions[0].created_at == datetime(2021, 4, 10, 15, 15, tzinfo=UTC)
    assert "date_estimated" not in mentions[0].extra
    assert any("without id or im:rating" in n for n in notes)


def test_parse_rejects_non_feed() -> None:
    with pytest.raises(ParseError, match="expected a JSON object with 'feed'"):
        parse_appstore_feed({"results": []}, source="s")
    with pytest.raises(ParseError, match=r"feed\.entry"):
        parse_appstore_feed({"feed": {"entry": "oops"}}, source="s")


def test_contract(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    serve_pages(replay_server, capture(corpora))
    full = check_contract(lambda: make(replay_server, http), replay_server, expect_min=50)
    assert len(full) == 50


def test_pages_stop_when_nothing_new_and_oldest_first(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    payload = capture(corpora)
    serve_pages(replay_server, payload)
    batches, mentions = run(make(replay_server, http))
    page_paths = [r.path for r in replay_server.requests if "customerreviews" in r.path]
    assert [re.search(r"page=(\d+)", p).group(1) for p in page_paths] == ["1", "2", "3", "4"]  # type: ignore[union-attr]
    assert batches[0].mentions[0].native_id == "6432878082"  # the oldest page is stored first
    assert batches[-1].cursor.extra["countries"]["us"]["max_id"] == max(int(m.native_id) for m in mentions)

    # A new review appears on top: the next run asks page 1 only and yields just that one.
    fresh = copy.deepcopy(payload["feed"]["entry"][0])
    fresh["id"] = {"label": "7200000000"}
    fresh["content"] = {"label": "Deposits work again, thanks!"}
    payload["feed"]["entry"].insert(0, fresh)
    serve_pages(replay_server, payload)
    before = len(replay_server.requests)
    _, again = run(make(replay_server, http), batches[-1].cursor)
    assert [m.native_id for m in again] == ["7200000000"]
    assert len(replay_server.requests) - before == 2  # page 1 (new) + page 2 (nothing new → stop)


def test_backfill_bounds_dated_reviews(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    payload = capture(corpora)
    recent = datetime.now(UTC) - timedelta(days=1)
    for i, entry in enumerate(payload["feed"]["entry"]):
        entry["updated"] = {"label": (recent - timedelta(days=i)).isoformat()}
    serve_pages(replay_server, payload)
    window = timedelta(days=3, hours=12)
    source = make_source("ios", "appstore", backfill=window, base_url=replay_server.url, app_id=APP)
    batches, mentions = run(AppStoreConnector(source, http))
    assert [m.native_id for m in mentions] == [e["id"]["label"] for e in payload["feed"]["entry"][:3]][::-1]
    _, again = run(AppStoreConnector(source, http), batches[-1].cursor)
    assert again == []
    # With a look-back, dated reviews inside it are read again (edits keep the id but change the date).
    relook = replace(source, lookback=timedelta(days=1, hours=12))
    _, edited = run(AppStoreConnector(relook, http), batches[-1].cursor)
    assert [m.native_id for m in edited] == [e["id"]["label"] for e in payload["feed"]["entry"][:2]][::-1]


def test_conditional_get(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    body = json.dumps(capture(corpora)).encode()
    replay_server.routes[f"/us/rss/customerreviews/page=1/id={APP}/sortby=mostrecent/json"] = Reply(
        200, body, content_type="application/json", etag='"v1"')
    batches, _ = run(make(replay_server, http, pages=1))
    assert batches[-1].cursor.extra["countries"]["us"]["etag"] == '"v1"'
    again, mentions = run(make(replay_server, http, pages=1), batches[-1].cursor)
    assert mentions == [] and again[0].notes == ("not modified: us reviews",)


def test_missing_app_id(replay_server: ReplayServer, http: Any) -> None:
    bad = AppStoreConnector(make_source("x", "appstore", base_url=replay_server.url), http)
    with pytest.raises(ParseError, match="numeric `app_id`"):
        run(bad)


def test_rate_registered(http: Any) -> None:
    connector = AppStoreConnector(make_source("x", "appstore", app_id=APP), http)
    assert connector.hosts() == ["itunes.apple.com"]
    assert http._limiters["itunes.apple.com"].interval == pytest.approx(3.0)

