"""REST API and web UI over a real SQLite store: filters, pagination edges, formats, auth, escaping."""

from __future__ import annotations

import csv
import io
import json
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
    assert client.get("/api/mentions", params={"q": "nothingmatches"}).json() == {"items": [], "next_after": None}
    assert client.get("/api/mentions", params={"after": "garbage!!"}).status_code == 422


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
    assert client.get("/").status_code == 401
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
