"""Stack Exchange on perceval's API-shaped captures (stackexchange/SOURCES.md).

Those captures are anonymised: titles and bodies are empty strings and "NOT FOUND: a real question+answer
capture with non-empty body". Tests that need text fill `title`/`body` in memory (`with_text`) and leave
every other captured field — ids, dates, owners, scores, paging, quota, backoff — as captured.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.stackexchange import StackExchangeConnector, parse_answers, parse_questions, parse_wrapper, site_url
from listener.config import Secret
from listener.errors import ParseError, SourceError
from listener.http import HttpClient
from listener.matching import WatchQuery
from listener.types import Cursor
from tests.connectors.contract import json_reply, make_source, query_value, run
from tests.support.server import ReplayServer, Reply, Seen

PERCEVAL = "stackexchange/perceval"


def load(corpora: Path, name: str) -> Any:
    return json.loads((corpora / PERCEVAL / name).read_bytes())


def with_text(payload: Any) -> Any:
    """Fill the anonymised empty title/body (see module docstring); nothing else changes."""
    data = copy.deepcopy(payload)
    for q in data["items"]:
        q["title"] = q["title"] or f"How do I merge pandas frames? (question {q['question_id']})"
        q["body"] = q.get("body") or "<p>I use <code>pd.merge</code> and rows vanish &amp; I don't know why.</p>"
        for a in q.get("answers", []):
            a["body"] = a.get("body") or f"<p>Answer {a['answer_id']}: use <code>how='outer'</code>.</p>"
    return data


def answers_page(*payloads: Any, quota: int = 9980) -> dict[str, Any]:
    """`/questions/{ids}/answers` wrapper around the answers captured inside perceval's questions."""
    items = {a["answer_id"]: a for p in payloads for q in p["items"] for a in q.get("answers", [])}
    return {"items": [items[k] for k in sorted(items)], "has_more": False, "quota_max": 10000,
            "quota_remaining": quota}


def paged(first: Any, second: Any) -> Any:
    def handler(seen: Seen) -> Reply:
        return json_reply(first if query_value(seen, "page") == "1" else second, gzip=True)

    return handler


def test_wrapper_facts_and_anonymised_items_are_skipped(corpora: Path) -> None:
    payload = load(corpora, "stackexchange_question.json")
    mentions, facts, notes = parse_questions(payload, source="se", site="stackoverflow")
    assert mentions == [] and notes == ["skipped question 1: malformed or empty"]
    assert facts["quota_remaining"] == 9989 and facts["has_more"] is False
    _, facts = parse_wrapper(load(corpora, "stackexchange_question_backoff_page.json"), source="se")
    assert facts["backoff"] == 0.2 and facts["has_more"] is True
    sites = json.loads((corpora / "stackexchange/stackapi/test_stackoverflow_exists.json").read_bytes())
    items, facts = parse_wrapper(sites, source="se")
    assert len(items) == 5 and "quota_remaining" in facts


def test_question_and_answer_fields(corpora: Path) -> None:
    mentions, _, notes = parse_questions(with_text(load(corpora, "stackexchange_question.json")), source="se",
                                         site="stackoverflow")
    assert notes == []
    question, answer = mentions
    assert question.native_id == "q1" and answer.native_id == "a1"
    assert question.author == "zhquan_example_3" and answer.author == "zhquan_example_1"
    assert question.created_at == datetime(2016, 4, 6, 2, 1, 16, tzinfo=UTC)
    assert answer.created_at == datetime.fromtimestamp(1459975066, UTC)
    assert question.score == 1.0 and question.comments == 1 and answer.score == 0.0
    assert question.extra["tags"] == ["python", "pandas"] and question.extra["is_answered"] is False
    assert "accepted_answer_id" not in question.extra and answer.extra["is_accepted"] is False
    assert question.url == "https://stackoverflow.com/q/1"  # captured `link` is the placeholder "question"
    assert answer.thread_id == answer.parent_id == "q1"
    assert question.text == "I use pd.merge and rows vanish & I don't know why."


def test_accepted_answer_is_marked(corpora: Path) -> None:
    payload = with_text(load(corpora, "stackexchange_question.json"))
    payload["items"][0]["accepted_answer_id"] = 1  # as the API reports once the asker accepts
    payload["items"][0]["answers"][0]["is_accepted"] = True
    question, answer = parse_questions(payload, source="se", site="superuser")[0]
    assert question.extra["accepted_answer_id"] == "1" and answer.extra["is_accepted"] is True
    assert question.url == "https://superuser.com/q/1"
    answers, _, _ = parse_answers(answers_page(payload), source="se", site="superuser", titles={1: "T"})
    assert answers[0].extra == {"site": "superuser", "is_accepted": True, "question_title": "T"}


def test_errors_and_site_urls() -> None:
    with pytest.raises(ParseError, match="throttle_violation: too many requests"):
        parse_wrapper({"error_id": 502, "error_name": "throttle_violation", "error_message": "too many requests"},
                      source="se")
    with pytest.raises(ParseError, match="'items'"):
        parse_wrapper({"questions": []}, source="se")
    assert site_url("math") == "https://math.stackexchange.com"
    assert site_url("mathoverflow") == "https://mathoverflow.net"


