"""schema.org review pages: extruct captures (JSON-LD, microdata, malformed JSON-LD), robots.txt, the contract."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.reviews import ReviewPageConnector, normalise_rating, parse_review_page
from listener.errors import ParseError
from tests.connectors.contract import check_contract, html_reply, make_source, robots_txt, run
from tests.support.server import ReplayServer, Reply

SAMPLES = "reviews_jsonld_extruct"


def read(corpora: Path, name: str) -> str:
    return (corpora / SAMPLES / name).read_text(encoding="utf-8")


def test_jsonld_reviews_with_aggregate(corpora: Path) -> None:
    url = "https://books.example/catcher"
    mentions, notes = parse_review_page(read(corpora, "schema.org/CreativeWork.001.html"), source="books", url=url)
    assert [(m.author, m.rating, m.title) for m in mentions] == [
        ("John Doe", 5.0, "A masterpiece of literature"),
        ("Bob Smith", 4.0, "A good read."),  # reviewRating given as a bare "4"
    ]
    john = mentions[0]
    assert john.created_at == datetime(2006, 5, 4, tzinfo=UTC)
    assert john.text.startswith("I really enjoyed this book.")
    assert john.url == url and john.thread_id == url
    assert john.extra["item_reviewed"] == "The Catcher in the Rye"
    assert john.extra["aggregate_rating"]["rating"] == 4.0 and john.extra["aggregate_rating"]["count"] == 3077
    assert notes == ["aggregate rating 4 (4.0/5) from 3077 ratings for The Catcher in the Rye"]
    again, _ = parse_review_page(read(corpora, "schema.org/CreativeWork.001.html"), source="books", url=url)
    assert [m.id for m in again] == [m.id for m in mentions]


def test_review_with_nulls_and_no_date(corpora: Path) -> None:
    mentions, notes = parse_review_page(read(corpora, "misc/null_ld_mock.html"), source="s", url="https://biz.example/")
    assert len(mentions) == 1
    review = mentions[0]
    assert review.title is None and review.author is None and review.rating is None
    assert review.text.startswith("Sed ut perspiciatis")
    assert review.extra["date_estimated"] is True
    assert "from 280 ratings for Some Name Goes Here" in notes[0]


@pytest.mark.parametrize(("name", "about", "value", "count"), [
    ("schema.org/product.html", "Executive Anvil", "4.4", 89),
    ("schema.org/product-ref.html", "Executive Anvil", "4.4", 89),
    ("schema.org/LocalBusiness.002.html", "GreatFood", "4", 250),
    ("misc/product_microdata.html", "Executive Anvil", "4.4", 89),
])
def test_microdata_aggregate_only(corpora: Path, name: str, about: str, value: str, count: int) -> None:
    mentions, notes = parse_review_page(read(corpora, name), source="s", url="https://shop.example/p")
    assert mentions == []
    assert notes == [f"aggregate rating {value} ({float(value)}/5) from {count} ratings for {about}"]


def test_microdata_review_item() -> None:
    html = """<div itemscope itemtype="https://schema.org/Product"><span itemprop="name">Acme Cloud</span>
      <div itemprop="review" itemscope itemtype="https://schema.org/Review">
        <span itemprop="author" itemscope itemtype="https://schema.org/Person"><span itemprop="name">Ann</span></span>
        <meta itemprop="datePublished" content="2024-03-01T10:00:00+02:00">
        <div itemprop="reviewRating" itemscope itemtype="https://schema.org/Rating">
          <meta itemprop="worstRating" content="0"><meta itemprop="ratingValue" content="8">
          <meta itemprop="bestRating" content="10"></div>
        <p itemprop="reviewBody">Setup took <b>minutes</b>.</p></div></div>"""
    mentions, _ = parse_review_page(html, source="s", url="https://shop.example/acme")
    assert len(mentions) == 1
    m = mentions[0]
    assert (m.author, m.text, m.rating) == ("Ann", "Setup took minutes.", 4.2)
    assert m.created_at == datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    assert m.extra["item_reviewed"] == "Acme Cloud"


def test_normalise_rating() -> None:
    assert normalise_rating("5") == 5.0
    assert normalise_rating(10, best=10, worst=0) == 5.0
    assert normalise_rating("0", best="10", worst="0") == 1.0
    assert normalise_rating("4,5", best=10) == pytest.approx(1 + 4 * 3.5 / 9, abs=1e-3)  # worst defaults to 1
    assert normalise_rating("n/a") is None
    assert normalise_rating(3, best=1, worst=1) is None


def test_tolerant_and_malformed_jsonld(corpora: Path) -> None:
    page = read(corpora, "schema.org/CreativeWork.001.html")
    commented = read(corpora, "custom.invalid/JSONLD_with_JS_comment.html")
    control = read(corpora, "custom.invalid/JSONLD_with_control_characters.html")
    script = commented[commented.index("<script") : commented.index("</script>") + 9]
    ctrl_script = control[control.index("<script") : control.index("</script>") + 9]
    # JS comments and raw control characters are tolerated: the reviews are still read, no complaint.
    mentions, notes = parse_review_page(page.replace("</head>", script + ctrl_script + "</head>"), source="s", url="u")
    assert len(mentions) == 2 and not any("malformed" in n for n in notes)
    # A truncated script is skipped with a note; the page's good script still counts.
    broken = script[: script.index('"url"')] + "</script>"
    mentions, notes = parse_review_page(page.replace("</head>", broken + "</head>"), source="s", url="u")
    assert len(mentions) == 2
    assert any(n.startswith("skipped malformed JSON-LD script #") for n in notes)


def test_page_without_review_markup_fails_loudly(corpora: Path) -> None:
    with pytest.raises(ParseError, match=r"no schema\.org Review or AggregateRating markup"):
        parse_review_page(read(corpora, "custom.invalid/JSONLD_with_JS_comment.html"), source="s", url="u")


def make(server: ReplayServer, http: Any, *paths: str) -> ReviewPageConnector:
    source = make_source("reviews", "reviews", urls=[f"{server.url}{p}" for p in paths])
    return ReviewPageConnector(source, http)


def test_contract(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    replay_server.routes["/books/catcher"] = html_reply(corpora / SAMPLES / "schema.org/CreativeWork.001.html")
    replay_server.routes["/biz/tacoma"] = html_reply(corpora / SAMPLES / "misc/null_ld_mock.html")
    replay_server.routes["/anvil"] = html_reply(corpora / SAMPLES / "schema.org/product.html")
    full = check_contract(lambda: make(replay_server, http, "/books/catcher", "/biz/tacoma", "/anvil"),
                          replay_server, expect_min=3, json_api=False)
    assert sorted(m.author or "" for m in full) == ["", "Bob Smith", "John Doe"]


def test_robots_disallow_skips_with_note(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    replay_server.routes["/robots.txt"] = robots_txt("User-agent: *\nDisallow: /private/\n")
    replay_server.routes["/private/p"] = html_reply(corpora / SAMPLES / "schema.org/CreativeWork.001.html")
    replay_server.routes["/books/catcher"] = html_reply(corpora / SAMPLES / "schema.org/CreativeWork.001.html")
    batches, mentions = run(make(replay_server, http, "/private/p", "/books/catcher"))
    assert batches[0].notes == (f"robots.txt disallows {replay_server.url}/private/p; skipped",)
    assert len(mentions) == 2
    assert replay_server.hits("/private/p") == []


def test_non_html_and_missing_urls(replay_server: ReplayServer, http: Any) -> None:
    replay_server.routes["/api"] = Reply(200, b'{"reviews": []}', content_type="application/json")
    with pytest.raises(ParseError, match="expected an HTML page, got application/json"):
        run(make(replay_server, http, "/api"))
    with pytest.raises(ParseError, match="needs `urls"):
        run(ReviewPageConnector(make_source("r", "reviews"), http))


def test_conditional_get_and_new_review(replay_server: ReplayServer, http: Any, corpora: Path) -> None:
    path = corpora / SAMPLES / "schema.org/CreativeWork.001.html"
    replay_server.routes["/books/catcher"] = Reply(200, path.read_bytes(), content_type="text/html", etag='"a"')
    batches, first = run(make(replay_server, http, "/books/catcher"))
    assert len(first) == 2
    again, none = run(make(replay_server, http, "/books/catcher"), batches[-1].cursor)
    assert none == [] and again[0].notes == (f"not modified: {replay_server.url}/books/catcher",)
    # The page changes: one more review appears; only it is new.
    html = path.read_text(encoding="utf-8").replace(
        '"review": [', '"review": [{"@type": "Review", "author": "Ann Lee", "datePublished": "2007-01-02",'
        ' "reviewBody": "Read it twice.", "reviewRating": {"ratingValue": "9", "bestRating": "10"}},', 1)
    replay_server.routes["/books/catcher"] = Reply(200, html.encode(), content_type="text/html", etag='"b"')
    _, added = run(make(replay_server, http, "/books/catcher"), batches[-1].cursor)
    assert [(m.author, m.rating) for m in added] == [("Ann Lee", pytest.approx(1 + 4 * 8 / 9, abs=1e-3))]
