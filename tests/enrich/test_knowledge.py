"""Community knowledge: questions linked to accepted / top-voted answers, workaround detection."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path

import typer

from connectors.discourse import parse_discourse_posts
from connectors.stackexchange import parse_questions
from enrich.knowledge import link_threads, solved_by_community, top_questions, unanswered
from listener.types import utcnow
from storage import Store

SE = "stackexchange/perceval/stackexchange_question_page.json"
DISCOURSE = "discourse/perceval/discourse_topic_1148.json"


def se_payload(corpora: Path) -> dict:
    """The real API page. Its perceval capture is anonymised (empty bodies) and has no accepted answer,
    so this in-memory copy (the file is never touched) gets text and one accepted answer."""
    payload = copy.deepcopy(json.loads((corpora / SE).read_text("utf-8")))
    for n, item in enumerate(payload["items"]):
        item["title"] = f"Sync fails with error 500 (case {n})"
        item["body"] = "<p>After the update sync stops with error 500. Any idea?</p>"
        for k, answer in enumerate(item.get("answers") or []):
            answer["body"] = f"<p>Answer {k}: try clearing the cache and log in again, that fixed it.</p>"
            answer["is_accepted"] = n == 0 and k == len(item["answers"]) - 1
    return payload


def test_stackexchange_accepted_answer(corpora: Path) -> None:
    mentions, _, _ = parse_questions(se_payload(corpora), source="so", site="stackoverflow")
    qas = {qa.question.native_id: qa for qa in link_threads(mentions)}
    questions = [m for m in mentions if m.native_id.startswith("q")]
    assert len(qas) == len({m.thread_id for m in questions}) >= 1  # the page repeats question 1
    first = qas[questions[0].native_id]
    assert first.how == "accepted" and first.answer is not None and first.answer.extra["is_accepted"] is True
    assert first.workaround and first.answers == len([m for m in mentions if m.parent_id == first.question.native_id])


def test_discourse_top_voted_reply(corpora: Path) -> None:
    mentions, _, _ = parse_discourse_posts(
        json.loads((corpora / DISCOURSE).read_text("utf-8")), source="ubo", base_url="https://discourse.example.com"
    )
    [qa] = link_threads(mentions)
    assert qa.question.extra["post_number"] == 1 and qa.answers == len(mentions) - 1
    voted = [m for m in mentions[1:] if (m.score or 0) > 0]
    assert qa.how == "top_voted" and qa.answer is not None
    assert qa.answer.score == max(m.score or 0 for m in voted)
    assert unanswered([qa]) == []


def test_store_functions(tmp_path: Path, corpora: Path) -> None:
    mentions, _, _ = parse_questions(se_payload(corpora), source="so", site="stackoverflow")
    now = utcnow()
    recent = [m.__class__(**{**m.__dict__, "created_at": now - timedelta(days=1)}) for m in mentions]
    with Store.open(tmp_path / "k.db") as store:
        store.save_batch("so", recent, None)
        tops = top_questions(store, now - timedelta(days=7), limit=5)
        assert 1 <= len(tops) <= 5 and all(qa.question.kind == "stackexchange" for qa in tops)
        solved = solved_by_community(store, now - timedelta(days=7))
        assert solved and all(qa.workaround and qa.answer is not None for qa in solved)
        assert top_questions(store, now + timedelta(days=1)) == []
        assert solved[0].as_dict()["how"] in ("accepted", "top_voted")


def test_cli_questions_and_topics_verbs(tmp_path: Path, corpora: Path) -> None:
    from typer.testing import CliRunner

    from enrich.stages import insight_stages
    from listener import cli_insight
    from listener.context import Context
    from listener.pipeline import enrich_pending

    db = tmp_path / "cli.db"
    mentions, _, _ = parse_questions(se_payload(corpora), source="so", site="stackoverflow")
    now = utcnow()
    with Store.open(db) as store:
        store.save_batch(
            "so", [m.__class__(**{**m.__dict__, "created_at": now - timedelta(hours=3)}) for m in mentions], None
        )
        enrich_pending(store, insight_stages(store=store))
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = Context(db=str(db))

    cli_insight.register(app)
    runner = CliRunner()
    out = runner.invoke(app, ["questions", "--since", "7d", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert rows and rows[0]["title"].startswith("Sync fails") and rows[0]["how"] == "accepted"
    solved = runner.invoke(app, ["questions", "--solved"])
    assert solved.exit_code == 0 and "Sync fails" in solved.output
    topics = runner.invoke(app, ["topics", "--since", "7d", "--json", "--emerging"])
    assert topics.exit_code == 0, topics.output
    data = json.loads(topics.output)
    assert any(t["topic"] == "sync" for t in data["topics"]) and isinstance(data["emerging"], list)
