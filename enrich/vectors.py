"""Per-mention vectors: the embedding stage, their storage form, and the bounded in-process caches.

`enrich.embedding` turns text into vectors; this module attaches them to mentions. The embedding stage
stores one vector per mention ({"dim": 384, "f16": base64(float16 bytes)}) and keeps it, and the
mention's clause vectors, in small in-process caches, so the stages after it in the same batch (topics,
intent, journey) skip the database and a second encoder pass. The caches are bounded by entries, not by
run length, so enrichment memory stays flat over any number of mentions: 10,000 post vectors (~17 MB)
and 2,000 mentions' clause vectors (~20 MB) are many batches' worth (enrichment batches hold 64).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from enrich.base import Enrichment
from enrich.embedding import DIM, STAGE, ClauseData, Encoder, default_encoder, embed_texts, mention_text

if TYPE_CHECKING:
    from listener.types import Mention
    from storage import Store


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

    def __init__(self, max_items: int = 10_000) -> None:
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


# `enrich_pending` embeds the next batch while the topic stage still reads this one's clauses, so the clause
# cache holds two batches of up to 1,024 mentions (up to 10 clauses x 768 B each; 8,192 cost 80 MB of peak RSS
# over 100 k mentions); a larger --batch-size re-encodes the clauses that no longer fit (same vectors).
CACHE = VectorCache()
CLAUSES: OrderedDict[str, ClauseData] = OrderedDict()
CLAUSES_MAX = 2_048
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
    runs_ahead = True  # text only, and the stages after it read its caches: started one batch early

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
