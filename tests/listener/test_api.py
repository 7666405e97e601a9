"""REST API and web UI over a real SQLite store: filters, pagination edges, formats, auth, escaping."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from enrich.base import Enrichment
from listener.api import create_app
from listener.cli_serve import resolve_token
from listener.config import Config, SourceConfig
from listener.errors import UsageError
from listener.matching import WatchQuery
from listener.types import Mention
from storage import Store

NOW = datetime.now(UTC).replace(microsecond=0)


def mention(
    i: int,
    text: str,
    *,
    source: str = "forum",
    matched: tuple[str, ...] = ("acme",),
    author: str | None = None,
    url: str | None = None,
) -> Mention:
    return Mention(
        source=source,
        kind="discourse" if source == "forum" else "hackernews",
        native_id=str(i),
        url=url or f"https://forum.example.com/t/{i}",
        title=None,
        text=text,
        author=author or f"user{i}",
        created_at=NOW - timedelta(hours=i),
        matched=matched,
        score=float(i % 7),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "api.db")
    items = [mention(i, f"acme sync problem number {i}") for i in range(1, 26)]
    items.append(mention(30, "notably is faster than acme", source="hn", matched=("acme", "notably")))
    items.append(
        mention(
            31,
            "<script>alert(1)</script> acme rocks <img src=x onerror=alert(2)>",
            author='<b onmouseover="x()">evil</b>',
            url="javascript:alert(3)",
        )
    )
    s.save_batch("forum", [m for m in items if m.source == "forum"], None)
    s.save_batch("hn", [m for m in items if m.source == "hn"], None)
    s.save_enrichments([Enrichment(items[0].id, "sentiment", "v1", {"label": "negative", "score": 0.9})])
    yield s
    s.close()


@pytest.fixture
def config() -> Config:
    return Config(
        path=None,
        watches=(WatchQuery.build("acme", ["acme"]), WatchQuery.build("notably", ["notably"], competitor=True)),
        sources=(SourceConfig("forum", "discourse"), SourceConfig("hn", "hackernews")),
    )


@pytest.fixture
def client(store: Store, config: Config) -> TestClient:
    return TestClient(create_app(store, config))


def test_filters_and_formats(client: TestClient) -> None:
    r = client.get("/api/mentions", params={"q": "sync", "limit": 500})
    assert r.status_code == 200 and len(r.json()["items"]) == 25
    r = client.get("/api/mentions", params={"source": "hn"})
    assert [i["source"] for i in r.json()["items"]] == ["hn"]
    r = client.get("/api/mentions", params={"competitor": "true"})
    assert [i["text"] for i in r.json()["items"]] == ["notably is faster than acme"]
    r = client.get("/api/mentions", params={"kind": "hackernews"})
    assert len(r.json()["items"]) == 1
    r = client.get("/api/mentions", params={"since": (NOW - timedelta(hours=3, minutes=30)).isoformat()})
    assert len(r.json()["items"]) == 3
    first = client.get("/api/mentions", params={"q": "problem", "limit": 1}).json()["items"][0]
    assert first["sentiment"] == "negative" and first["enrichments"]["sentiment"]["score"] == 0.9
    r = client.get("/api/mentions", params={"q": "sync", "format": "csv", "limit": 3})
    assert r.headers["content-type"].startswith("text/csv") and "x-next-after" in r.headers
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 3
    r = client.get("/api/mentions", params={"format": "ndjson", "limit": 2})
    assert [json.loads(line)["source"] for line in r.text.splitlines()] == ["forum", "forum"]


def test_keyset_pagination_edges(client: TestClient) -> None:
    seen: list[str] = []
    after = None
    while True:
        params = {"q": "sync", "limit": 10} | ({"after": after} if after else {})
        page = client.get("/api/mentions", params=params).json()
        seen += [i["id"] for i in page["items"]]
        after = page["next_after"]
        if not after:
            break
    assert len(seen) == len(set(seen)) == 25  # exact last page: no empty extra page, nothing twice
    empty = {"items": [], "next_after": None, "ranked_newest": None}
    assert client.get("/api/mentions", params={"q": "nothingmatches"}).json() == empty
    assert client.get("/api/mentions", params={"after": "garbage!!"}).status_code == 422


def test_relevance_on_a_common_query_says_it_ranked_the_newest(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("storage.relevance.RANKED_NEWEST", 10)
    page = client.get("/api/mentions", params={"q": "sync", "sort": "relevance", "limit": 50}).json()
    assert page["ranked_newest"] == 10 and len(page["items"]) == 10
    r = client.get("/api/mentions", params={"q": "sync", "sort": "relevance", "format": "csv"})
    assert r.headers["x-ranked-newest"] == "10"
    assert "newest 10 matches" in client.get("/", params={"q": "sync", "sort": "relevance"}).text
    assert client.get("/api/mentions", params={"q": "notably", "sort": "relevance"}).json()["ranked_newest"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"sort": "random"},
        {"kind": "myspace"},
        {"since": "yesterday"},
        {"q": "-only"},
        {"since": NOW.isoformat(), "until": (NOW - timedelta(days=1)).isoformat()},
    ],
)
def test_invalid_parameters_are_422(client: TestClient, params: dict[str, object]) -> None:
    r = client.get("/api/mentions", params=params)
    assert r.status_code == 422, r.text


def test_mention_stats_sources(client: TestClient, store: Store) -> None:
    item = client.get("/api/mentions", params={"source": "hn"}).json()["items"][0]
    r = client.get(f"/api/mentions/{item['id']}")
    assert r.status_code == 200 and r.json()["text"] == "notably is faster than acme"
    assert client.get("/api/mentions/nope").status_code == 404
    stats = client.get(
        "/api/stats", params={"bucket": "day", "group_by": "source", "since": (NOW - timedelta(days=3)).isoformat()}
    ).json()
    assert sum(sum(v.values()) for v in stats["series"].values()) == stats["total"] == 27
    by_sentiment = client.get("/api/stats", params={"group_by": "sentiment"}).json()
    assert sum(by_sentiment["series"]["negative"].values()) == 1
    assert {s["name"] for s in client.get("/api/sources").json()} == {"forum", "hn"}
    assert client.get("/api/openapi.json").status_code == 200


def test_token_required_when_configured(store: Store, config: Config) -> None:
    client = TestClient(create_app(store, config, token="t" * 20))
    assert client.get("/api/mentions").status_code == 401
    assert client.get("/", follow_redirects=False).status_code == 303  # the UI sends a browser to /login
    assert "API token" in client.get("/").text and "article" not in client.get("/").text
    assert client.get("/api/mentions", headers={"Authorization": "Bearer " + "t" * 20}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_binding_beyond_loopback_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LISTENER_API_TOKEN", raising=False)
    assert resolve_token("127.0.0.1", "LISTENER_API_TOKEN") is None
    with pytest.raises(UsageError, match="exposes the API"):
        resolve_token("0.0.0.0", "LISTENER_API_TOKEN")
    monkeypatch.setenv("LISTENER_API_TOKEN", "short")
    with pytest.raises(UsageError, match="too short"):
        resolve_token("0.0.0.0", "LISTENER_API_TOKEN")


def test_ui_search_filter_and_escaping(client: TestClient) -> None:
    r = client.get("/", params={"q": "acme", "since": "30d"})
    assert r.status_code == 200
    soup = BeautifulSoup(r.text, "html.parser")
    assert not soup.find_all("script")
    assert not [t for t in soup.find_all(True) if any(a.startswith("on") for a in t.attrs)]
    assert not [a for a in soup.find_all("a") if a.get("href", "").lower().startswith("javascript:")]
    assert "&lt;script&gt;" in r.text
    assert soup.find("svg") is not None and soup.find("mark") is not None
    filtered = BeautifulSoup(client.get("/", params={"q": "acme", "sentiment": "negative"}).text, "html.parser")
    assert len(filtered.select("article.mention")) == 1
    link = soup.select_one("article.mention a[href^='/m/']")
    assert link is not None and client.get(link["href"]).status_code == 200
    assert "forum" in client.get("/sources").text
    assert "not a duration" in client.get("/", params={"since": "soonish"}).text


def test_label_filters(client: TestClient, store: Store) -> None:
    items = client.get("/api/mentions", params={"source": "forum", "limit": 3}).json()["items"]
    store.save_enrichments([Enrichment(items[1]["id"], "intent", "t", {"label": "question"})])
    r = client.get("/api/mentions", params={"intent": "question"})
    assert [i["id"] for i in r.json()["items"]] == [items[1]["id"]]
    assert client.get("/api/mentions", params={"sentiment": "grumpy"}).status_code == 422


# --- security and robustness ----------------------------------------------------------------------


def test_every_route_is_read_only(client: TestClient, store: Store, config: Config) -> None:
    spec = client.get("/api/openapi.json").json()
    methods = {m for ops in spec["paths"].values() for m in ops}
    assert methods == {"get"}, methods
    app = create_app(store, config)
    for route in app.routes:  # including the UI and docs routes the spec leaves out
        allowed = {"GET", "HEAD", "POST"} if getattr(route, "path", "") in ("/login", "/logout") else {"GET", "HEAD"}
        assert set(getattr(route, "methods", None) or {"GET"}) <= allowed, route  # log in/out: a cookie, no data
    for method in ("post", "put", "patch", "delete"):
        assert client.request(method, "/api/mentions").status_code == 405
    before = store.count()
    client.get("/api/mentions", params={"q": "acme; DROP TABLE mention; --"})
    assert store.count() == before


def test_page_size_is_capped(client: TestClient) -> None:
    assert client.get("/api/mentions", params={"limit": 500}).status_code == 200
    assert client.get("/api/mentions", params={"limit": 10**9}).status_code == 422
    assert client.get("/api/mentions", params={"limit": -1}).status_code == 422
    assert client.get("/api/mentions", params={"q": "x" * 501}).status_code == 422
    assert client.get("/api/mentions", params={"after": "a" * 2001}).status_code == 422
    ui = BeautifulSoup(client.get("/", params={"limit": 100000, "since": "30d"}).text, "html.parser")
    assert 0 < len(ui.select("article.mention")) <= 50  # the UI has a fixed page size


def test_token_by_header_or_cookie_only(store: Store, config: Config) -> None:
    secret = "s" * 24
    client = TestClient(create_app(store, config, token=secret))
    assert client.get("/api/mentions", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert client.get("/api/mentions", headers={"Authorization": f"bearer {secret}"}).status_code == 200
    browser = TestClient(create_app(store, config, token=secret), cookies={"listener_token": secret})
    assert browser.get("/").status_code == 200 and browser.get("/api/stats").status_code == 200
    wrong = TestClient(create_app(store, config, token=secret), cookies={"listener_token": "wrong"})
    denied = [
        client.get("/api/mentions", headers={"Authorization": f"Bearer {secret}x"}),
        client.get("/api/mentions", headers={"Authorization": f"Basic {secret}"}),
        client.get("/api/mentions", headers={"Authorization": secret}),
        client.get("/api/mentions", params={"token": secret}),  # never in a URL (logs, history, referrers)
        wrong.get("/api/stats"),
        client.get("/api/sources"),
        client.get("/api/watches"),
    ]
    assert [r.status_code for r in denied] == [401] * len(denied)
    assert denied[0].headers["www-authenticate"] == "Bearer"
    assert secret not in denied[0].text
    for page in (wrong.get("/m/anything", follow_redirects=False), client.get("/sources", follow_redirects=False)):
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=%2F")
        assert secret not in page.text


def test_login_sets_a_strict_httponly_cookie(store: Store, config: Config) -> None:
    secret = "t0ken-" * 4
    client = TestClient(create_app(store, config, token=secret), follow_redirects=False)
    first = client.get("/", params={"q": "acme", "since": "7d"})
    assert first.status_code == 303 and first.headers["location"] == "/login?next=%2F%3Fq%3Dacme%26since%3D7d"
    form = BeautifulSoup(client.get(first.headers["location"]).text, "html.parser")
    assert form.select_one("input[name=token][type=password]") is not None
    assert form.select_one("input[name=next]")["value"] == "/?q=acme&since=7d"

    bad = client.post("/login", data={"token": secret + "x", "next": "/sources"})
    assert bad.status_code == 401 and "set-cookie" not in bad.headers and secret not in bad.text
    assert client.post("/login", data={"next": "/"}).status_code == 401

    ok = client.post("/login", data={"token": secret, "next": "/sources"})
    assert ok.status_code == 303 and ok.headers["location"] == "/sources"
    cookie = ok.headers["set-cookie"]
    assert cookie.startswith(f"listener_token={secret};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie and "expires" not in cookie.lower()  # plain http here; a session cookie
    assert client.get("/sources").status_code == 200 and client.get("/api/stats").status_code == 200
    assert client.get("/login").headers["location"] == "/"  # already logged in

    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", "/\nx"):
        assert client.post("/login", data={"token": secret, "next": evil}).headers["location"] == "/"
    huge = client.post(
        "/login", content=b"token=" + b"x" * 10_000, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert huge.status_code == 413

    assert client.post("/logout", headers={"sec-fetch-site": "cross-site"}).status_code == 403
    out = client.post("/logout", headers={"sec-fetch-site": "same-origin"})
    assert out.status_code == 303 and 'listener_token=""' in out.headers["set-cookie"]
    assert client.get("/sources").status_code == 303


def test_without_a_token_login_is_not_needed(client: TestClient) -> None:
    assert client.get("/login", params={"next": "/sources"}, follow_redirects=False).headers["location"] == "/sources"
    assert "Log out" not in client.get("/").text


def test_api_docs_load_nothing_from_a_cdn(client: TestClient) -> None:
    html = client.get("/api/docs")
    assert html.status_code == 200 and "/api/docs-assets/swagger-ui-bundle.js" in html.text
    sources = re.findall(r'(?:src|href)=["\']([^"\']+)', html.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    assert '"validatorUrl": null' in html.text
    js = client.get("/api/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/api/docs-assets/swagger-ui.css").status_code == 200
    assert client.get("/api/redoc").status_code == 404  # off: its bundle loads a logo from a CDN


def test_every_page_escapes_what_it_shows(client: TestClient, store: Store) -> None:
    run = store.start_run("forum")
    store.finish_run(run, status="failed", new=0, duplicates=0, error='<img src=x onerror="alert(4)">')
    hostile = client.get("/api/mentions", params={"q": "rocks"}).json()["items"][0]["id"]
    pages = [
        ("/", {"q": "acme", "since": "30d"}),
        ("/?q=<script>alert(5)</script>", {}),
        (f"/m/{hostile}", {}),
        ("/sources", {}),
        ("/", {"q": '"><svg onload=alert(6)>', "source": '"><b>x', "watch": "<u>", "sort": "<s>", "since": '"><i>'}),
    ]
    for path, params in pages:
        r = client.get(path, params=params)
        assert r.status_code == 200, path
        soup = BeautifulSoup(r.text, "html.parser")
        assert not soup.find_all(["script", "img", "iframe", "b", "u", "s"]), path
        assert not [t for t in soup.find_all(True) if any(a.lower().startswith("on") for a in t.attrs)], path
        assert not [
            a for a in soup.find_all("a") if str(a.get("href", "")).strip().lower().startswith("javascript:")
        ], path
        assert r.headers["content-type"].startswith("text/html")
    assert "&lt;img src=x onerror=" in client.get("/sources").text
    assert "&lt;b onmouseover=" in client.get(f"/m/{hostile}").text


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-01-01T00:00:00", "until": "2026-02-01T00:00:00Z"},  # naive and aware together
        {"since": "2026-01-01T00:00:00"},
    ],
)
def test_naive_datetimes_are_utc_not_a_crash(client: TestClient, params: dict[str, str]) -> None:
    assert client.get("/api/mentions", params=params).status_code == 200
    assert client.get("/api/stats", params=params).status_code == 200


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/mentions", {"since": "0001-01-01T00:00:00+14:00"}),
        ("/api/stats", {"until": "0001-01-02T00:00:00Z"}),
        ("/api/stats", {"since": "9999-12-31T23:00:00-05:00"}),
        ("/api/mentions", {"after": "Zm9v"}),
        ("/api/mentions", {"q": "-only"}),
        ("/api/stats", {"bucket": "hour", "since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
    ],
)
def test_bad_values_are_422_in_one_shape(client: TestClient, path: str, params: dict[str, str]) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and {"loc", "msg", "type"} <= set(detail[0]), detail


def test_ui_unknown_mention_is_an_html_404(client: TestClient) -> None:
    r = client.get("/m/nope")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html") and "No mention" in r.text


def test_ui_bad_period_is_explained(client: TestClient) -> None:
    for since in ("99999999d", "0001-01-01T00:00+14:00", "soonish"):
        r = client.get("/", params={"since": since})
        assert r.status_code == 200 and BeautifulSoup(r.text, "html.parser").select_one(".error"), since


def test_thread_and_stats_groupings(client: TestClient, store: Store) -> None:
    stats = client.get("/api/stats", params={"group_by": "kind", "bucket": "week"}).json()
    assert set(stats["series"]) == {"discourse", "hackernews"} and stats["total"] == 27
    by_watch = client.get("/api/stats", params={"group_by": "watch", "source": "hn"}).json()
    assert set(by_watch["series"]) == {"acme", "notably"} and by_watch["total"] == 1
    hourly = client.get("/api/stats", params={"bucket": "hour", "since": (NOW - timedelta(hours=5)).isoformat()}).json()
    assert hourly["total"] == 5 and sum(hourly["series"]["all"].values()) == 5
    root = Mention(
        "forum", "discourse", "t1", None, "Sync broken", "root post", "ann", NOW - timedelta(days=3), thread_id="t"
    )
    reply = Mention(
        "forum", "discourse", "t1-2", None, None, "same here", "bob", NOW - timedelta(days=2), thread_id="t"
    )
    store.save_batch("forum", [root, reply], None)
    thread = client.get(f"/api/mentions/{root.id}").json()["thread"]
    assert [t["id"] for t in thread] == [reply.id] and thread[0]["text"] == "same here"
