"""Reddit OAuth mode (praw) replayed from PRAW's recorded cassettes.

praw does not use HttpClient, so the contract's properties are checked here directly: stable ids,
UTC times, oldest-first committed batches, incremental runs, crash safety, a 403 that names itself,
the listing-cap note, deletion markers and the per-run request budget.

Replay: praw only needs a `requests` session (`requestor_kwargs={"session": …}`), so a small
transport adapter (below) matches (method, host, path, order-independent query) like PRAW's own
recorder, fails loudly on any request the cassette does not hold, and lets a test add the odd extra
route (an empty next page) explicitly. Chosen over vcrpy: no global patching, no network fallback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import praw
import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from connectors.reddit import RedditConnector, deletion_of, parse_praw_comment, parse_praw_submission
from listener import __version__
from listener.config import Secret, SourceConfig
from listener.errors import SourceError
from listener.matching import WatchQuery
from listener.types import Batch, Cursor, Mention

DROP_HEADERS = {"content-encoding", "content-length", "transfer-encoding"}
EMPTY_LISTING = json.dumps({"kind": "Listing", "data": {"children": [], "after": None, "before": None}})


@dataclass
class Route:
    method: str
    host: str
    path: str
    query: dict[str, list[str]]
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    loose: frozenset[str] = frozenset()
    """Query keys not compared (e.g. search sort/syntax, which the cassette recorded differently)."""
    hits: int = 0

    def matches(self, method: str, url: str) -> bool:
        parts = urlsplit(url)
        if (method.upper(), parts.netloc, parts.path.rstrip("/")) != (self.method, self.host, self.path.rstrip("/")):
            return False
        asked = {k: v for k, v in parse_qs(parts.query).items() if k not in self.loose}
        wanted = {k: v for k, v in self.query.items() if k not in self.loose}
        return asked == wanted


class CassetteAdapter(BaseAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.routes: list[Route] = []
        self.requests: list[requests.PreparedRequest] = []

    def load(self, path: Path, *, loose: frozenset[str] = frozenset()) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        for interaction in data["interactions"]:
            req, resp = interaction["request"], interaction["response"]
            parts = urlsplit(req["uri"])
            headers = {k: v[0] if isinstance(v, list) else v for k, v in resp["headers"].items()
                       if k.lower() not in DROP_HEADERS}
            self.routes.append(Route(req["method"], parts.netloc, parts.path, parse_qs(parts.query),
                                     resp["status"]["code"], resp["body"].get("string", ""), headers, loose))

    def add(self, method: str, url: str, body: str, status: int = 200) -> None:
        parts = urlsplit(url)
        self.routes.append(Route(method, parts.netloc, parts.path, parse_qs(parts.query), status, body,
                                 {"Content-Type": "application/json; charset=UTF-8"}))

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        method, url = request.method or "GET", request.url or ""
        for route in self.routes:
            if route.matches(method, url):
                route.hits += 1
                response = requests.Response()
                response.status_code = route.status
                response.headers = CaseInsensitiveDict(route.headers)
                response._content = route.body.encode("utf-8")
                response.url = url
                response.request = request
                response.encoding = "utf-8"
                return response
        raise AssertionError(f"request not in cassette: {method} {url}")

    def close(self) -> None:
        pass


def cassette_session(corpora: Path, *names: str, loose: frozenset[str] = frozenset()) -> tuple[requests.Session,
                                                                                              CassetteAdapter]:
    adapter = CassetteAdapter()
    for name in names:
        adapter.load(corpora / "reddit_praw" / "cassettes" / f"{name}.json", loose=loose)
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session, adapter


OAUTH = "https://oauth.reddit.com"
NEW_PAGE2 = f"{OAUTH}/r/askreddit/new?raw_json=1&limit=100&after=t3_48f6io"
COMMENTS_PAGE2 = f"{OAUTH}/r/askreddit/comments/?raw_json=1&limit=100&after=t1_d4y8a9e"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REDDIT_ID", "client-id")
    monkeypatch.setenv("TEST_REDDIT_SECRET", "client-secret")


def source(**params: Any) -> SourceConfig:
    base = {"client_id": Secret("TEST_REDDIT_ID"), "client_secret": Secret("TEST_REDDIT_SECRET"),
            "reddit_user": "acme_listener"}
    return SourceConfig(name="reddit", kind="reddit", params={**base, **params}, backfill=timedelta(days=365 * 30),
                        match=params.pop("match", "watch"))


def cassette_body(corpora: Path, name: str, index: int = 1) -> Any:
    data = json.loads((corpora / "reddit_praw/cassettes" / f"{name}.json").read_text())
    return json.loads(data["interactions"][index]["response"]["body"]["string"])


def objectify(payload: Any) -> Any:
    """praw models from recorded JSON, without a single request (praw's own objector)."""
    reddit = praw.Reddit(client_id="x", client_secret="y", user_agent="tests:listener:1.0", check_for_async=False)
    return reddit._objector.objectify(data=payload)


def askreddit(corpora: Path, http: Any, cursor: Cursor | None = None, **params: Any) -> tuple[
        list[Batch], CassetteAdapter]:
    session, adapter = cassette_session(corpora, "TestSubredditListings.test_new", "TestSubredditListings.test_comments")
    adapter.add("GET", NEW_PAGE2, EMPTY_LISTING)
    adapter.add("GET", COMMENTS_PAGE2, EMPTY_LISTING)
    connector = RedditConnector(source(subreddits=["askreddit"], **params), http, session=session)
    return list(connector.fetch(cursor or Cursor())), adapter


def test_parse_submission(corpora: Path) -> None:
    listing = objectify(cassette_body(corpora, "TestSubredditListings.test_new"))
    m = parse_praw_submission(listing.children[0], source="reddit")
    assert m.native_id == "t3_48fbm9" and m.thread_id == "t3_48fbm9"
    assert m.title == "[Serious] Parents of Reddit, what's the biggest lie about yourself you've told your kids?"
    assert m.author == "RedHeadQc"
    assert m.url == "https://www.reddit.com/r/AskReddit/comments/48fbm9/serious_parents_of_reddit_whats_the_biggest_lie/"
    assert m.created_at == datetime(2016, 3, 1, 8, 37, 38, tzinfo=UTC)
    assert (m.score, m.comments) == (1.0, 1)
    assert m.extra == {"subreddit": "AskReddit", "flair": "serious replies only"}  # a self post: no link
    assert m.raw is not None and '"comment_sort"' not in m.raw and '"_fetched"' not in m.raw


def test_parse_comment(corpora: Path) -> None:
    listing = objectify(cassette_body(corpora, "TestSubredditListings.test_comments"))
    m = parse_praw_comment(listing.children[0], source="reddit")
    assert m.native_id == "t1_d4y8bdp"
    assert m.author == "preppypuppy"
    assert m.text == "great, life is so much better when you can do what you enjoy for a living"
    assert (m.thread_id, m.parent_id) == ("t3_4r4inc", "t3_4r4inc")
    assert m.title == '[Serious] To anyone who "followed their dreams", how has it panned out?'
    assert m.url == "https://www.reddit.com/comments/4r4inc/_/d4y8bdp/"
    assert m.created_at == datetime.fromtimestamp(1467590690, UTC)


def test_deleted_comment_marker(corpora: Path) -> None:
    deleted = objectify(cassette_body(corpora, "TestComment.test_refresh__deleted_comment")).children[0]
    marker = deletion_of(deleted, source="reddit")
    assert marker is not None
    assert (marker.native_id, marker.text, marker.extra) == ("t1_d7ltvl0", "[deleted]", {"deleted": True,
                                                                                         "reason": "[deleted]"})
    intact = objectify(cassette_body(corpora, "TestComment.test_refresh")).children[0]
    assert deletion_of(intact, source="reddit") is None


def test_first_run_oldest_first_and_incremental(corpora: Path, http: Any) -> None:
    batches, adapter = askreddit(corpora, http)
    mentions = [m for b in batches for m in b.mentions]
    assert len(mentions) == 200 and len({m.id for m in mentions}) == 200
    assert all(m.created_at.tzinfo is UTC for m in mentions)
    posts, comments = batches[0].mentions, batches[1].mentions
    assert all(m.native_id.startswith("t3_") for m in posts) and all(m.native_id.startswith("t1_") for m in comments)
    assert [m.created_at for m in posts] == sorted(m.created_at for m in posts)
    assert batches[0].cursor.extra["streams"]["r/askreddit/new"]["t"] == posts[-1].created_at.timestamp()
    assert batches[-1].cursor.last_time == max(m.created_at for m in mentions)
    assert not any("listing cap" in n for b in batches for n in b.notes)  # 100 items: the whole listing
    agents = {str(r.headers["User-Agent"]) for r in adapter.requests}
    assert len(agents) == 1 and agents.pop().startswith("python:customer-voice-listener:")
    final = Cursor.from_json(batches[-1].cursor.to_json())
    again, _ = askreddit(corpora, http, final)
    assert [m for b in again for m in b.mentions] == []
    ids = {m.native_id: m.id for m in mentions}
    rerun, _ = askreddit(corpora, http)
    assert {m.native_id: m.id for b in rerun for m in b.mentions} == ids


def test_crash_after_first_batch_loses_nothing(corpora: Path, http: Any) -> None:
    batches, _ = askreddit(corpora, http)
    rest, _ = askreddit(corpora, http, Cursor.from_json(batches[0].cursor.to_json()))
    first = {m.id for m in batches[0].mentions}
    after = {m.id for b in rest for m in b.mentions}
    assert first | after == {m.id for b in batches for m in b.mentions} and not first & after


def test_listing_cap_note(corpora: Path, http: Any) -> None:
    stored = datetime(2016, 2, 1, tzinfo=UTC).timestamp()  # a month before the oldest item the listing returns
    cursor = Cursor(last_time=datetime.fromtimestamp(stored, UTC),
                    extra={"streams": {"r/askreddit/new": {"t": stored, "ids": []}}})
    batches, _ = askreddit(corpora, http, cursor)
    notes = [n for b in batches for n in b.notes]
    assert any(n.startswith("r/askreddit/new: backlog larger than the 1000-item listing cap") for n in notes)
    assert not any(n.startswith("r/askreddit/comments") for n in notes)  # first run of that stream


def test_request_budget(corpora: Path, http: Any) -> None:
    batches, adapter = askreddit(corpora, http, max_requests=3)  # token + 2 pages of r/askreddit/new
    assert batches[-1].notes == ("request budget of 3 reached; r/askreddit/comments waits",)
    assert "r/askreddit/comments" not in batches[-1].cursor.extra["streams"]
    assert len(adapter.requests) == 3


def test_forbidden_subreddit_names_itself(corpora: Path, http: Any) -> None:
    session, adapter = cassette_session(corpora, "TestSubredditQuarantine.test_opt_in")
    forbidden = json.dumps(cassette_body(corpora, "TestSubredditQuarantine.test_opt_in"))
    adapter.add("GET", f"{OAUTH}/r/ferguson/new?raw_json=1&limit=100", forbidden, status=403)
    connector = RedditConnector(source(subreddits=["ferguson"]), http, session=session)
    with pytest.raises(SourceError, match=r"r/ferguson/new: HTTP 403 Forbidden"):
        list(connector.fetch(Cursor()))


def test_search_and_comment_threads(corpora: Path, http: Any) -> None:
    session, adapter = cassette_session(corpora, "TestSubreddit.test_search", "TestSubmission.test_comments",
                                        loose=frozenset({"sort", "syntax", "t", "restrict_sr", "limit"}))
    post_listing = json.dumps(cassette_body(corpora, "TestSubmission.test_comments")[0])
    adapter.add("GET", f"{OAUTH}/r/redditdev/new?raw_json=1&limit=100", post_listing)
    adapter.add("GET", f"{OAUTH}/r/redditdev/comments/?raw_json=1&limit=100", EMPTY_LISTING)
    watches = [WatchQuery.build("praw", ["praw oauth search"])]
    connector = RedditConnector(source(subreddits=["redditdev"], search=True), http, watches, session=session)
    assert connector.search_query() == "praw oauth search"
    batches = list(connector.fetch(Cursor()))
    by_stream = {tuple(b.cursor.extra["streams"])[-1]: b for b in batches}
    assert [m.native_id for m in by_stream["r/redditdev/new"].mentions] == ["t3_2gmzqe"]
    search = by_stream["search"].mentions
    assert len(search) == 6 and {m.extra["subreddit"] for m in search} >= {"redditdev", "learnpython"}
    assert [m.created_at for m in search] == sorted(m.created_at for m in search)

    # With `comments = true`, a post matching a watch brings its comment tree into the same batch.
    session, adapter = cassette_session(corpora, "TestSubmission.test_comments", loose=frozenset({"sort"}))
    adapter.add("GET", f"{OAUTH}/r/redditdev/new?raw_json=1&limit=100", post_listing)
    adapter.add("GET", f"{OAUTH}/r/redditdev/comments/?raw_json=1&limit=100", EMPTY_LISTING)
    connector = RedditConnector(source(subreddits=["redditdev"], comments=True), http,
                                [WatchQuery.build("praw", ["praw https"])], session=session)
    first = next(iter(connector.fetch(Cursor())))
    assert [m.native_id for m in first.mentions][:1] == ["t3_2gmzqe"]
    replies = first.mentions[1:]
    assert replies and all(m.thread_id == "t3_2gmzqe" and m.native_id.startswith("t1_") for m in replies)
    assert replies[0].author == "paneer_burrito"


def test_replace_more_is_bounded(corpora: Path, http: Any) -> None:
    session, adapter = cassette_session(corpora, "TestMore.test_comments", loose=frozenset({"sort"}))
    connector = RedditConnector(source(subreddits=["x"], replace_more=1), http, session=session)
    comments = connector.thread("t3_3hahrw")
    assert len(comments) > 400 and len({m.id for m in comments}) == len(comments)
    posts = [r for r in adapter.requests if r.method == "POST" and "morechildren" in (r.url or "")]
    assert len(posts) == 1


def test_recheck_yields_purge_markers(corpora: Path, http: Any) -> None:
    session, _ = cassette_session(corpora, "TestComment.test_refresh__deleted_comment", "TestSubredditListings.test_new",
                                  "TestSubredditListings.test_comments")
    batches, _ = askreddit(corpora, http)
    cursor = batches[-1].cursor
    recent = [["t1_d7ltvl0", datetime.now(UTC).timestamp()]]
    cursor = cursor.advanced(extra={**cursor.extra, "recent": recent})
    connector = RedditConnector(source(subreddits=["askreddit"]), http, session=session)
    adapter = session.get_adapter("https://")  # the same replayer also serves the empty second pages
    assert isinstance(adapter, CassetteAdapter)
    adapter.add("GET", NEW_PAGE2, EMPTY_LISTING)
    adapter.add("GET", COMMENTS_PAGE2, EMPTY_LISTING)
    out = list(connector.fetch(cursor))
    purge: list[Mention] = out[0].mentions
    assert [(m.native_id, m.extra.get("deleted")) for m in purge] == [("t1_d7ltvl0", True)]
    assert out[0].notes == ("1 recently stored items were deleted or removed",)
    assert out[0].cursor.extra["recent"] == []


def test_status_and_user_agent(http: Any) -> None:
    connector = RedditConnector(source(subreddits=["acme"]), http)
    assert connector.status() == "ok" and connector.hosts() == []
    assert connector.user_agent() == f"python:customer-voice-listener:{__version__} (by /u/acme_listener)"
