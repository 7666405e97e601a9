"""Teacher-labelled augmentation: built from training sentences only, deterministic, loaded as distillation data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enrich.training.augment import augmented_texts, load_augmented, variants
from enrich.training.data import Example


def _review(doc: str, sentences: list[str], split: str) -> list[Example]:
    return [Example(f"icwsm_products:{doc}_{i + 1}", s, 2, "icwsm_products", split) for i, s in enumerate(sentences)]


TRAIN = _review(
    "7",
    [
        "the battery lasts two full days even with heavy use",
        "setup took five minutes and the manual was clear",
        "but the charger stopped working after a week",
    ],
    "train",
) + _review("12", ["great little speaker for the price honestly"], "train")
TEST = _review("9", ["the screen cracked on the first drop and support never replied"], "test")


def test_new_texts_come_from_training_reviews_only_and_never_repeat_a_sentence() -> None:
    pairs = augmented_texts(TRAIN + TEST, per_sentence=4)
    texts = [t for _, t in pairs]
    originals = {e.text for e in TRAIN + TEST}
    assert texts and not originals & set(texts)
    assert len(texts) == len(set(texts))
    assert all("screen cracked" not in t for t in texts)  # the test review yields nothing
    assert all(uid.startswith("aug:icwsm_products:") for uid, _ in pairs)
    # a review's next sentence is joined to it, as customers write them
    assert (
        "the battery lasts two full days even with heavy use setup took five minutes and the manual was clear" in texts
    )


def test_augmentation_is_deterministic_for_a_seed() -> None:
    assert augmented_texts(TRAIN, per_sentence=4) == augmented_texts(TRAIN, per_sentence=4)
    assert augmented_texts(TRAIN, per_sentence=4, seed=1) != augmented_texts(TRAIN, per_sentence=4, seed=2)


def test_variants_of_a_one_sentence_review_are_crops_and_word_drops() -> None:
    import random

    doc = _review("3", ["the camera focuses fast and the colours look natural indoors"], "train")
    out = variants(doc, 0, random.Random(0), 5)
    words = set(doc[0].text.split())
    assert 0 < len(out) <= 5 and doc[0].text not in out
    assert all(set(t.split()) <= words and len(t.split()) >= 3 for t in out)


def test_loaded_texts_carry_the_teachers_argmax_and_probabilities(tmp_path: Path) -> None:
    path = tmp_path / "aug.npz"
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float16)
    np.savez_compressed(
        path,
        uids=np.array(["aug:icwsm_products:7_1:0", "aug:icwsm_products:7_2:3"]),
        texts=np.array(["battery died", "works great"]),
        probs=probs,
    )
    examples, soft = load_augmented(path)
    assert [(e.text, e.label, e.domain, e.split) for e in examples] == [
        ("battery died", 0, "aug_icwsm_products", "train"),
        ("works great", 2, "aug_icwsm_products", "train"),
    ]
    assert np.allclose(soft["aug:icwsm_products:7_2:3"], probs[1].astype(np.float32))


def test_a_training_example_without_a_soft_label_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # train.py imports it; CI's dev install has no torch
    from enrich.training.train import _soft_targets

    path = tmp_path / "soft.npz"
    np.savez_compressed(path, uids=np.array(["semeval:1"]), probs=np.array([[0.1, 0.1, 0.8]], dtype=np.float16))
    extra = {"aug:x:1_1:0": np.array([0.5, 0.25, 0.25], dtype=np.float32)}
    known = [Example("semeval:1", "a", 2, "semeval", "train"), Example("aug:x:1_1:0", "b", 0, "aug_x", "train")]
    assert _soft_targets(str(path), known, extra).shape == (2, 3)
    with pytest.raises(ValueError, match="no soft label for 1 training examples"):
        _soft_targets(str(path), [*known, Example("semeval:2", "c", 1, "semeval", "train")], extra)
