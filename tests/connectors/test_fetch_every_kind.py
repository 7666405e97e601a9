"""End to end: a config with one source of each kind, `listener fetch` against the local replay server.

Every route replays the real captures the per-connector tests use (the same handlers, imported from
those modules). The stored mentions are compared with what each connector's pure parse function
yields on the same capture, and spot-checked against values read from the captures by hand:
authors, URLs, UTC timestamps, ratings and thread links. A second `fetch` stores nothing new.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from connectors.appstore import parse_appstore_feed
from connectors.discourse import link_replies, parse_discourse_posts
from connectors.googleplay import parse_play_page
from connectors.hackernews import parse_algolia_hits
from connectors.lemmy import parse_lemmy
from connectors.mastodon import parse_statuses
from connectors.reddit import normalise_rss_mention
from connectors.reviews import parse_review_page
from connectors.rss import parse_feed
from connectors.stackexchange import parse_questions
from listener.cli import main
from listener.types import SOURCE_KINDS, Mention
from storage import Store
from tests.connectors import test_contract_appstore as appstore
from tests.connectors import test_contract_googleplay as googleplay
from tests.connectors import test_contract_reddit_rss as reddit
from tests.connectors import test_discourse as discourse
from tests.connectors import test_hackernews as hackernews
from tests.connectors import test_lemmy as lemmy
from tests.connectors import test_mastodon as mastodon
from tests.connectors import test_stackexchange as stackexchange
from tests.connectors.contract import html_reply, json_file, robots_txt
from tests.support.server import ReplayServer, Reply

GUARDIAN = "rss_realworld/rss_parser/input/guardian.rss"
REVIEWS = "reviews_jsonld_extruct"
REVIEW_PAGES = {
    "/books/catcher": "schema.org/CreativeWork.001.html",
    "/biz/tacoma": "misc/null_ld_mock.html",
    "/anvil": "schema.org/product.html",  # an AggregateRating only: a note, no mention
}
DISCOURSE_TOPICS = (1148, 1149)
# Google's own rules (Allow the detail pages, Disallow the rest of /store/); the review pages stay allowed.
ROBOTS = "User-agent: *\nDisallow: /store/search\nAllow: /store/apps/details?\nDisallow: /store/\n"

WATCH_TERMS = ['"acme cloud"']
KINDS = SOURCE_KINDS


def serve_all(server: ReplayServer, corpora: Path) -> None:
    """Routes for all ten kinds on one server; no two kinds share a path."""
    server.routes["/robots.txt"] = robots_txt(ROBOTS)
    server.routes["/feed.rss"] = Reply(200, (corpora / GUARDIAN).read_bytes(), content_type="application/rss+xml")
    reddit.serve(server, corpora)  # /r/funny/new/.rss, /r/space/new/.rss, /search.rss
    server.routes["/api/v1/search_by_date"] = hackernews.fake_algolia(hackernews.algolia_payload(corpora))
    data = corpora / "discourse/perceval"
    server.routes["/latest.json"] = json_file(data / "discourse_topics.json")
    views = [discourse.load(corpora, f"perceval/discourse_topic_{t}.json") for t in DISCOURSE_TOPICS]
    for topic_id in DISCOURSE_TOPICS:
        server.routes[f"/t/{topic_id}.json"] = json_file(data / f"discourse_topic_{topic_id}.json")
        server.routes[f"/t/{topic_id}/posts.json"] = discourse.posts_by_ids(*views)
    stackexchange.serve(server, corpora)  # /2.3/search/advanced (2 pages), /2.3/questions/1/answers
    lemmy.serve(server)  # /api/v3/search, /api/v3/post/list
    mastodon.serve(server)  # /api/v1/timelines/tag/acmecloud, /api/v2/search
    appstore.serve_pages(server, appstore.capture(corpora))  # /us/rss/customerreviews/page=N/id=…/…/json
    googleplay.serve(server, corpora)  # /store/apps/details?id=…
    for path, name in REVIEW_PAGES.items():
        server.routes[path] = html_reply(corpora / REVIEWS / name)


def write_config(path: Path, url: str) -> None:
    def q(value: Any) -> str:
        return json.dumps(value)  # JSON strings and string arrays are valid TOML

    params: dict[str, dict[str, Any]] = {
        "rss": {"url": f"{url}/feed.rss"},
        "reddit": {"rss_base_url": url, "subreddits": ["funny", "r/space"], "search": True},
        "hackernews": {"base_url": f"{url}/api/v1", "firebase_url": f"{url}/v0", "hits_per_page": 7},
        "discourse": {"base_url": url},
        "stackexchange": {"base_url": f"{url}/2.3", "site": "stackoverflow"},
        "lemmy": {"base_url": url, "communities": ["selfhosted"]},
        "mastodon": {"base_url": url, "hashtags": ["acmecloud"]},
        "appstore": {"base_url": url, "app_id": appstore.APP, "country": "us"},
        "googleplay": {"base_url": url, "packages": [googleplay.IGTV, googleplay.TRIXI]},
        "reviews": {"urls": [f"{url}{p}" for p in REVIEW_PAGES]},
    }
    lines = ["[[watch]]", 'name = "acme"', f"terms = {q(WATCH_TERMS)}", ""]
    for kind in KINDS:
        lines += [
            "[[source]]",
            f"name = {q(kind + '-src')}",
            f"kind = {q(kind)}",
            'match = "all"',
            'backfill = "36500d"',
            "rate = 1000",
        ]
        lines += [f"{key} = {q(value)}" for key, value in params[kind].items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def run_cli(*argv: str) -> int:
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def stored(store: Store, kind: str) -> dict[str, Mention]:
    page = store.search(None, sources=[f"{kind}-src"], limit=1000)
    assert page.next_after is None
    return {hit.mention.native_id: hit.mention for hit in page.items}


def facts(m: Mention, *, with_time: bool = True) -> tuple[Any, ...]:
    return (m.native_id, m.author, m.url, m.created_at if with_time else None, m.rating, m.thread_id, m.parent_id)


def by_native_id(mentions: Iterable[Mention]) -> dict[str, list[Mention]]:
    """Every parsed occurrence of each native id: a post seen in two feeds (Reddit) or two topic views
    (perceval's anonymised Discourse topics reuse post ids) is stored once, as either occurrence."""
    out: dict[str, list[Mention]] = {}
    for m in mentions:
        out.setdefault(m.native_id, []).append(m)
    return out


def expected(kind: str, corpora: Path, url: str) -> dict[str, list[Mention]]:
    """What each connector's pure parse function makes of the very captures the server replays."""
    src = f"{kind}-src"
    parsers: dict[str, Callable[[], list[Mention]]] = {
        "rss": lambda: parse_feed((corpora / GUARDIAN).read_bytes(), source=src)[0],
        "reddit": lambda: [
            normalise_rss_mention(m)
            for name in ("reddit.rss", "reddit-atom.rss", "reddit-home.rss")
            for m in parse_feed(reddit.feed(corpora, name), source=src, kind="reddit")[0]
        ],
        "hackernews": lambda: parse_algolia_hits(hackernews.algolia_payload(corpora), source=src)[0],
        "discourse": lambda: [m for t in DISCOURSE_TOPICS for m in discourse_topic(corpora, t, src, url)],
        "stackexchange": lambda: [
            m
            for name in ("stackexchange_question_backoff_page.json", "stackexchange_question_page_2.json")
            for m in parse_questions(
                stackexchange.with_text(stackexchange.load(corpora, name)), source=src, site="stackoverflow"
            )[0]
        ],
        "lemmy": lambda: [
            m
            for name in ("search_all_new.json", "post_list_new_page1.json", "post_list_new_page2.json")
            for m in parse_lemmy(lemmy.load(name), source=src, base_url=url)[0]
        ],
        "mastodon": lambda: parse_statuses(
            mastodon.load("tag_acmecloud.json"), source=src, instance=urlsplit(url).netloc
        )[0],
        "appstore": lambda: parse_appstore_feed(
            appstore.capture(corpora), source=src, app_id=appstore.APP, country="us"
        )[0],
        "googleplay": lambda: [
            m
            for pkg in (googleplay.IGTV, googleplay.TRIXI)
            for m in parse_play_page(googleplay.page(corpora, pkg), source=src, package=pkg)[0]
        ],
        "reviews": lambda: [
            m
            for path, name in REVIEW_PAGES.items()
            for m in parse_review_page(
                (corpora / REVIEWS / name).read_text(encoding="utf-8"), source=src, url=f"{url}{path}"
            )[0]
        ],
    }
    return by_native_id(parsers[kind]())


def discourse_topic(corpora: Path, topic_id: int, source: str, url: str) -> list[Mention]:
    """One topic view's posts, replies linked to the post they answer (post number → post id)."""
    view = discourse.load(corpora, f"perceval/discourse_topic_{topic_id}.json")
    mentions = parse_discourse_posts(view, source=source, base_url=url)[0]
    return link_replies(mentions, {m.extra["post_number"]: m.native_id for m in mentions})


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def test_fetch_every_kind_stores_the_expected_mentions(
    replay_server: ReplayServer, corpora: Path, tmp_path: Path
) -> None:
    serve_all(replay_server, corpora)
    url = replay_server.url
    config, db = tmp_path / "listener.toml", tmp_path / "listener.db"
    write_config(config, url)

    assert run_cli("-c", str(config), "--db", str(db), "fetch") == 0
    with Store.open(db) as store:
        states = {s.source: s for s in store.source_states()}
        assert sorted(states) == sorted(f"{k}-src" for k in KINDS)
        for name, state in states.items():
            assert state.last_run is not None and state.last_run.status == "ok", (name, state.last_error)
            assert state.consecutive_failures == 0 and state.last_error is None, name
        got = {kind: stored(store, kind) for kind in KINDS}
        first_total = store.count()

    # Every kind stored exactly what its parser finds in the replayed captures, fields intact.
    for kind in KINDS:
        want = expected(kind, corpora, url)
        mentions = got[kind]
        assert mentions, f"{kind}: nothing stored"
        assert sorted(mentions) == sorted(want), f"{kind}: stored ids differ from the parsed capture"
        for native_id, m in mentions.items():
            assert m.kind == kind and m.source == f"{kind}-src"
            assert m.created_at.tzinfo is not None and m.created_at.utcoffset() == timedelta(0), (kind, native_id)
            timed = not (kind == "reviews" and m.extra.get("date_estimated"))  # undated review: fetch time
            assert facts(m, with_time=timed) in [facts(w, with_time=timed) for w in want[native_id]], (kind, native_id)
    counts = {kind: len(got[kind]) for kind in KINDS}
    assert counts == {
        "rss": 55,
        "reddit": 72,  # three feeds, each post once
        "hackernews": 20,
        "discourse": 20,
        "stackexchange": 3,
        "lemmy": 6,
        "mastodon": 5,
        "appstore": 50,
        "googleplay": 41,
        "reviews": 3,
    }
    assert first_total == sum(counts.values())

    # Spot checks against values read from the captures by hand.
    sotu = "https://www.theguardian.com/us-news/2018/jan/31/donald-trump-state-of-the-union-address-unity-discord"
    item = got["rss"][sotu]  # the feed's first <item>; its guid is the article URL
    assert (item.author, item.url, item.created_at) == ("David Smith in Washington", sotu, utc(2018, 1, 31, 7, 26, 5))
    assert item.title == "Trump State of the Union address promised unity but emphasized discord"

    post = got["reddit"]["t3_3sl82z"]
    assert post.thread_id == "t3_3sl82z" and post.created_at == utc(2015, 11, 12, 22, 27, 28)
    home = got["reddit"]["t3_42tizy"]
    assert home.author == "AngryRedditorsBelow" and home.created_at == utc(2016, 1, 26, 20, 31, 34)
    assert (
        home.url == "https://www.reddit.com/r/funny/comments/42tizy/how_the_british_as_seen_by_americans_and_europeans/"
    )

    comment = got["hackernews"]["15353312"]
    assert (comment.author, comment.thread_id, comment.parent_id) == ("RealJon", "15345483", "15352681")
    assert comment.url == "https://news.ycombinator.com/item?id=15353312"
    assert comment.created_at == utc(2017, 9, 27, 23, 33, 24)
    story = got["hackernews"]["15348473"]
    assert (story.author, story.title, story.thread_id, story.parent_id) == ("nikolay", "Node v8.6.0", "15348473", None)

    assert {m.thread_id for m in got["discourse"].values()} == {"1148", "1149"}
    reply = got["discourse"]["20545"]  # post 20 of topic 1148, replying to post 19 (id 20218)
    assert (reply.author, reply.thread_id, reply.parent_id) == ("Keith14", "1148", "20218")
    assert reply.url == f"{url}/t/support-ublock-origin/1148/20"
    assert reply.created_at == utc(2016, 2, 22, 0, 51, 51, 300000)
    assert all(m.url and m.url.startswith(f"{url}/t/") for m in got["discourse"].values())

    question, answer = got["stackexchange"]["q1"], got["stackexchange"]["a1"]
    assert question.author == "zhquan_example_3" and question.created_at == utc(2016, 4, 6, 2, 1, 16)
    assert question.url == "https://stackoverflow.com/q/1"
    assert answer.author == "zhquan_example_1" and answer.created_at == datetime.fromtimestamp(1459975066, UTC)
    assert answer.thread_id == answer.parent_id == "q1"
    second = got["stackexchange"]["a2"]  # the anonymised capture files answer 2 under question_id 2
    assert (second.author, second.thread_id, second.parent_id) == ("zhquan_example_2", "q2", "q2")
    assert second.created_at == utc(2016, 4, 7, 2, 11, 6)

    lemmy_post = got["lemmy"]["post/1184377"]
    assert lemmy_post.author == "alice_k@lemmy.ml" and lemmy_post.url == "https://lemmy.ml/post/1184377"
    assert lemmy_post.created_at == utc(2024, 3, 5, 9, 12, 44, 318220)
    top, reply = got["lemmy"]["comment/6631502"], got["lemmy"]["comment/6633120"]
    assert top.parent_id == top.thread_id == "post/1184377"
    assert reply.parent_id == "comment/6631502" and reply.author == "alice_k@lemmy.ml"
    assert reply.url == "https://lemmy.ml/comment/6633120"

    ids = mastodon.IDS
    toot = got["mastodon"][ids[0]]
    # A local account ("ana") is qualified with the instance it was read from: here the replay server.
    assert toot.author == f"ana@{urlsplit(url).netloc}" and toot.url == f"https://mastodon.social/@ana/{ids[0]}"
    assert toot.created_at == utc(2024, 3, 5, 9, 40, 12, 511000)
    assert got["mastodon"][ids[1]].parent_id == ids[0] and got["mastodon"][ids[1]].author == "jo@fosstodon.org"

    review = got["appstore"]["7175647643"]
    assert (review.author, review.rating, review.thread_id) == ("WB-SBB", 2.0, f"app:{appstore.APP}")
    assert review.url == "https://itunes.apple.com/us/review?id=1321994487&type=Purple%20Software"
    assert review.created_at == utc(2021, 4, 12, 19, 43, 52)
    assert sorted(int(m.rating or 0) for m in got["appstore"].values()) == sorted(
        [5] * 20 + [4] * 7 + [3] * 3 + [2] * 9 + [1] * 11
    )

    play = next(m for m in got["googleplay"].values() if m.author == "Cazzie")
    assert play.rating == 1.0 and play.created_at == utc(2019, 11, 19, 6, 43, 47)
    assert play.url == f"https://play.google.com/store/apps/details?id={googleplay.IGTV}&reviewId={play.native_id}"
    assert play.thread_id == f"app:{googleplay.IGTV}"
    trixi = next(m for m in got["googleplay"].values() if m.thread_id == f"app:{googleplay.TRIXI}")
    assert (trixi.author, trixi.rating, trixi.created_at) == ("Shuhsi2 Japan", 5.0, utc(2019, 7, 21, 3, 25, 44))

    by_author = {m.author: m for m in got["reviews"].values()}
    john = by_author["John Doe"]
    assert john.rating == 5.0 and john.created_at == utc(2006, 5, 4)
    assert john.url == john.thread_id == f"{url}/books/catcher"
    assert by_author["Bob Smith"].rating == 4.0
    assert by_author[None].rating is None and by_author[None].url == f"{url}/biz/tacoma"

    # The review pages and the Play pages were only fetched after robots.txt allowed them.
    assert replay_server.hits("/robots.txt")

    # A second fetch resumes from the stored cursors: nothing new anywhere.
    requests_before = len(replay_server.requests)
    assert run_cli("-c", str(config), "--db", str(db), "fetch") == 0
    assert len(replay_server.requests) > requests_before
    with Store.open(db) as store:
        rerun = store.runs(limit=len(KINDS))  # newest first: exactly the second fetch's runs
        assert sorted(r.source for r in rerun) == sorted(f"{k}-src" for k in KINDS)
        assert all(r.status == "ok" for r in rerun), [(r.source, r.error) for r in rerun if r.status != "ok"]
        assert sum(r.new for r in rerun) == 0, {r.source: r.new for r in rerun if r.new}
        assert sum(r.updated for r in rerun) == 0, {r.source: r.updated for r in rerun if r.updated}
        assert store.count() == first_total


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The config and database come from the command line only."""
    for name in ("LISTENER_CONFIG", "LISTENER_DB", "LISTENER_DEBUG"):
        monkeypatch.delenv(name, raising=False)
