"""Intent stage: complaint, question, feature request, praise or other.

Embedding prototypes (hand-written example phrasings per class, embedded once) plus lexical cues
(question marks, "please add", "doesn't work" …), combined linearly; the class wins when its score
clears the "other" bar. The combination weights were tuned on the dev split of
tests/data/eval/insight_eval.jsonl only; test-split numbers are in docs/insight_evaluation.md.
`PrototypeClassifier` is shared with the journey-stage classifier.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from enrich.base import Enrichment
from enrich.embedding import Encoder, default_encoder, dot_rows, mention_text
from enrich.textprep import caseless_ascii_pattern, lowered_for_ascii_patterns
from enrich.vectors import vectors_for

if TYPE_CHECKING:
    from listener.types import Mention
    from storage import Store

STAGE = "intent"
OTHER = "other"

INTENT_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "complaint": (
        "This app is awful, it keeps crashing and nothing works.",
        "I can't log in anymore, it says request timed out. So frustrating.",
        "Worst customer service ever, nobody answered my emails.",
        "Since the last update it is broken and I have to reinstall it every few days.",
        "The new design is terrible and hard to read.",
        "It was a disappointment, I expected much more.",
    ),
    "question": (
        "How do I export my data?",
        "Does anyone know if this works on Linux?",
        "Is it possible to change the default setting?",
        "What is the best way to do this?",
        "Can someone explain why this happens?",
        "What do you think about this?",
    ),
    "feature_request": (
        "Please add a dark mode.",
        "It would be great if you could add support for exporting to CSV.",
        "Are there any plans to support other platforms?",
        "I wish the app let me view my statements.",
        "Feature request: an option to hide ads from one site only.",
        "Hope you can find time to add a keyboard shortcut.",
    ),
    "praise": (
        "I love this app, it's so easy to use.",
        "Great service, the staff were very helpful. Thank you!",
        "Best bank I've ever had, highly recommend.",
        "This is awesome, works perfectly.",
        "Thanks so much for this fantastic tool.",
        "Really enjoyed it, great job.",
    ),
}


def words(*alternatives: str, tail: str = r"\b") -> str:
    """Regex for any of the alternatives as whole words: keeps the cue lists readable."""
    return r"\b(?:" + "|".join(alternatives) + ")" + tail


_Q_START = "^" + words(
    "how",
    "what",
    "whats",
    "what's",
    "why",
    "when",
    "where",
    "which",
    "who",
    "whom",
    "whose",
    "is",
    "are",
    "can",
    "could",
    "does",
    "do",
    "did",
    "should",
    "would",
    "will",
    "has",
    "have",
    "any(?:one|body)?",
)
INTENT_CUES: dict[str, tuple[str, ...]] = {
    "complaint": (
        words("doesn'?t", "does not", "don'?t", "won'?t", "can'?t", "cannot", "couldn'?t", "isn'?t", "not", tail="")
        + r" (?:work|load|open|let|recogni[sz]e|find|log|save|even)",
        words(
            r"crash\w*",
            r"bug\w*",
            "broken",
            r"glitch\w*",
            "error",
            r"freez\w*",
            "times? out",
            "timed out",
            "bad request",
        ),
        words(
            "awful",
            "terrible",
            "horrible",
            "worst",
            "hate",
            "trash",
            "garbage",
            "crap",
            "useless",
            r"frustrat\w*",
            r"annoy\w*",
            r"disappoint\w*",
            "ugh",
        ),
        words("please fix", "still not", "no longer", r"underwhelm\w*", "ruins?", "ignored"),
        words("but", "however", "unfortunately", "when it actually")
        + r"[^.!?]*"
        + words("not", "n'?t", "never", "only", "still", "takes"),
    ),
    "question": (
        r"\?",
        r"\?\s*$",
        _Q_START,
        words("i was wondering", "is it possible", "any idea", "anyone know", "how (?:do|can|to)"),
    ),
    "feature_request": (
        words(
            "please add",
            "feature request",
            "would (?:be|love) (?:nice|great|awesome)",
            "it would be",
            "i wish",
            "wish (?:it|there|they)",
            "any plans",
            "add (?:a |an )?support",
            "hope you can",
            "could you add",
            "should add",
            "needs? (?:a|an|to have)",
        ),
        words("missing", r"lack\w*", "not allow", "doesn'?t allow", "does not allow"),
    ),
    "praise": (
        words(
            r"love\w*",
            "great",
            "awesome",
            "excellent",
            "amazing",
            "fantastic",
            "wonderful",
            "best",
            r"perfect\w*",
            "happy",
            r"enjoy\w*",
            r"recommend\w*",
            "convenient",
            "intuitive",
            "easy to use",
            "nice",
            "cool",
            "hero",
        ),
        words(r"thank(?:s| you)\w*", "kudos", "well done", "good job", "great job"),
    ),
}
# From `python -m enrich.evaluate_insight --tune` (dev split only, macro-F1 0.785 on dev; re-tuned for the
# per-token int8 encoder minilm-l6-v2-base-onnx-pt8-2; kept for the static st8-1, whose vectors are as close to fp32).
INTENT_WEIGHTS: dict[str, Any] = {
    "cue": 0.25,
    "bias": {"complaint": 0.12, "question": 0.02, "feature_request": 0.0, "praise": 0.04},
}
INTENT_OTHER_BAR = 0.56


@dataclass
class PrototypeClassifier:
    """score(c) = max cosine to c's prototypes + cue_weight·(#cue patterns hit) + bias(c); below the bar → other."""

    prototypes: Mapping[str, Sequence[str]]
    cues: Mapping[str, Sequence[str]]
    other_bar: float
    cue_weight: float
    bias: Mapping[str, float] = field(default_factory=dict)
    other: str = OTHER
    encoder: Encoder = field(default_factory=default_encoder)

    def __post_init__(self) -> None:
        self.labels = list(self.prototypes)
        self._cue_res = {
            c: [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in self.cues.get(c, ())] for c in self.labels
        }
        # The same patterns without IGNORECASE, run on lowered text when that finds the same (about twice
        # as fast; see enrich.textprep.lowered_for_ascii_patterns); None where a pattern does not allow it.
        self._cue_fast = {
            c: [re.compile(p, re.MULTILINE) if caseless_ascii_pattern(p) else None for p in self.cues.get(c, ())]
            for c in self.labels
        }
        self._lock = threading.Lock()
        self._protos: np.ndarray | None = None
        self._owner = np.zeros(0, dtype=np.int64)

    def _proto_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._protos is None:
                texts = [(i, p) for i, c in enumerate(self.labels) for p in self.prototypes[c]]
                self._protos = self.encoder.embed([p for _, p in texts])
                self._owner = np.asarray([i for i, _ in texts], dtype=np.int64)
            return self._protos, self._owner

    def cue_counts(self, texts: Sequence[str]) -> np.ndarray:
        """(n × classes) number of each class's cue patterns found in the first 2,000 characters."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        classes = [list(zip(self._cue_res[c], self._cue_fast[c], strict=True)) for c in self.labels]
        for r, text in enumerate(texts):
            head = text[:2000]
            lowered = lowered_for_ascii_patterns(head)
            for c, pats in enumerate(classes):
                out[r, c] = sum(
                    1
                    for slow, fast in pats
                    if (fast.search(lowered) if fast is not None and lowered is not None else slow.search(head))
                )
        return out

    def proto_sims(self, vecs: np.ndarray) -> np.ndarray:
        protos, owner = self._proto_matrix()
        sims = dot_rows(vecs, protos)
        out = np.zeros((len(vecs), len(self.labels)), dtype=np.float32)
        for c in range(len(self.labels)):
            out[:, c] = sims[:, owner == c].max(axis=1)
        return out

    def scores(self, texts: Sequence[str], vecs: np.ndarray) -> np.ndarray:
        bias = np.asarray([self.bias.get(c, 0.0) for c in self.labels], dtype=np.float32)
        return self.proto_sims(vecs) + self.cue_weight * self.cue_counts(texts) + bias

    def predict(self, texts: Sequence[str], vecs: np.ndarray) -> list[tuple[str, float, dict[str, float]]]:
        """(label, winning score, all scores) per text; zero vectors (no usable text) → other."""
        if not len(texts):
            return []
        scores = self.scores(texts, vecs)
        out = []
        for row, vec in zip(scores, vecs, strict=True):
            k = int(row.argmax())
            label = self.labels[k] if vec.any() and row[k] >= self.other_bar else self.other
            out.append(
                (label, round(float(row[k]), 4), {c: round(float(s), 4) for c, s in zip(self.labels, row, strict=True)})
            )
        return out


def intent_classifier(encoder: Encoder | None = None, **overrides: Any) -> PrototypeClassifier:
    params: dict[str, Any] = {
        "other_bar": INTENT_OTHER_BAR,
        "cue_weight": INTENT_WEIGHTS["cue"],
        "bias": INTENT_WEIGHTS["bias"],
    }
    params.update(overrides)
    return PrototypeClassifier(INTENT_PROTOTYPES, INTENT_CUES, encoder=encoder or default_encoder(), **params)


class PrototypeStage:
    """Shared Stage body: read/compute vectors once, classify, one Enrichment per mention."""

    name = "prototype"
    tag = "v1"

    def __init__(self, classifier: PrototypeClassifier, store: Store | None = None) -> None:
        self.classifier = classifier
        self.store = store

    @property
    def version(self) -> str:
        c = self.classifier
        return f"{c.encoder.version}+{self.tag}+b{c.other_bar}+w{c.cue_weight}"

    def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
        texts = [mention_text(m) for m in mentions]
        vecs = vectors_for(mentions, self.store, self.classifier.encoder)
        version = self.version
        return [
            Enrichment(m.id, self.name, version, {"label": label, "score": score, "scores": scores})
            for m, (label, score, scores) in zip(mentions, self.classifier.predict(texts, vecs), strict=True)
        ]


class IntentStage(PrototypeStage):
    """Stage "intent": what the writer wants (complaint/question/feature_request/praise/other)."""

    name = STAGE
    tag = "intent1"

    def __init__(self, store: Store | None = None, encoder: Encoder | None = None) -> None:
        super().__init__(intent_classifier(encoder), store)
