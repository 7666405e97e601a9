"""Google Play detail pages (2019 captures): embedded reviews, layout-change detection, robots.txt, the contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.googleplay import GooglePlayConnector, extract_data_blocks, parse_play_page
from listener.errors import ParseError
from tests.connectors.contract import check_contract, html_reply, make_source, query_value, robots_txt, run
from tests.support.server import ReplayServer, Reply, Seen

IGTV = "com.instagram.igtv"
TRIXI = "com.trixi.bike.stunts.driving"


def page(corpora: Path, package: str) -> str:
    return (corpora / "google_play" / f"{package}.html").read_text(encoding="utf-8")


def test_parse_igtv_reviews(corpora: Path) -> None:
    mentions, notes = parse_play_page(page(corpora, IGTV), source="play", package=IGTV)
    assert len(mentions) == 40 and len({m.native_id for m in mentions}) == 40
    assert notes == []
    first = mentions[0]
    assert first.native_id.startswith("gp:AOqpTOHpDiDVq6UwVU-FPMGnz3Irz")
    assert first.author == "Cazzie"
    assert first.rating == 1.0
    assert first.created_at == datetime(2019, 11, 19, 6, 43, 47, tzinfo=UTC)
    assert first.text.startswith("I uploaded one video then a few days later it won't show my files")
    assert first.extra == {"package": IGTV, "version": "119.0.0.33.147"}
    assert first.score == 16.0
    assert first.url == f"https://play.google.com/store/apps/details?id={IGTV}&reviewId={first.native_id}"
    assert first.thread_id == f"app:{IGTV}"
    kimberly = next(m for m in mentions if m.author == "Kimberly Simmons")
    assert (kimberly.rating, kimberly.score, kimberly.extra["version"]) == (5.0, 542.0, "109.0.0.18.124")
    assert all(m.created_at.tzinfo is UTC for m in mentions)


def test_parse_single_review_page(corpora: Path) -> None:
    mentions, _ = parse_play_page(page(corpora, TRIXI), source="play", package=TRIXI)
    assert [(m.author, m.rating, m.text, m.extra.get("version")) for m in mentions] == [
        ("Shuhsi2 Japan", 5.0, "best gamer ever", "1.0")]
    assert mentions[0].created_at == datetime(2019, 7, 21, 3, 25, 44, tzinfo=UTC)


def _modern_page(data: Any) -> str:
    """The same data in the current embedding (`data:[…], sideChannel: {}`), to show both layouts are read."""
    return ("<html><body><script nonce=\"x\">AF_initDataCallback({key: 'ds:8', hash: '2', data:"
            + json.dumps(data) + ", sideChannel: {}});</script></body></html>")


def test_current_embedding_is_read(corpora: Path) -> None:
    blocks, _ = extract_data_blocks(page(corpora, IGTV))
    mentions, _ = parse_play_page(_modern_page(blocks["ds:23"]), source="play", package=IGTV)
    assert len(mentions) == 40 and mentions[0].author == "Cazzie"


def test_changed_review_shape_fails_loudly(corpora: Path) -> None:
    blocks, _ = extract_data_blocks(page(corpora, IGTV))
    reviews = blocks["ds:23"]
    for review in reviews[0]:
        review[2], review[4] = review[4], review[2]  # stars and text swap places
    with pytest.raises(ParseError, match="no array has the known review shape"):
        parse_play_page(_modern_page(reviews), source="play", package=IGTV)


def test_unknown_page_fails_loudly() -> None:
    consent = "<html><body><form action='https://consent.google.com/save'>Before you continue</form></body></html>"
    with pytest.raises(ParseError, match="no AF_initDataCallback blocks at all"):
        parse_play_page(consent, source="play", package=IGTV)


def test_page_without_reviews_is_a_note(corpora: Path) -> None:
    blocks, _ = extract_data_blocks(page(corpora, IGTV))
    mentions, notes = parse_play_page(_modern_page(blocks["ds:8"]), source="play", package=IGTV)
    assert mentions == [] and notes == [f"no reviews embedded in the page for {IGTV}"]


def serve(server: ReplayServer, corpora: Path) -> None:
    pages = {pkg: page(corpora, pkg).encode() for pkg in (IGTV, TRIXI)}

    def details(seen: Seen) -> Reply:
        body = pages.get(query_value(seen, "id") or "")
        if body is None:
            return Reply(404, b"not found", content_type="text/html")
        return html_reply(body)

    server.routes["/store/apps/details"] = details


def make(server: ReplayServer, http: Any) -> GooglePlayConnector:
    source = make_source("play", "googleplay", match="all", base_url=server.url, packages=[IGTV, TRIXI])
    return GooglePlayConnector(source, http)


def test_contract(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    serve(replay_server, corpora)
    full = check_contract(lambda: make(replay_server, http), replay_server, expect_min=41, json_api=False)
    assert len(full) == 41
    asked = replay_server.hits("/store/apps/details")[0]
    assert asked.query == {"id": [IGTV], "hl": ["en"], "gl": ["us"]}


def test_oldest_first_and_backfill(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    serve(replay_server, corpora)
    batches, mentions = run(make(replay_server, http))
    times = [m.created_at for m in batches[0].mentions]
    assert times == sorted(times)
    assert batches[-1].cursor.last_time == max(m.created_at for m in mentions)
    # A first run only keeps what falls inside the backfill window: the 2019 reviews are all older than a week.
    src = make_source("play", "googleplay", backfill=timedelta(days=7), base_url=replay_server.url, package=TRIXI)
    _, recent = run(GooglePlayConnector(src, http))
    assert recent == []


def test_robots_disallow(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    serve(replay_server, corpora)
    replay_server.routes["/robots.txt"] = robots_txt("User-agent: *\nDisallow: /store/\n")
    batches, mentions = run(make(replay_server, http))
    assert mentions == [] and all("robots.txt disallows" in b.notes[0] for b in batches)
    assert replay_server.hits("/store/apps/details") == []


def test_json_instead_of_page(replay_server: ReplayServer, http: Any) -> None:
    replay_server.routes["/store/apps/details"] = Reply(200, b"{}", content_type="application/json")
    with pytest.raises(ParseError, match="expected the HTML detail page, got application/json"):
        run(make(replay_server, http))


def test_robots_allowing_details_only(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    """Google's rules allow /store/apps/details? and disallow the rest of /store/ (Allow listed first)."""
    serve(replay_server, corpora)
    rules = "User-agent: *\nDisallow: /store/search\nAllow: /store/apps/details?\nDisallow: /store/\n"
    replay_server.routes["/robots.txt"] = robots_txt(rules)
    _, mentions = run(make(replay_server, http))
    assert len(mentions) == 41
    assert len(replay_server.hits("/robots.txt")) == 1  # cached per origin


def test_package_added_later_starts_from_backfill(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    serve(replay_server, corpora)
    one = make_source("play", "googleplay", base_url=replay_server.url, package=IGTV)
    batches, first = run(GooglePlayConnector(one, http))
    assert len(first) == 40
    both = make_source("play", "googleplay", backfill=timedelta(days=7), base_url=replay_server.url,
                       packages=[IGTV, TRIXI])
    later, added = run(GooglePlayConnector(both, http), batches[-1].cursor)
    assert added == []  # the 2019 review of the new package is older than the 7-day backfill
    assert later[-1].cursor.extra["apps"][TRIXI]["seen"] == [
        "gp:AOqpTOGfNcu_gH2GcMF0XGdjhtZ06235CQuQdWiKJHoReAxKqu0o9ZNKQot4KSDaBOOi8O1oGl_tDeUHvneA7G8"]
