"""Sentence embeddings: base all-MiniLM-L6-v2 in ONNX (per-token int8), computed once per mention and stored.

Every insight stage (topics, intent, journey, emerging clusters, semantic search) reads these
vectors instead of running the encoder again. The ONNX graph already mean-pools and
L2-normalises, so cosine similarity is a dot product. Loading is lazy and thread-safe (same
pattern as `enrich.sentiment`); text goes through the shared `enrich.textprep` normalisation.
Vectors are stored as an Enrichment {"dim": 384, "f16": base64(float16 bytes)} until storage grows
a vector column.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enrich.onnx_model import GROUP_TOKENS, OnnxTextModel, read_card
from enrich.textprep import (
    compose_title_text,
    has_at_least,
    has_signal,
    head_tail_ids,
    normalise,
    smart_truncate_chars,
)

if TYPE_CHECKING:
    from listener.types import Mention

MODEL_DIR = Path(__file__).resolve().parent / "models" / "encoder"
STAGE = "embedding"
DIM = 384


def mention_text(m: Mention) -> str:
    """The text every insight stage reads: title + body joined like the sentiment stage does."""
    return compose_title_text(getattr(m, "title", None), getattr(m, "text", None))


_CLAUSE_RE = re.compile(
    r"(?<=[.!?;])\s+|\n+|\s+[-–—•]\s+|,\s+|\s+(?=(?:but|however|although|though|except)\b)", re.IGNORECASE
)
MAX_CLAUSES = 10


def clause_spans(text: str, limit: int = MAX_CLAUSES) -> list[tuple[int, int]]:
    """(start, end) of the clauses worth scoring, at most `limit`.

    Splits at sentence ends, commas and contrast words ("love the app, battery dies in an hour"
    holds two aspects with opposite sentiment); a fragment under three words after a comma joins
    the clause before it, and clauses need three letters.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    bounds = [(m.start(), m.end()) for m in _CLAUSE_RE.finditer(text)] + [(len(text), len(text))]
    for sep_start, sep_end in bounds:
        a, b, pos = pos, sep_start, sep_end
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a >= b:
            continue
        if spans and len(text[a:b].split()) < 3 and text[spans[-1][1] - 1] not in ".!?;":
            spans[-1] = (spans[-1][0], b)
        elif len(spans) < limit:
            spans.append((a, b))
        else:
            break
    return [(a, b) for a, b in spans if has_at_least(text[a:b], 3)]


def kept_indices(n: int, max_len: int, head_frac: float) -> list[int]:
    """Token positions `head_tail_ids` keeps (same rule), so offsets can follow the truncation."""
    if n <= max_len:
        return list(range(n))
    budget = max_len - 2
    n_head = max(1, round(budget * head_frac))
    n_tail = budget - n_head
    return [0, *range(1, 1 + n_head), *range(n - 1 - n_tail, n - 1), n - 1]


