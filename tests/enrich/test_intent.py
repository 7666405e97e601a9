"""Intent stage on real texts from the shared corpora, plus bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from enrich.intent import INTENT_PROTOTYPES, IntentStage, intent_classifier
from tests.enrich.helpers import appstore_reviews, mention

LABELS = {*INTENT_PROTOTYPES, "other"}



@pytest.fixture(scope="module")
def stage() -> IntentStage:
    return IntentStage()


def label(stage: IntentStage, text: str, title: str | None = None) -> str:
    return str(stage.run([mention(0, text, title)])[0].data["label"])


def test_real_reviews_and_posts(stage: IntentStage, corpora: Path) -> None:
    reviews = appstore_reviews(corpora)
    assert label(stage, reviews["Awful app"], "Awful app") == "complaint"
    assert label(stage, reviews["Worst App"], "Worst App") == "complaint"
    assert label(stage, reviews["Best banking Experience ever!"], "Best banking Experience ever!") == "praise"
    assert label(stage, "Whats something you did in high school that you regret?") == "question"
    assert label(stage, "Please add a dark mode, it would be great for reading at night.") == "feature_request"
    assert label(stage, "Black cop named police chief in Ferguson") == "other"


def test_result_shape_and_bad_input(stage: IntentStage) -> None:
    texts = ["", "🙂🙂🙂", "why? " * 20_000, "broken \ud83d surrogate \x00", "1234 !!!"]
    out = stage.run([mention(i, t) for i, t in enumerate(texts)])
    assert [e.mention_id for e in out] == [mention(i, t).id for i, t in enumerate(texts)]
    for e in out:
        assert e.stage == "intent" and e.data["label"] in LABELS
        assert set(e.data["scores"]) == set(INTENT_PROTOTYPES)
    assert out[0].data["label"] == "other" and out[4].data["label"] == "other"
    assert stage.run([]) == []


def test_bar_controls_other() -> None:
    import numpy as np

    from enrich.embedding import embed_texts

    texts = ["I love it"]
    vecs = embed_texts(texts)
    assert intent_classifier(other_bar=5.0).predict(texts, vecs)[0][0] == "other"
    assert intent_classifier(other_bar=-5.0).predict(texts, vecs)[0][0] == "praise"
    assert intent_classifier().predict([], np.zeros((0, 384), np.float32)) == []


def test_insight_stages_and_filter_ids(tmp_path: Path) -> None:
    from enrich.stages import filter_ids, insight_stages
    from listener.pipeline import enrich_pending
    from storage import Store

    texts = [
        "How do I export my notes to PDF?",
        "The app crashes every time I log in, awful.",
        "Die App stürzt nach dem Update ständig ab, sehr ärgerlich.",
        "I love the new dark theme, thank you!",
    ]
    ms = [mention(i, t) for i, t in enumerate(texts)]
    with Store.open(tmp_path / "f.db") as store:
        store.save_batch("t", ms, None)
        stages = insight_stages(store=store)
        assert [s.name for s in stages] == ["embedding", "topics", "intent", "journey", "language", "duplicates"]
        assert enrich_pending(store, stages) == len(ms)  # each mention goes through all stages in one batch
        assert all(store.count_unenriched(s.name, s.version) == 0 for s in stages)
        ids = [m.id for m in ms]
        assert filter_ids(store, ids, intent="question") == [ms[0].id]
        assert filter_ids(store, ids, lang="de") == [ms[2].id]
        assert ms[1].id in filter_ids(store, ids, topic="reliability", intent="complaint")
        assert filter_ids(store, ids, intent="praise", lang="en") == [ms[3].id]
        assert filter_ids(store, ids) == ids and filter_ids(store, ids, canonical_only=True) == ids
        # Searches filter in SQL (mention_label rows written with the enrichments): the same answers.
        for wanted in ({"intent": "question"}, {"lang": "de"}, {"topic": "reliability", "intent": "complaint"},
                       {"intent": "praise", "lang": "en"}, {"stage": "support"}, {"sentiment": "negative"}):  # fmt: skip
            in_sql = {i.id for i in store.search(labels=wanted, limit=100).items}
            assert in_sql == set(filter_ids(store, ids, **wanted)), wanted
        assert len(store.search(canonical_only=True, limit=100).items) == len(ms)
        with pytest.raises(ValueError):
            from enrich.stages import _matches

            _matches({}, "colour", "red")
