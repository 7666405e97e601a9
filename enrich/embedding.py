"""Sentence embeddings: base all-MiniLM-L6-v2 in ONNX (per-token int8), computed once per mention and stored.

Every insight stage (topics, intent, journey, emerging clusters, semantic search) reads these
vectors instead of running the encoder again. The ONNX graph already mean-pools and
L2-normalises, so cosine similarity is a dot product. Loading is lazy and thread-safe (same
pattern as `enrich.sentiment`); text goes through the shared `enrich.textprep` normalisation.
Vectors are stored as an Enrichment {"dim": 384, "f16": base64(float16 bytes)} until storage grows
a vector column.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enrich.base import Enrichment
from enrich.onnx_model import OnnxTextModel, length_groups, read_card, spread_groups
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
    from storage import Store

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

    Small batches are cheaper per text on this CPU (activations of 8 tweets stay in cache, 32 do not):
    2,000 bench texts on the loaded 2-core box, CPU-ms per text by max_batch: 4 → 3.3–3.7, 8 → 3.4–3.9,
    12 → 3.7–4.1, 16 → 3.8–4.0, 32 → 4.6–4.9.
    """

    max_length = 128

    def __init__(
        self,
        model_dir: Path | str = MODEL_DIR,
        intra_op_threads: int = 1,
        model_file: str = "model.onnx",
        workers: int | None = None,
        per_row: bool | None = None,
        max_batch: int = 8,
        max_padding: float = 0.15,
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
        self._ensure_loaded()
        return not bool(self.model.card.get("batch_invariant", False))

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
        if self.per_row:
            groups = [[i] for i in range(len(seqs))]
        else:
            groups = length_groups([len(s) for s in seqs], self.max_batch, self.max_padding)
            groups = spread_groups(groups, self.model.workers)
        outs = self.model.run_batches("token_embeddings", [[seqs[i] for i in g] for g in groups])
        states: list[np.ndarray] = [np.zeros((0, DIM), np.float32)] * len(seqs)
        for group, out in zip(groups, outs, strict=True):
            for row, i in enumerate(group):
                states[i] = out[row, : len(seqs[i])]
        return states

    def embed(self, texts: Sequence[str | bytes], max_length: int | None = None) -> np.ndarray:
        """Raw texts → (n, 384) float32 unit vectors; empty / signal-less texts get a zero vector."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        keep, prepared = self._prepare(texts)
        if not keep:
            return out
        self._ensure_loaded()
        m = self.model
        limit = max_length or self.max_length
        seqs = [head_tail_ids(e.ids, limit, m.cls, m.sep, 0.75) for e in m.tokenizer.encode_batch(prepared)]
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


def pack(vec: np.ndarray) -> dict[str, Any]:
    return {"dim": int(vec.shape[-1]), "f16": base64.b64encode(vec.astype("<f2").tobytes()).decode("ascii")}


def unpack(data: dict[str, Any] | None) -> np.ndarray | None:
    try:
        if not data or not data.get("f16"):
            return None
        vec = np.frombuffer(base64.b64decode(data["f16"]), dtype="<f2").astype(np.float32)
        return vec if vec.shape[0] == int(data.get("dim", DIM)) else None
    except (ValueError, TypeError):
        return None


def cache_key(m: Mention) -> str:
    """Mention id + text digest: an edited mention must not get its old vector back."""
    digest = hashlib.blake2b(mention_text(m).encode("utf-8", "replace"), digest_size=8).hexdigest()
    return f"{m.id}:{digest}"


class VectorCache:
    """Bounded in-process cache (see `cache_key`) → vector, so later stages in the same run skip the DB."""

    def __init__(self, max_items: int = 200_000) -> None:
        self.max_items = max_items
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, keys: Iterable[str], vecs: np.ndarray) -> None:
        with self._lock:
            for i, v in zip(keys, vecs, strict=True):
                self._data[i] = v
                self._data.move_to_end(i)
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._data.get(key)


CACHE = VectorCache()
CLAUSES: OrderedDict[str, ClauseData] = OrderedDict()
CLAUSES_MAX = 20_000
_CLAUSES_LOCK = threading.Lock()


def _put_clauses(keys: Sequence[str], data: Sequence[ClauseData]) -> None:
    with _CLAUSES_LOCK:
        for k, (texts, vecs) in zip(keys, data, strict=True):
            CLAUSES[k] = (texts, vecs.astype(np.float16))
            CLAUSES.move_to_end(k)
        while len(CLAUSES) > CLAUSES_MAX:
            CLAUSES.popitem(last=False)


def clear_caches() -> None:
    """Forget every in-process post and clause vector (tests; a process that swaps the model)."""
    with CACHE._lock:
        CACHE._data.clear()
    with _CLAUSES_LOCK:
        CLAUSES.clear()


def clause_vectors_for(
    mentions: Sequence[Mention], store: Store | None = None, encoder: Encoder | None = None
) -> tuple[np.ndarray, list[ClauseData]]:
    """Post vectors + clause data, from the embedding stage's in-process cache when it ran in this
    process; otherwise one encoder pass produces both (clause vectors are not stored)."""
    keys = [cache_key(m) for m in mentions]
    data: list[ClauseData | None] = []
    with _CLAUSES_LOCK:
        for k in keys:
            hit = CLAUSES.get(k)
            data.append(None if hit is None else (hit[0], hit[1].astype(np.float32)))
    missing = [i for i, d in enumerate(data) if d is None]
    post = np.zeros((len(mentions), DIM), dtype=np.float32)
    if missing:
        fresh_post, fresh = (encoder or default_encoder()).embed_clauses([mention_text(mentions[i]) for i in missing])
        for row, i in enumerate(missing):
            data[i] = fresh[row]
            post[i] = fresh_post[row]
        CACHE.put([keys[i] for i in missing], fresh_post)
        _put_clauses([keys[i] for i in missing], fresh)
    fresh_set = set(missing)
    present = [i for i in range(len(mentions)) if i not in fresh_set]
    if present:
        post[present] = vectors_for([mentions[i] for i in present], store, encoder)
    return post, [d if d is not None else ([], np.zeros((0, DIM), np.float32)) for d in data]


def load_vectors(store: Store, ids: Sequence[str]) -> np.ndarray:
    """Stored vectors for `ids` (rows of zeros where a mention has none yet), float32 (n, 384)."""
    out = np.zeros((len(ids), DIM), dtype=np.float32)
    found = store.enrichments_for(list(ids), stage=STAGE) if ids else {}
    for row, mid in enumerate(ids):
        vec = unpack(found.get(mid, {}).get(STAGE))
        if vec is not None and vec.shape[0] == DIM:
            out[row] = vec
    return out


def vectors_for(mentions: Sequence[Mention], store: Store | None = None, encoder: Encoder | None = None) -> np.ndarray:
    """Vectors for mentions: in-process cache → store → encoder (only for what is still missing)."""
    out = np.zeros((len(mentions), DIM), dtype=np.float32)
    missing: list[int] = []
    for i, m in enumerate(mentions):
        vec = CACHE.get(cache_key(m))
        if vec is None:
            missing.append(i)
        else:
            out[i] = vec
    if missing and store is not None:
        stored = load_vectors(store, [mentions[i].id for i in missing])
        still = []
        for row, i in enumerate(missing):
            if stored[row].any():
                out[i] = stored[row]
            else:
                still.append(i)
        missing = still
    if missing:
        vecs = embed_texts([mention_text(mentions[i]) for i in missing], encoder)
        out[missing] = vecs
        CACHE.put([cache_key(mentions[i]) for i in missing], vecs)
    return out


class EmbeddingStage:
    """Stage "embedding": one stored unit vector per mention (runs before every other insight stage)."""

    name = STAGE

    def __init__(self, encoder: Encoder | None = None) -> None:
        self.encoder = encoder or default_encoder()

    @property
    def version(self) -> str:
        return self.encoder.version

    def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
        vecs, clauses = self.encoder.embed_clauses([mention_text(m) for m in mentions])
        keys = [cache_key(m) for m in mentions]
        CACHE.put(keys, vecs)
        _put_clauses(keys, clauses)  # the topic stage reads these in the same process: no second pass
        version = self.version
        out = []
        for m, v in zip(mentions, vecs, strict=True):
            data: dict[str, Any] = pack(v) if v.any() else {"dim": DIM, "f16": None, "reason": "no usable text"}
            out.append(Enrichment(mention_id=m.id, stage=self.name, model_version=version, data=data))
        return out
