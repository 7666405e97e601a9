"""The honest gate: on the held-out TEST split the intent model must beat the keyword baseline (macro-F1)."""

from __future__ import annotations

from collections import Counter

import pytest

from enrich.evaluate_insight import EVAL_FILE, INTENTS, STAGES, evaluate, load_items


@pytest.fixture(scope="module")
def results() -> dict:
    return evaluate(load_items(split="test"))


def test_eval_set_is_sound() -> None:
    items = load_items()
    assert len(items) >= 300 and EVAL_FILE.exists()
    splits = Counter(i.split for i in items)
    assert set(splits) == {"dev", "test"} and min(splits.values()) >= 120
    assert len({i.id for i in items}) == len(items)
    assert all(i.intent in INTENTS and i.stage in STAGES for i in items)
    assert {i.intent for i in items if i.split == "test"} == set(INTENTS)


def test_intent_beats_keyword_baseline(results: dict) -> None:
    model, base = results["intent"]["model"]["macro"]["f1"], results["intent"]["baseline"]["macro"]["f1"]
    assert model > base, f"intent macro-F1 {model:.3f} does not beat keyword baseline {base:.3f}"


def test_topics_and_stage_not_worse_than_baseline(results: dict) -> None:
    for task in ("stage", "topics"):
        assert results[task]["model"]["macro"]["f1"] >= results[task]["baseline"]["macro"]["f1"], task
