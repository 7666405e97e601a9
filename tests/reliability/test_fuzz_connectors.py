"""Property-based fuzzing of every connector's pure `parse_*` function (tracker issue 10).

Each parser gets (1) arbitrary JSON-like values / arbitrary bytes, (2) real captures from
../shared/corpora (read in place) with nodes replaced by values *of the same JSON type*, and (3) the
same captures with nodes replaced by values of *any* type or deleted. The property: the parser returns
well-typed mentions (strings where storage expects strings) or raises a `ListenerError` whose message
names the source; never any other exception.

A new bug is pinned as `xfail(strict=True)` with the reason (and listed in fuzzing.KNOWN_BUGS); when its
fix lands the xfail turns into an XPASS failure: drop the marker then. The bugs found so far are fixed
(docs/reliability.md, findings 1–2); their reproducers below run as ordinary tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors import appstore, discourse, googleplay, hackernews, lemmy, mastodon, reddit, reviews, rss, stackexchange
from listener.types import Mention, utcnow
from tests.conftest import CORPORA
from tests.reliability.fuzzing import (
    BOUNDED,
    SOURCE,
    check_outcome,
    json_values,
    load_json,
    mutated_bytes,
    mutated_json,
)

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
FIXTURES = Path(__file__).resolve().parent.parent / "connectors" / "fixtures"


@dataclass(frozen=True)
class JsonParser:
    name: str
    parse: Callable[[Any], Any]
    captures: tuple[Path, ...]


JSON_PARSERS = [
    JsonParser(
        "hackernews.parse_algolia_hits",
        lambda p: hackernews.parse_algolia_hits(p, source=SOURCE),
        (CORPORA / "hackernews/algolia/search_by_date_query_nodejs.json",),
    ),
    JsonParser(
        "hackernews.parse_firebase_item",
        lambda p: hackernews.parse_firebase_item(p, source=SOURCE, item_id="1"),
        tuple(sorted((CORPORA / "hackernews/firebase_api_readme").glob("item_*.json"))),
    ),
    JsonParser(
        "discourse.parse_topic_list",
        lambda p: discourse.parse_topic_list(p, source=SOURCE),
        (
            CORPORA / "discourse/discourse_api_gem/latest.json",
            CORPORA / "discourse/perceval/discourse_topics_empty.json",
        ),
    ),
    JsonParser(
        "discourse.parse_search",
        lambda p: discourse.parse_search(p, source=SOURCE),
        (CORPORA / "discourse/discourse_api_gem/search.json",),
    ),
    JsonParser(
        "discourse.parse_discourse_posts",
        lambda p: discourse.parse_discourse_posts(p, source=SOURCE, base_url="https://forum.example"),
        (
            CORPORA / "discourse/discourse_api_gem/topic.json",
            CORPORA / "discourse/criticalfallibilism_capture/t_2108_posts.json",
            CORPORA / "discourse/perceval/discourse_topic_1148.json",
        ),
    ),
    JsonParser(
        "stackexchange.parse_questions",
        lambda p: stackexchange.parse_questions(p, source=SOURCE, site="stackoverflow"),
        tuple(sorted((CORPORA / "stackexchange").rglob("*.json"))),
    ),
    JsonParser(
        "stackexchange.parse_answers",
        lambda p: stackexchange.parse_answers(p, source=SOURCE, site="stackoverflow", titles={1: "t"}),
        tuple(sorted((CORPORA / "stackexchange").rglob("*.json"))),
    ),
    JsonParser(
        "lemmy.parse_lemmy",
        lambda p: lemmy.parse_lemmy(p, source=SOURCE, base_url="https://lemmy.example"),
        tuple(sorted((FIXTURES / "lemmy").glob("*.json"))),
    ),
    JsonParser(
        "mastodon.parse_statuses",
        lambda p: mastodon.parse_statuses(p, source=SOURCE, instance="mastodon.example"),
        tuple(sorted((FIXTURES / "mastodon").glob("*.json"))),
    ),
    JsonParser(
        "appstore.parse_appstore_feed",
        lambda p: appstore.parse_appstore_feed(p, source=SOURCE, app_id="1", country="us"),
        (CORPORA / "appstore_reviews/customerreviews_id1321994487_us.json",),
    ),
]
_CAPTURES: dict[str, list[Any]] = {}


def captures(parser: JsonParser) -> list[Any]:
    if parser.name not in _CAPTURES:
        assert parser.captures, f"no captures found for {parser.name}"
        _CAPTURES[parser.name] = [load_json(p) for p in parser.captures]
    return _CAPTURES[parser.name]


def _ids(parsers: list[JsonParser]) -> list[str]:
    return [p.name for p in parsers]


def payloads(parser: JsonParser, kind: str) -> st.SearchStrategy[Any]:
    """Arbitrary JSON, or a real capture with fields replaced by values of the same / of any type."""
    if kind == "arbitrary":
        return json_values
    bases = captures(parser)
    keep_types = kind == "same-type mutations"
    return st.integers(0, len(bases) - 1).flatmap(lambda i: mutated_json(bases[i], keep_types=keep_types))


@pytest.mark.parametrize("kind", ["arbitrary", "same-type mutations", "any-type mutations"])
@pytest.mark.parametrize("parser", JSON_PARSERS, ids=_ids(JSON_PARSERS))
def test_json_parsers_never_crash(parser: JsonParser, kind: str) -> None:
    @BOUNDED
    @given(payloads(parser, kind))
    def run(payload: Any) -> None:
        check_outcome(lambda: parser.parse(payload), tolerate_known=False)

    run()


# -- minimal reproducers of the bugs fuzzing found (fixed; one line each so a regression is obvious) --
_POST = {"id": 1, "post_number": 1, "topic_id": 1, "created_at": "2024-01-01T00:00:00Z", "cooked": "<p>x</p>"}
_HIT = {"objectID": "1", "created_at_i": 1700000000, "_tags": ["comment"], "story_id": 2}
REPRODUCERS = [
    (
        "algolia comment_text is a number",
        lambda: hackernews.parse_algolia_hits({"hits": [{**_HIT, "comment_text": 5}]}, source=SOURCE),
    ),
    (
        "algolia author is a number",
        lambda: hackernews.parse_algolia_hits({"hits": [{**_HIT, "comment_text": "hi", "author": 7}]}, source=SOURCE),
    ),
    (
        "firebase title is a list",
        lambda: hackernews.parse_firebase_item({"id": 1, "title": ["x"]}, source=SOURCE, item_id="1"),
    ),
    ("discourse search posts is true", lambda: discourse.parse_search({"posts": True}, source=SOURCE)),
    (
        "discourse cooked is an object",
        lambda: discourse.parse_discourse_posts(
            {"post_stream": {"posts": [{**_POST, "cooked": {"a": 1}}]}}, source=SOURCE, base_url="https://f"
        ),
    ),
    (
        "discourse username is a list",
        lambda: discourse.parse_discourse_posts(
            {"post_stream": {"posts": [{**_POST, "username": [1]}]}}, source=SOURCE, base_url="https://f"
        ),
    ),
    (
        "mastodon content is a list",
        lambda: mastodon.parse_statuses(
            [{"id": "1", "created_at": "2024-01-01T00:00:00Z", "content": ["x"]}], source=SOURCE, instance="m"
        ),
    ),
    (
        "appstore link.attributes is a list",
        lambda: appstore.parse_appstore_feed(
            {"feed": {"entry": [{"id": {"label": "1"}, "im:rating": {"label": "5"}, "link": {"attributes": []}}]}},
            source=SOURCE,
        ),
    ),
    (
        "appstore link href is an object",
        lambda: appstore.parse_appstore_feed(
            {
                "feed": {
                    "entry": [{"id": {"label": "1"}, "im:rating": {"label": "5"}, "link": {"attributes": {"href": {}}}}]
                }
            },
            source=SOURCE,
        ),
    ),
    (
        "algolia created_at_i out of range",
        lambda: hackernews.parse_algolia_hits(
            {"hits": [{**_HIT, "comment_text": "hi", "created_at_i": -(10**13)}]}, source=SOURCE
        ),
    ),
    (
        "stackexchange creation_date out of range",
        lambda: stackexchange.parse_questions(
            {"items": [{"question_id": 1, "creation_date": 10**15, "title": "t", "body": "b"}]},
            source=SOURCE,
            site="stackoverflow",
        ),
    ),
    (
        "algolia _tags is true",
        lambda: hackernews.parse_algolia_hits({"hits": [{**_HIT, "title": "t", "_tags": True}]}, source=SOURCE),
    ),
    (
        "discourse actions_summary is a number",
        lambda: discourse.parse_discourse_posts(
            {"post_stream": {"posts": [{**_POST, "actions_summary": 5}]}}, source=SOURCE, base_url="https://f"
        ),
    ),
    (
        "discourse stream is a number",
        lambda: discourse.parse_discourse_posts(
            {"post_stream": {"posts": [], "stream": 3}}, source=SOURCE, base_url="https://f"
        ),
    ),
    (
        "lemmy comments is true",
        lambda: lemmy.parse_lemmy({"posts": [], "comments": True}, source=SOURCE, base_url="https://l"),
    ),
    (
        "mastodon media_attachments is a number",
        lambda: mastodon.parse_statuses(
            [{"id": "1", "created_at": "2024-01-01T00:00:00Z", "content": "", "media_attachments": 1}],
            source=SOURCE,
            instance="m",
        ),
    ),
    (
        "mastodon tags is a number",
        lambda: mastodon.parse_statuses(
            [{"id": "1", "created_at": "2024-01-01T00:00:00Z", "content": "x", "tags": 1}], source=SOURCE, instance="m"
        ),
    ),
    (
        "stackexchange answers is true",
        lambda: stackexchange.parse_questions(
            {"items": [{"question_id": 1, "creation_date": 1700000000, "title": "t", "body": "b", "answers": True}]},
            source=SOURCE,
            site="stackoverflow",
        ),
    ),
    (
        "stackexchange tags is a number",
        lambda: stackexchange.parse_questions(
            {"items": [{"question_id": 1, "creation_date": 1700000000, "title": "t", "body": "b", "tags": 7}]},
            source=SOURCE,
            site="stackoverflow",
        ),
    ),
    (
        "google play review timestamp out of range",
        lambda: googleplay.parse_play_page(
            '<script>AF_initDataCallback({key: \'ds:1\', hash: \'1\', data:[["gp:1",["a","b"],5,null,'
            '"text",[99999999999999]]], sideChannel: {}});</script>',
            source=SOURCE,
            package="com.example",
        ),
    ),
    (
        "lemmy ap_id is a number",
        lambda: lemmy.parse_lemmy(
            {"posts": [{"post": {"id": 1, "published": "2024-01-01T00:00:00Z", "name": "t", "ap_id": 5}}]},
            source=SOURCE,
            base_url="https://l",
        ),
    ),
    (
        "mastodon url is a number",
        lambda: mastodon.parse_statuses(
            [{"id": "1", "created_at": "2024-01-01T00:00:00Z", "content": "x", "url": 5}], source=SOURCE, instance="m"
        ),
    ),
]


@pytest.mark.parametrize("call", [c for _, c in REPRODUCERS], ids=[n for n, _ in REPRODUCERS])
def test_fixed_bug_reproducer(call: Callable[[], Any]) -> None:
    check_outcome(call, tolerate_known=False)


# -- byte-level parsers ------------------------------------------------------------------------------
def _feeds() -> list[bytes]:
    files = sorted(
        p for p in (CORPORA / "rss_realworld").rglob("*") if p.is_file() and p.suffix in (".rss", ".xml", ".atom", "")
    )
    files += sorted((CORPORA / "rss_feedparser" / "wellformed").rglob("*.xml"))[:20]
    files += sorted((CORPORA / "rss_feedparser" / "illformed").rglob("*.xml"))
    files += [CORPORA / "rss_feedparser/json/example.json"]
    return [p.read_bytes() for p in files if p.name not in ("LICENSE", "SOURCES.md")][:60]


BYTE_PARSERS: list[tuple[str, Callable[[bytes], Any], Callable[[], list[bytes]]]] = [
    ("rss.parse_feed", lambda b: rss.parse_feed(b, source=SOURCE, feed_url="https://feed.example/x"), _feeds),
    (
        "googleplay.parse_play_page",
        lambda b: googleplay.parse_play_page(b.decode("utf-8", "replace"), source=SOURCE, package="com.example"),
        lambda: [p.read_bytes() for p in sorted((CORPORA / "google_play").glob("*.html"))],
    ),
    (
        "reviews.parse_review_page",
        lambda b: reviews.parse_review_page(b.decode("utf-8", "replace"), source=SOURCE, url="https://shop.example/p"),
        lambda: [p.read_bytes() for p in sorted((CORPORA / "reviews_jsonld_extruct").rglob("*.html"))],
    ),
]


@pytest.mark.parametrize(("name", "parse", "bases"), BYTE_PARSERS, ids=[b[0] for b in BYTE_PARSERS])
def test_arbitrary_and_mutated_bytes(
    name: str, parse: Callable[[bytes], Any], bases: Callable[[], list[bytes]]
) -> None:
    real = bases()
    assert real, f"no captures for {name}"

    @BOUNDED
    @given(st.binary(max_size=512) | st.integers(0, len(real) - 1).flatmap(lambda i: mutated_bytes(real[i])))
    def run(data: bytes) -> None:
        check_outcome(lambda: parse(data))

    run()


def test_reddit_rss_normalisation_never_crashes() -> None:
    """`normalise_rss_mention` rewrites ids/authors/text of Reddit RSS entries from whatever the feed carried."""

    @BOUNDED
    @given(
        st.text(min_size=1, max_size=60),
        st.none() | st.text(max_size=80),
        st.text(max_size=200),
        st.none() | st.text(max_size=20),
        st.lists(st.text(max_size=10), max_size=3),
    )
    def run(native: str, url: str | None, text: str, author: str | None, tags: list[str]) -> None:
        m = Mention(
            source=SOURCE,
            kind="reddit",
            native_id=native,
            url=url,
            title=None,
            text=text,
            author=author,
            created_at=utcnow(),
            extra={"tags": tags} if tags else {},
        )
        out = reddit.normalise_rss_mention(m)
        assert out.native_id and isinstance(out.text, str)

    run()
