"""Sentiment stage: fine-tuned MiniLM exported to ONNX (int8), run with onnxruntime.

No torch at runtime: the `tokenizers` fast tokenizer and onnxruntime are loaded
lazily on first use (once per process, thread-safe), so importing this module
is cheap and cold start stays small. Probabilities are temperature-calibrated
(temperature stored in ``model_card.json``). Texts run in padded batches of
similar token length when the model is batch-invariant (its card says so).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from enrich.onnx_model import OnnxTextModel, read_card
from enrich.textprep import compose_title_text, has_signal, head_tail_ids, normalise, smart_truncate_chars

if TYPE_CHECKING:
    from enrich.base import Enrichment
    from listener.types import Mention

MODEL_DIR = Path(__file__).resolve().parent / "models" / "sentiment"
LABELS: tuple[Literal["negative", "neutral", "positive"], ...] = ("negative", "neutral", "positive")
Label = Literal["negative", "neutral", "positive"]


MODEL_VERSION: str = str(read_card(MODEL_DIR).get("version", "sentiment-model-missing"))


@dataclass(frozen=True)
class SentimentResult:
    """Label with its calibrated probability; label None (with reason) for unusable input."""

    label: Label | None
    score: float | None
    scores: dict[str, float] = field(default_factory=dict)
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "scores": dict(self.scores), "reason": self.reason}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


class SentimentClassifier:
    """3-class sentiment for short social posts; see MODEL_CARD.md for data and metrics."""

    def __init__(
        self,
        model_dir: Path | str = MODEL_DIR,
        intra_op_threads: int = 1,
        model_file: str = "model.onnx",
        per_row: bool | None = None,
        max_padding: float = 0.15,
        workers: int = 2,
    ) -> None:
        """``per_row=True`` runs each text as its own ONNX call; None decides from the model card.

        Default: two single-threaded runs side by side (``workers=2``) rather than one run on two
        onnxruntime threads: a tweet batch is too small for intra-op threads to share (2-core VM, batch 32:
        one run on 2 threads used 2.85 CPU-ms per post and barely one core; see README for throughput).

        A model quantised with one activation scale per tensor (onnxruntime dynamic int8) gives a post
        scores that depend on its padded batch neighbours (3 % label flips between batch 1 and 32 on
        TweetEval val), so such models run per row. Models whose card says ``batch_invariant``
        (per-token int8 or fp32, checked at export) run in padded batches of similar length whose padding
        stays within ``max_padding`` of the real tokens (see ``length_groups``).
        """
        self._per_row = per_row
        self.max_padding = max_padding
        # No memory arena: the two workers' concurrent runs on one session would lock it on every allocation
        # (2-core VM, batch 32, ONNX only: 1,085-1,096 → 1,177-1,182 posts/s); the model's buffers are small.
        self.model = OnnxTextModel(
            model_dir, model_file=model_file, intra_op_threads=intra_op_threads, workers=workers, memory_arena=False
        )
        self.model_dir = self.model.model_dir
        self.temperature = 1.0
        self.max_length = 128
        self.head_frac = 1.0
        self._ready = False
        self._load_lock = threading.Lock()

    @property
    def per_row(self) -> bool:
        if self._per_row is not None:
            return self._per_row
        return not self.model.batch_invariant

    @property
    def version(self) -> str:
        self._ensure_loaded()
        return str(self.model.card.get("version", MODEL_VERSION))

    def _ensure_loaded(self) -> None:
        if self._ready:
            return
        with self._load_lock:  # two stages may share this classifier from two threads (listener.pipeline)
            if self._ready:
                return
            self.model.load()
            card = self.model.card
            self.temperature = float(card.get("temperature", 1.0))
            self.max_length = int(card.get("max_length", 128))
            self.head_frac = float(card.get("truncation_head_frac", 1.0))
            self._ready = True

    def encode(self, normalised: Sequence[str]) -> list[list[int]]:
        """Token ids cut to ``max_length`` by the card's long-post rule (``truncation_head_frac`` from the start)."""
        self._ensure_loaded()
        m = self.model
        encs = m.tokenizer.encode_batch([smart_truncate_chars(t) for t in normalised])
        return [head_tail_ids(list(e.ids), self.max_length, m.cls, m.sep, self.head_frac) for e in encs]

    def logits(self, normalised: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Uncalibrated logits for already-normalised texts (batched by length when not per-row)."""
        self._ensure_loaded()
        out = np.zeros((len(normalised), len(LABELS)), dtype=np.float32)
        if not normalised:
            return out
        seqs = self.encode(normalised)
        groups = self.model.plan_groups(
            seqs, per_row=self.per_row, max_batch=batch_size, max_padding=self.max_padding
        )
        batches = self.model.run_batches("logits", [[seqs[i] for i in g] for g in groups])
        for group, logits in zip(groups, batches, strict=True):
            out[group] = logits
        return out

    def probabilities(self, normalised: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return _softmax(self.logits(normalised, batch_size) / self.temperature)

    def classify(self, texts: Sequence[str | bytes], batch_size: int = 32) -> list[SentimentResult]:
        """Classify raw posts. Never raises on bad input: unusable text gets label None + reason."""
        results: list[SentimentResult | None] = [None] * len(texts)
        todo: list[int] = []
        prepared: list[str] = []
        for i, raw in enumerate(texts):
            if raw is None or not isinstance(raw, (str, bytes)):
                results[i] = SentimentResult(None, None, {}, "not text")
                continue
            norm = normalise(raw)
            if not norm:
                results[i] = SentimentResult(None, None, {}, "empty text")
            elif not has_signal(norm):
                results[i] = SentimentResult(None, None, {}, "no letters or emoji")
            else:
                todo.append(i)
                prepared.append(norm)
        if todo:
            probs = self.probabilities(prepared, batch_size)
            for i, p in zip(todo, probs, strict=True):
                k = int(p.argmax())
                scores: dict[str, float] = {name: round(float(v), 6) for name, v in zip(LABELS, p, strict=True)}
                results[i] = SentimentResult(LABELS[k], scores[LABELS[k]], scores, None)
        return [r if r is not None else SentimentResult(None, None, {}, "internal") for r in results]


class SentimentStage:
    """Enrichment stage "sentiment": one Enrichment per mention, never drops a mention."""

    name = "sentiment"
    independent = True  # its own model; runs beside the encoder stages (listener.pipeline)

    def __init__(self, classifier: SentimentClassifier | None = None, batch_size: int = 32) -> None:
        self.classifier = classifier or SentimentClassifier()
        self.batch_size = batch_size

    @property
    def version(self) -> str:
        return self.classifier.version

    def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
        from enrich.base import Enrichment

        texts = [compose_title_text(getattr(m, "title", None), getattr(m, "text", None)) for m in mentions]
        results = self.classifier.classify(texts, self.batch_size)
        version = self.version
        return [
            Enrichment(mention_id=m.id, stage=self.name, model_version=version, data=r.as_dict())
            for m, r in zip(mentions, results, strict=True)
        ]
