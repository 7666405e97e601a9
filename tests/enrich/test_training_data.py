"""The app-review evaluation set: real App Store and Google Play reviews, star rating as the label."""

from __future__ import annotations

from collections import Counter

import pytest

from enrich.training.data import CORPORA, load_app_reviews

pytestmark = pytest.mark.skipif(not (CORPORA / "appstore_reviews").exists(), reason="needs the shared corpora")


def test_every_rated_review_becomes_one_example_labelled_by_its_stars() -> None:
    examples = load_app_reviews()
    # 50 App Store reviews (20×5★, 7×4★, 3×3★, 9×2★, 11×1★, per the corpus SOURCES.md) + the Play pages' reviews.
    assert len(examples) == len({e.uid for e in examples}) == 91
    assert Counter(e.label for e in examples) == {0: 57, 1: 5, 2: 29}
    apple = [e for e in examples if e.uid.startswith("app:appstore:")]
    assert Counter(e.label for e in apple) == {2: 27, 1: 3, 0: 20}
    assert all(e.text.strip() and e.split == "test" and e.domain == "app_reviews" for e in examples)
