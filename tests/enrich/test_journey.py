"""Journey-stage stage: clear cases from real corpora and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from enrich.journey import JOURNEY_PROTOTYPES, JourneyStage
from tests.enrich.helpers import appstore_reviews, mention


@pytest.fixture(scope="module")
def stage() -> JourneyStage:
    return JourneyStage()


def label(stage: JourneyStage, text: str, title: str | None = None) -> str:
    return str(stage.run([mention(0, text, title)])[0].data["label"])


def test_clear_cases(stage: JourneyStage, corpora: Path) -> None:
    reviews = appstore_reviews(corpora)
    assert label(stage, reviews["Crash"], "Crash") == "onboarding_use"
    assert label(stage, reviews["Best service"], "Best service") == "advocacy_churn"  # "with Webster for over 25 yrs"
    assert label(stage, "I'm cancelling my subscription and switching to a competitor next month.") == "advocacy_churn"
    assert label(stage, "Show HN: Direct IO for Node.js") == "awareness"
    assert label(stage, "What movie is the most quotable?") == "none"


def test_bad_input(stage: JourneyStage) -> None:
    texts = ["", "🙂", "help " * 25_000, "\ud83d\x00"]
    out = stage.run([mention(i, t) for i, t in enumerate(texts)])
    assert len(out) == 4 and all(e.stage == "journey" for e in out)
    assert all(e.data["label"] in {*JOURNEY_PROTOTYPES, "none"} for e in out)
    assert out[0].data["label"] == "none"
