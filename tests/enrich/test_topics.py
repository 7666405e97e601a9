"""Topic stage: taxonomy config, sentence-level assignment with evidence, aspect sentiment, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enrich.sentiment import MODEL_DIR as SENTIMENT_DIR
from enrich.topics import (
    TopicStage,
    default_taxonomy,
    keyword_pattern,
    parse_taxonomy,
    split_sentences,
    taxonomy_from_config,
)
from listener.config import Config
from listener.errors import ConfigError
from listener.types import Mention
from tests.enrich.helpers import mention as _mention


def mention(n: int, text: str, title: str | None = None) -> Mention:
    return _mention(n, text, title, kind="appstore")


APPSTORE = "appstore_reviews/customerreviews_id1321994487_us.json"
NAMES = {
    "pricing",
    "billing",
    "performance",
    "reliability",
    "sync",
    "battery",
    "support",
    "onboarding",
    "ui_ux",
    "integrations",
    "security_privacy",
    "mobile_app",
    "documentation",
    "feature_requests",
}



@pytest.fixture(scope="module")
def stage() -> TopicStage:
    return TopicStage()


def names(data: dict) -> list[str]:
    return [t["name"] for t in data["topics"]]


def test_default_taxonomy_complete() -> None:
    topics = default_taxonomy()
    assert {t.name for t in topics} == NAMES
    assert all(t.description and len(t.seeds) >= 3 for t in topics)


def test_battery_with_evidence_and_aspect_sentiment(stage: TopicStage) -> None:
    [e] = stage.run([mention(1, "love the app, battery dies in an hour")])
    hits = {t["name"]: t for t in e.data["topics"]}
    assert "battery" in hits and "pricing" not in hits and "billing" not in hits
    battery = hits["battery"]
    assert "battery" in battery["evidence"].lower() and 0 < battery["score"] <= 1.5
    if (SENTIMENT_DIR / "model.onnx").exists():
        assert battery["sentiment"]["label"] == "negative"
    else:  # the sentiment model is trained separately: absent → None with the reason, never a crash
        assert battery["sentiment"] is None and battery["sentiment_reason"]


def test_multi_sentence_review_gets_each_topic_from_its_sentence(stage: TopicStage) -> None:
    text = (
        "The new design is beautiful. But I was charged twice this month and want a refund. "
        "Also the app crashes every time I open settings."
    )
    [e] = stage.run([mention(2, text)])
    hits = {t["name"]: t for t in e.data["topics"]}
    assert {"billing", "reliability"} <= set(hits)
    assert "refund" in hits["billing"]["evidence"] and "crashes" in hits["reliability"]["evidence"]


def test_real_app_store_reviews(stage: TopicStage, corpora: Path) -> None:
    feed = json.loads((corpora / APPSTORE).read_text("utf-8"))["feed"]["entry"]
    by_title = {e["title"]["label"]: e["content"]["label"] for e in feed}
    ms = [
        mention(10, by_title["Awful app"], "Awful app"),
        mention(11, by_title["Tablet format"], "Tablet format"),
        mention(12, by_title["Best service"], "Best service"),
    ]
    out = stage.run(ms)
    assert {"reliability", "mobile_app"} <= set(names(out[0].data))  # "Can't even log in … request timed out"
    assert "mobile_app" in names(out[1].data)  # iPad landscape
    assert "support" in names(out[2].data)  # "Excellent customer care"


def test_bad_input_one_result_each(stage: TopicStage) -> None:
    long = "The battery dies within an hour. " + "I use it every day for my work notes. " * 2700  # ~100 kB
    texts = ["", "🙂🙂🙂", long, "broken \ud83d surrogate \x00", "!!!"]
    out = stage.run([mention(i, t) for i, t in enumerate(texts)])
    assert len(out) == len(texts) and all(e.stage == "topics" for e in out)
    assert out[0].data["topics"] == [] and out[4].data["topics"] == []
    assert "battery" in names(out[2].data)  # 100 kB is cut, not dropped
    assert stage.run([]) == []


def test_config_taxonomy_and_errors() -> None:
    config = Config(
        path=None,
        sections={
            "topics": [
                {
                    "name": "shipping",
                    "description": "Delivery and shipping times",
                    "seeds": ["my parcel is late"],
                    "threshold": 0.4,
                },
            ]
        },
    )
    [topic] = taxonomy_from_config(config)
    assert topic.name == "shipping" and topic.threshold == 0.4
    [e] = TopicStage([topic], aspect_sentiment=False).run([mention(1, "My parcel is late again, shipping takes weeks")])
    assert names(e.data) == ["shipping"]
    assert {t.name for t in taxonomy_from_config(Config(path=None))} == NAMES
    for bad in (
        [{"description": "x"}],
        [{"name": "a"}],
        [{"name": "a", "seeds": "x"}],
        [{"name": "a", "seeds": ["x"], "threshold": 3}],
        [{"name": "a", "seeds": ["x"]}] * 2,
        ["nope"],
    ):
        with pytest.raises(ConfigError):
            parse_taxonomy(bad)


def test_version_tracks_taxonomy() -> None:
    a = TopicStage(default_taxonomy()[:2], aspect_sentiment=False).version
    b = TopicStage(default_taxonomy()[:3], aspect_sentiment=False).version
    assert a != b


def test_helpers() -> None:
    assert split_sentences("One here. Two there!\nThree? ok") == ["One here.", "Two there!", "Three?"]
    assert split_sentences("love the app, battery dies in an hour") == ["love the app", "battery dies in an hour"]
    rx = keyword_pattern(["app", "crash", "$"])
    assert rx is not None and rx.search("the app") and rx.search("it crashes") and rx.search("$5")
    assert not rx.search("please apply now")


class RecordingSentiment:
    """Stands in for SentimentClassifier to see which evidence texts still need the model."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def classify(self, texts: list[str], batch_size: int = 32) -> list:
        from enrich.sentiment import SentimentResult

        self.seen += texts
        return [SentimentResult("negative", 0.9, {"negative": 0.9}) for _ in texts]


def test_single_clause_posts_reuse_stored_post_sentiment(tmp_path: Path) -> None:
    from enrich.base import Enrichment
    from storage import Store

    one = mention(1, "The battery dies within an hour")
    two = mention(2, "Love the design, but the battery dies within an hour")
    with Store.open(tmp_path / "t.db") as store:
        store.save_batch("t", [one, two], None)
        store.save_enrichments([Enrichment(one.id, "sentiment", "s1", {"label": "negative", "score": 0.8})])
        fake = RecordingSentiment()
        out = {e.mention_id: e.data for e in TopicStage(store=store, sentiment=fake).run([one, two])}
    battery_one = next(t for t in out[one.id]["topics"] if t["name"] == "battery")
    assert battery_one["sentiment"] == {"label": "negative", "score": 0.8}  # from the sentiment stage, no model call
    battery_two = next(t for t in out[two.id]["topics"] if t["name"] == "battery")
    assert battery_two["evidence"] == "but the battery dies within an hour" and battery_two["evidence"] in fake.seen
    assert two.text not in fake.seen and one.text not in fake.seen  # clauses only; the single-clause post reused