_BLAS_LOCK = threading.RLock()
_BLAS: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block's numpy matrix products on one BLAS thread (stages use it around similarity products).

    Those products are a few hundred rows by 384: OpenBLAS's second thread gains nothing there and, on
    a busy machine, its spin-waiting costs far more CPU than the product itself (2,000 products of
    256×384 by 384×60 on the loaded 2-core box: 10.4 CPU-s and 15.7 s wall with the default two
    threads, 0.23 CPU-s and 0.41 s wall with one). Serialised by a lock so the thread count set and
    restored by threadpoolctl cannot interleave between threads.
    """
    global _BLAS
    with _BLAS_LOCK:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        with _BLAS.limit(limits=1, user_api="blas"):
            yield


def dot_rows(vecs: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """(len(vecs) × len(protos)) dot products, one matrix-vector product per row.

    A single matrix product would be cheaper by ~1.5 µs a row, but its blocking depends on how many rows
    share the call, which moves results in the last bits: enough to flip a 4-decimal score or a
    threshold between batch sizes. Row by row, a mention's scores depend on its own vector only.
    """
    out = np.empty((len(vecs), len(protos)), dtype=np.result_type(vecs, protos))
    with one_blas_thread():
        for i, vec in enumerate(vecs):
            out[i] = protos @ vec
    return out


ClauseData = tuple[list[str], np.ndarray]
"""(clause texts, clause unit vectors) of one mention; pooled from the same encoder pass."""


def pool_clauses(text: str, offsets: Sequence[tuple[int, int]], tokens: np.ndarray) -> ClauseData | None:
    """Mean of each clause's token states (tokens lying wholly inside it), L2-normalised; None if no clause.

    Kept tokens are in text order (head+tail truncation keeps order), so the tokens of a clause are one
    contiguous run found by binary search, summed by one `np.add.reduceat` over the runs' [start, end)
    pairs (float64, like the cumulative sums it replaced; about a quarter cheaper): no per-token Python.
    """
    spans = clause_spans(text)
    if not spans:
        return None
    edges = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    real = np.flatnonzero(edges[:, 1] > edges[:, 0])  # special tokens have empty offsets
    bounds = np.asarray(spans, dtype=np.int64)
    lo = np.searchsorted(edges[real, 0], bounds[:, 0], side="left")
    hi = np.searchsorted(edges[real, 1], bounds[:, 1], side="right")
    ok = np.flatnonzero(hi > lo)
    if not len(ok):
        return None
    rows = np.zeros((len(real) + 1, tokens.shape[-1]), dtype=np.float64)  # + a zero row: an end may be len(real)
    rows[:-1] = tokens[real]
    sums = np.add.reduceat(rows, np.stack([lo[ok], hi[ok]], axis=1).ravel(), axis=0)[::2]
    means = sums / (hi[ok] - lo[ok])[:, None]
    unit = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-9)
    return [text[a:b][:400] for a, b in (spans[k] for k in ok)], unit.astype(np.float32)


def mean_unit(tokens: np.ndarray) -> np.ndarray:
    """L2-normalised mean of one text's token states (its real tokens only): the graph's pooling, in numpy.

    Done here rather than read from the graph's ``embedding`` output so both `Encoder.embed` and
    `Encoder.embed_clauses` fetch one output (``token_embeddings``) and give bit-identical post vectors.
    """
    mean = tokens.astype(np.float64).mean(axis=0)
    unit: np.ndarray = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    return unit


class Encoder:
    """Thread-safe lazy ONNX sentence encoder. `embed` returns unit vectors; unusable text → zeros.

    A batch-invariant model (its card says ``batch_invariant``: per-token int8, checked at export) runs
    in padded batches of similar length, up to ``max_batch`` rows with padding within ``max_padding`` of
    the real tokens (`length_groups`), ``workers`` batches at once, each on one onnxruntime thread. A
    model without that promise runs every text alone, so a stored vector never depends on its neighbours.

    Small batches are cheaper per text on this CPU (a group's activations stay in cache): groups are also
    capped at `GROUP_TOKENS` padded tokens (2,000 bench texts, idle 2-core VM, texts/s: 32 rows 351-358,
    8 rows 429-433, 4 rows 446-463, up to 32 rows within 256 tokens 496-507).
    """

    max_length = 128

    def __init__(
        self,
        model_dir: Path | str = MODEL_DIR,
        intra_op_threads: int = 1,
        model_file: str = "model.onnx",
        workers: int | None = None,
        per_row: bool | None = None,
        max_batch: int = 32,
        max_padding: float = 0.15,
        max_tokens: int = GROUP_TOKENS,
    ) -> None:
        # One onnxruntime thread per call and `workers` calls at once: MiniLM's ops are small, so two
        # intra-op threads spend much of their time handing work over (measured at batch 8, loaded box:
        # 4.0 CPU-ms/text with 1 thread vs 4.4 with 2; batch 16 with 2 threads, the old setting, 4.8).
        self.model = OnnxTextModel(
            model_dir,
            model_file=model_file,
            intra_op_threads=intra_op_threads,
            missing_hint="run python -m enrich.export_encoder",
            workers=workers if workers is not None else min(2, os.cpu_count() or 1),
        )
        self.model_dir = self.model.model_dir
        self._per_row = per_row
        self.max_batch = max(1, max_batch)
        self.max_padding = max_padding
        self.max_tokens = max_tokens
        self._version: str | None = None

    @property
    def workers(self) -> int:
        return self.model.workers

    @property
    def version(self) -> str:
        """The model card's version, read once (every stage asks for it on every batch)."""
        if self._version is None:
            self._version = str(read_card(self.model_dir).get("version", "encoder-missing"))
        return self._version

    @property
    def per_row(self) -> bool:
        """True unless told otherwise or the model card promises batch invariance."""
        if self._per_row is not None:
            return self._per_row
        return not self.model.batch_invariant

    def _ensure_loaded(self) -> None:
        self.model.load()

    def _prepare(self, texts: Sequence[str | bytes]) -> tuple[list[int], list[str]]:
        """(positions, normalised and char-truncated texts) of the texts worth encoding."""
        keep: list[int] = []
        prepared: list[str] = []
        for i, raw in enumerate(texts):
            if isinstance(raw, str | bytes):
                norm = smart_truncate_chars(normalise(raw))
                if norm and has_signal(norm):
                    keep.append(i)
                    prepared.append(norm)
        return keep, prepared

    def token_states(self, seqs: Sequence[list[int]]) -> list[np.ndarray]:
        """Last hidden states (len(seq) × 384) of every token-id sequence, padding cut off.

        Batch-invariant models: length groups spread over the workers (`spread_groups` splits a
        short call so both cores work); otherwise one sequence per run.
        """
        if not seqs:
            return []
        groups = self.model.plan_groups(
            seqs, per_row=self.per_row, max_batch=self.max_batch, max_padding=self.max_padding,
            max_tokens=self.max_tokens,
        )
        outs = self.model.run_batches("token_embeddings", [[seqs[i] for i in g] for g in groups])
        states: list[np.ndarray] = [np.zeros((0, DIM), np.float32)] * len(seqs)
        for group, out in zip(groups, outs, strict=True):
            for row, i in enumerate(group):
                states[i] = out[row, : len(seqs[i])]
        return states

    def token_ids(
        self, texts: Sequence[str | bytes], max_length: int | None = None
    ) -> tuple[list[int], list[list[int]]]:
        """(positions of the texts worth encoding, their head+tail-truncated token ids), as `embed` runs them."""
        keep, prepared = self._prepare(texts)
        if not keep:
            return keep, []
        self._ensure_loaded()
        m = self.model
        limit = max_length or self.max_length
        return keep, [head_tail_ids(e.ids, limit, m.cls, m.sep, 0.75) for e in m.tokenizer.encode_batch(prepared)]

    def embed(self, texts: Sequence[str | bytes], max_length: int | None = None) -> np.ndarray:
        """Raw texts → (n, 384) float32 unit vectors; empty / signal-less texts get a zero vector."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        keep, seqs = self.token_ids(texts, max_length)
        for j, tokens in enumerate(self.token_states(seqs)):
            out[keep[j]] = mean_unit(tokens)
        return out

    def embed_clauses(self, texts: Sequence[str | bytes]) -> tuple[np.ndarray, list[ClauseData]]:
        """Post vectors plus clause vectors pooled from the same pass's token states (no second pass).

        Clause vectors are the mean of the clause's contextual token vectors, L2-normalised; a
        clause cut away by truncation gets no vector (and is left out).
        """
        post = np.zeros((len(texts), DIM), dtype=np.float32)
        clauses: list[ClauseData] = [([], np.zeros((0, DIM), np.float32)) for _ in texts]
        keep, prepared = self._prepare(texts)
        if not keep:
            return post, clauses
        self._ensure_loaded()
        encs = self.model.tokenizer.encode_batch(prepared)
        seqs: list[list[int]] = []
        offsets: list[list[tuple[int, int]]] = []
        for e in encs:
            ids, offs = e.ids, e.offsets  # each attribute read converts the whole sequence: read once
            if len(ids) > self.max_length:
                idx = kept_indices(len(ids), self.max_length, 0.75)
                ids, offs = [ids[k] for k in idx], [offs[k] for k in idx]
            seqs.append(ids)
            offsets.append(offs)
        for j, tokens in enumerate(self.token_states(seqs)):
            post[keep[j]] = mean_unit(tokens)
            pooled = pool_clauses(prepared[j], offsets[j], tokens)
            if pooled is not None:
                clauses[keep[j]] = pooled
        return post, clauses


_DEFAULT: Encoder | None = None
_DEFAULT_LOCK = threading.Lock()


def default_encoder() -> Encoder:
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = Encoder()
    return _DEFAULT


def embed_texts(texts: Sequence[str | bytes], encoder: Encoder | None = None) -> np.ndarray:
    """(n, 384) float32 unit vectors (zeros for unusable text) with the shared default encoder."""
    return (encoder or default_encoder()).embed(texts)