def serve(server: ReplayServer, corpora: Path, *, quota: int = 9980) -> None:
    first = with_text(load(corpora, "stackexchange_question_backoff_page.json"))
    second = with_text(load(corpora, "stackexchange_question_page_2.json"))
    server.routes["/2.3/search/advanced"] = paged(first, second)
    server.routes["/2.3/questions/1/answers"] = json_reply(answers_page(first, second, quota=quota), gzip=True)


def connector(server: ReplayServer, http: HttpClient, **params: Any) -> StackExchangeConnector:
    source = make_source("se", "stackexchange", base_url=f"{server.url}/2.3", site="stackoverflow", **params)
    return StackExchangeConnector(source, http, [WatchQuery.build("pd", ['"merge pandas" -excel'])])


def test_fetch_pages_honours_backoff_and_asks_for_answers(replay_server: ReplayServer, http: HttpClient,
                                                          corpora: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    serve(replay_server, corpora)
    deferred: list[tuple[str, float]] = []
    monkeypatch.setattr(http, "defer", lambda host, seconds: deferred.append((host, seconds)), raising=False)
    monkeypatch.setenv("SE_KEY", "abc((")
    batches, mentions = run(connector(replay_server, http, key=Secret("SE_KEY"), tagged="python"))
    assert [m.native_id for m in mentions] == ["q1", "a1", "a2"]  # oldest first, deduplicated across pages
    assert mentions[2].extra["question_title"].startswith("How do I merge pandas frames?")
    assert deferred == [(replay_server.url.removeprefix("http://"), 0.2)]
    assert any("backoff 0.2s" in n for b in batches for n in b.notes)
    pages = replay_server.hits("/2.3/search/advanced")
    assert [query_value(p, "page") for p in pages] == ["1", "2"]
    first = pages[0]
    assert query_value(first, "q") == '"merge pandas"' and query_value(first, "tagged") == "python"
    assert query_value(first, "filter") == "withbody" and query_value(first, "site") == "stackoverflow"
    assert query_value(first, "sort") == "activity" and query_value(first, "key") == "abc(("
    answers = replay_server.hits("/2.3/questions/1/answers")[0]
    assert query_value(answers, "fromdate") is not None and query_value(answers, "filter") == "withbody"
    assert batches[-1].cursor.last_time == datetime.fromtimestamp(1459995066, UTC)


def test_backoff_really_delays_the_next_request(replay_server: ReplayServer, corpora: Path) -> None:
    serve(replay_server, corpora)
    sleeps: list[float] = []
    source = replace(make_source("se", "stackexchange", base_url=f"{replay_server.url}/2.3", queries=["pandas"]),
                     rate=1000.0)  # pacing out of the way: only the backoff can make anyone wait
    with HttpClient("listener-tests/1.0", default_rate=1000.0, sleep=sleeps.append, timeout=5.0) as client:
        run(StackExchangeConnector(source, client))
    assert [s for s in sleeps if s > 0.01] and all(0.1 < s <= 0.2 for s in sleeps if s > 0.01), sleeps


def test_low_quota_stops_without_moving_the_cursor(replay_server: ReplayServer, http: HttpClient,
                                                   corpora: Path) -> None:
    first = with_text(load(corpora, "stackexchange_question_page.json"))
    first["quota_remaining"] = 3
    replay_server.routes["/2.3/search/advanced"] = json_reply(first, gzip=True)
    start = Cursor(last_time=datetime(2016, 1, 1, tzinfo=UTC))
    batches, mentions = run(connector(replay_server, http), start)
    assert mentions == [] and len(batches) == 1
    assert batches[0].cursor == start and "quota low: 3 requests left" in batches[0].notes[-1]
    assert len(replay_server.requests) == 1


def test_low_quota_on_the_last_page_is_only_noted(replay_server: ReplayServer, http: HttpClient,
                                                  corpora: Path) -> None:
    serve(replay_server, corpora, quota=4)
    batches, mentions = run(connector(replay_server, http))
    assert len(mentions) == 3 and "quota low: 4 requests left today" in batches[0].notes


def test_needs_something_to_search(replay_server: ReplayServer, http: HttpClient, corpora: Path) -> None:
    source = make_source("se", "stackexchange", base_url=f"{replay_server.url}/2.3")
    assert StackExchangeConnector(source, http).status().startswith("ok (no `key`: the API allows 300")
    with pytest.raises(SourceError, match="needs `tagged`"):
        run(StackExchangeConnector(source, http))
    replay_server.routes["/2.3/questions"] = json_reply(with_text(load(corpora, "stackexchange_question.json")))
    replay_server.routes["/2.3/questions/1/answers"] = json_reply(answers_page(load(corpora,
                                                                                   "stackexchange_question.json")))
    tagged = make_source("se", "stackexchange", base_url=f"{replay_server.url}/2.3", tagged="pandas")
    _, mentions = run(StackExchangeConnector(tagged, http))
    # a1 comes embedded (filled) in the question; its empty-bodied copy from /answers is skipped, not doubled.
    assert [m.native_id for m in mentions] == ["q1", "a1"]
    assert query_value(replay_server.hits("/2.3/questions")[0], "tagged") == "pandas"
