"""The insight stages' speed shortcuts change no result: determinism, batch-size invariance, exact fast paths.

The encoder is batch invariant (per-token int8, tests/enrich/test_encoder_batch_invariance.py): one test
runs every stage from the encoder on with cold caches at several batch splits. The others fix the vectors
first (one embedding pass fills the in-process caches) so they check only what comes after the encoder.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enrich.duplicates import DuplicateStage
from enrich.embedding import DIM, one_blas_thread
from enrich.evaluate_insight import load_items
from enrich.intent import IntentStage, PrototypeClassifier, intent_classifier
from enrich.journey import JourneyStage, journey_classifier
from enrich.language import LanguageStage
from enrich.textprep import IGNORECASE_ASCII_TWINS, caseless_ascii_pattern, lowered_for_ascii_patterns
from enrich.topics import Topic, TopicStage, default_taxonomy, keyword_hits
from enrich.vectors import EmbeddingStage, clear_caches, unpack
from listener.types import Mention
from tests.enrich.helpers import appstore_reviews, mention


@pytest.fixture(scope="module")
def mentions(corpora: Path) -> list[Mention]:
    texts = [i.text for i in load_items()[:90]] + list(appstore_reviews(corpora).values())[:30]
    texts += ["", "!!!", "ok", texts[0], texts[1] + " (reposted)", "Ich liebe diese App, aber der Akku ist schlecht."]
    return [mention(n, t) for n, t in enumerate(texts)]


def _run(stage_factory: Callable[[], Any], mentions: list[Mention], size: int) -> list[tuple[str, str, object]]:
    stage = stage_factory()
    out = []
    for start in range(0, len(mentions), size):
        out += [(e.mention_id, e.model_version, e.data) for e in stage.run(mentions[start : start + size])]
    return out


def _topics_only() -> TopicStage:
    return TopicStage(aspect_sentiment=False)  # aspect sentiment: see the test below


@pytest.mark.parametrize("factory", [_topics_only, IntentStage, JourneyStage, LanguageStage, DuplicateStage])
def test_stages_after_the_encoder_are_deterministic_and_batch_size_invariant(
    factory: Callable[[], Any], mentions: list[Mention]
) -> None:
    EmbeddingStage().run(mentions)  # fixes the vectors (and clause vectors) every later stage reads
    whole = _run(factory, mentions, len(mentions))
    assert whole == _run(factory, mentions, len(mentions))  # deterministic
    assert _run(factory, mentions, 1) == whole
    assert _run(factory, mentions, 7) == whole


def test_every_stage_from_the_encoder_on_gives_the_same_labels_whatever_the_batch(mentions: list[Mention]) -> None:
    """Cold caches each time, so the encoder really runs in the batches each split makes."""

    def run(size: int) -> tuple[np.ndarray, list[Any]]:
        clear_caches()
        vectors = _run(EmbeddingStage, mentions, size)
        labels = [
            [data["label"] for _, _, data in _run(IntentStage, mentions, size)],
            [data["label"] for _, _, data in _run(JourneyStage, mentions, size)],
            [[(t["name"], t["evidence"]) for t in data["topics"]] for _, _, data in _run(_topics_only, mentions, size)],
            [(data["group"], data["canonical"]) for _, _, data in _run(DuplicateStage, mentions, size)],
        ]
        stacked = np.stack([unpack(data) if data["f16"] else np.zeros(DIM, np.float32) for _, _, data in vectors])
        return stacked, labels

    whole_vecs, whole = run(len(mentions))
    for size in (1, 8, 32):
        vecs, labels = run(size)
        assert float(np.abs(vecs - whole_vecs).max()) <= 1e-3  # float16 storage: at most one step apart
        assert labels == whole, size
    clear_caches()


def test_aspect_sentiment_labels_do_not_depend_on_the_batch(mentions: list[Mention]) -> None:
    """The sentiment model's probabilities move in the 6th decimal with the padded batch it runs in
    (its own business, enrich/sentiment.py); labels and everything the topic stage computes do not."""
    EmbeddingStage().run(mentions)

    def strip(rows: list[tuple[str, str, Any]]) -> list[Any]:
        return [
            [
                (t["name"], t["score"], t["evidence"], (t["sentiment"] or {}).get("label"), t["sentiment_reason"])
                for t in data["topics"]
            ]
            for _, _, data in rows
        ]

    whole = _run(TopicStage, mentions, len(mentions))
    assert strip(_run(TopicStage, mentions, 5)) == strip(whole)
    assert any(t["sentiment"] for _, _, data in whole for t in data["topics"])


def test_ignorecase_ascii_twins_are_complete() -> None:
    """Every non-ASCII character that re.IGNORECASE matches to a lowercase ASCII keyword character is
    listed, so the substring fast path of `keyword_hits` can never miss a regex match."""
    everything = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    ascii_lower = "".join(chr(c) for c in range(32, 127) if not chr(c).isupper())
    pattern = re.compile("[" + re.escape(ascii_lower) + "]", re.IGNORECASE)
    twins = {ch for ch in pattern.findall(everything) if not ch.isascii()}
    assert twins <= set(IGNORECASE_ASCII_TWINS) and twins


def test_lowercasing_keeps_every_regex_class() -> None:
    """Why case-sensitive search on lowered text can replace IGNORECASE: apart from U+0130 (a twin), every
    character lowercases to one character of the same \\w / \\d / \\s class."""
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    assert [ch for ch in chars if len(ch.lower()) != 1] == ["\u0130"]
    single = "".join(ch for ch in chars if ch != "\u0130")
    lowered = single.lower()
    assert len(lowered) == len(single)
    for cls in (r"\w", r"\d", r"\s", r"\b"):
        rx = re.compile(cls)
        assert [m.start() for m in rx.finditer(single)] == [m.start() for m in rx.finditer(lowered)], cls


def _reference_cue_counts(clf: PrototypeClassifier, texts: list[str]) -> np.ndarray:
    return np.asarray(
        [[sum(1 for p in pats if p.search(t[:2000])) for pats in clf._cue_res.values()] for t in texts],
        dtype=np.float32,
    )


def test_cue_fast_path_counts_like_ignorecase() -> None:
    texts = [i.text for i in load_items()] + [
        "WHY does it CRASH?\nPlease ADD dark mode",
        "ıs it possible? Doesn't work",  # dotless i: IGNORECASE matches 'is'
        "İs there a fix? The ſupport is awful",  # dotted capital I, long s
        "\u212ainda love it",  # Kelvin sign
        "ΣΊΣΥΦΟΣ ς σ, BUT it is NOT working",
        "",
    ]
    for clf in (intent_classifier(), journey_classifier()):
        fast = [f for pats in clf._cue_fast.values() for f in pats]
        assert fast and all(f is not None for f in fast)  # every shipped cue takes the fast path
        assert np.array_equal(clf.cue_counts(texts), _reference_cue_counts(clf, texts))
    assert lowered_for_ascii_patterns("Abc") == "abc" and lowered_for_ascii_patterns("\u0131s") is None


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [
        (r"\b(?:crash\w*|bug)\b", True),
        (r"\?\s*$", True),
        (r"^\bhow\b", True),
        (r"\bFoo", False),
        (r"\x41pp", False),
        (r"(?-i:app)", False),
        (r"\\S", False),
        (r"café", False),
    ],
)
def test_caseless_ascii_pattern(pattern: str, ok: bool) -> None:
    assert caseless_ascii_pattern(pattern) is ok


def test_keyword_fast_path_equals_the_regexes() -> None:
    topics = [*default_taxonomy(), Topic("café", "coffee", keywords=("café", "wıfı"))]
    texts = [i.text for i in load_items()] + [
        "The WIFI keeps dropping",
        "the wıfı keeps dropping",  # dotless i: IGNORECASE matches 'i'
        "the ſync is broken",  # long s
        "İnstall failed, \u212aeyboard too",  # dotted capital I, Kelvin sign
        "price: $5/month, log-in broken",
        "",
        "apply, apps, application",
    ]
    for text in texts:
        lowered = text.lower()
        want = [bool(t.keyword_re and t.keyword_re.search(lowered)) for t in topics]
        assert keyword_hits(topics, lowered) == want, text


def test_one_blas_thread_gives_the_same_products() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 384)).astype(np.float32), rng.normal(size=(384, 70)).astype(np.float32)
    with one_blas_thread(), one_blas_thread():  # re-entrant
        inside = a @ b
    assert np.allclose(inside, a @ b, atol=1e-4)
