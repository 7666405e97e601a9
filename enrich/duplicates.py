"""Near-duplicate stage: the same complaint cross-posted or copy-pasted counts once, not five times.

Two steps: an exact hash of the normalised text (case, whitespace, URLs, @names, punctuation
ignored), then MinHash (64 permutations over character 5-grams; word 3-grams for posts over 1,000
characters) with LSH banding (16 bands × 4 rows ≈ 50 % Jaccard to become a candidate), confirmed by the
estimated Jaccard ≥ `threshold`. Own small implementation: numpy only, no extra dependency.

Group id = "dup-" + the first mention seen in the group (stable across runs); the canonical member
is the earliest `created_at`. The index lives in memory (bounded) and is warm-started from the
store's recent mentions, so groups span batches and runs.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from enrich.base import Enrichment
from enrich.embedding import mention_text
from enrich.textprep import clean_unicode, has_at_least

if TYPE_CHECKING:
    from listener.types import Mention
    from storage import Store

STAGE = "duplicates"
NUM_PERM = 64
BANDS = 16
ROWS = NUM_PERM // BANDS
_PRIME = (1 << 31) - 1  # a·x + b with a, x < 2^31 stays below 2^63: exact in uint64
_rng = np.random.default_rng(20260325)
_A = _rng.integers(1, _PRIME, size=NUM_PERM, dtype=np.uint64)
_B = _rng.integers(0, _PRIME, size=NUM_PERM, dtype=np.uint64)
_STRIP = re.compile(r"(?:https?://|www\.)\S+|(?<![\w@])@\w+|[^\w\s]", re.UNICODE)
_WS = re.compile(r"\s+")


def normalise_for_hash(text: str | bytes) -> str:
    return _WS.sub(" ", _STRIP.sub(" ", clean_unicode(text).lower())).strip()


def exact_key(norm: str) -> str:
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=12).hexdigest()


def shingles(norm: str) -> set[str]:
    """Character 5-grams for posts up to 1,000 characters (robust to small edits), word 3-grams beyond."""
    if len(norm) > 1000:
        words = norm.split()
        return {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
    return {norm[i : i + 5] for i in range(max(1, len(norm) - 4))} if norm else set()


_GRAM_MUL = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: a polynomial hash over code points
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _gram_hashes(norm: str) -> np.ndarray:
    """One uint64 per distinct shingle of `shingles(norm)`, without a Python call per shingle.

    Character 5-grams are hashed in numpy from the code points (a polynomial over 5 positions, then
    mixed); word 3-grams (long posts only) keep a blake2b per gram.
    """
    if len(norm) > 1000:
        grams = shingles(norm)
        return np.fromiter(
            (int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") for g in grams),
            dtype=np.uint64,
            count=len(grams),
        )
    points = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    width = min(5, len(points))
    h = np.zeros(len(points) - width + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(width):
            h = h * _GRAM_MUL + points[k : len(points) - width + 1 + k]
        return np.unique(_splitmix(h + np.uint64(width)))


def minhash(norm: str) -> np.ndarray:
    """64 min-hash values (uint32); identical inputs give identical signatures in every process."""
    norm = norm[:50_000]
    if not norm:
        return np.full(NUM_PERM, _PRIME, dtype=np.uint32)
    x = _gram_hashes(norm) % np.uint64(_PRIME)
    vals = (_A[:, None] * x[None, :] + _B[:, None]) % np.uint64(_PRIME)
    out: np.ndarray = vals.min(axis=1).astype(np.uint32)
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


@dataclass
class _Group:
    group_id: str
    canonical_id: str
    canonical_at: datetime
    signature: np.ndarray
    size: int = 1


class DuplicateIndex:
    """Exact + LSH index over groups (bounded LRU); `add` returns the enrichment data for one mention.

    Bounded so enrichment runs in constant memory: a group costs ~3 kB (signature, 16 band keys, exact
    keys; measured with tracemalloc), so the 20,000 most recently seen groups hold ~60 MB. A copy of a post
    whose group fell out of them starts a new group: at a few thousand mentions a day that is one to two
    weeks back, while syndication and copy-paste happen within days.
    """

    def __init__(self, threshold: float = 0.7, max_groups: int = 20_000) -> None:
        self.threshold = threshold
        self.max_groups = max_groups
        self._groups: OrderedDict[str, _Group] = OrderedDict()
        self._exact: OrderedDict[str, str] = OrderedDict()
        self._bands: dict[tuple[int, bytes], str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._groups)

    def _band_keys(self, sig: np.ndarray) -> list[tuple[int, bytes]]:
        return [(b, sig[b * ROWS : (b + 1) * ROWS].tobytes()) for b in range(BANDS)]

    def _evict(self) -> None:
        while len(self._groups) > self.max_groups:
            gid, group = self._groups.popitem(last=False)
            for key in self._band_keys(group.signature):
                if self._bands.get(key) == gid:
                    del self._bands[key]
        while len(self._exact) > 2 * self.max_groups:
            self._exact.popitem(last=False)

    def add(self, mention_id: str, created_at: datetime, text: str, group_id: str | None = None) -> dict[str, Any]:
        norm = normalise_for_hash(text)
        if not has_at_least(norm, 3, str.isalnum):
            return {
                "group": None,
                "canonical": True,
                "canonical_id": mention_id,
                "match": "none",
                "similarity": None,
                "reason": "too little text",
            }
        key = exact_key(norm)
        sig = minhash(norm)
        with self._lock:
            match, sim = "none", 1.0
            gid = self._exact.get(key)
            if gid is not None and gid in self._groups:
                match = "exact"
            else:
                candidates = {self._bands[k] for k in self._band_keys(sig) if k in self._bands}
                scored = [(jaccard(sig, self._groups[g].signature), g) for g in candidates if g in self._groups]
                best_sim, best = max(scored) if scored else (0.0, None)
                if best is not None and best_sim >= self.threshold:
                    match, sim, gid = "near", best_sim, best
                else:
                    gid = group_id or f"dup-{mention_id}"
                    if gid not in self._groups:
                        self._groups[gid] = _Group(gid, mention_id, created_at, sig, 0)
                        for k in self._band_keys(sig):
                            self._bands.setdefault(k, gid)
            group = self._groups[gid]
            group.size += 1
            if created_at < group.canonical_at:
                group.canonical_id, group.canonical_at = mention_id, created_at
            self._groups.move_to_end(gid)
            self._exact[key] = gid
            self._exact.move_to_end(key)
            self._evict()
            return {
                "group": gid,
                "canonical": group.canonical_id == mention_id,
                "canonical_id": group.canonical_id,
                "match": match,
                "similarity": round(sim, 4) if match != "none" else None,
            }


class DuplicateStage:
    """Stage "duplicates": group id + canonical flag per mention (earliest member is canonical)."""

    name = STAGE
    independent = True  # text only: runs beside the encoder stages (listener.pipeline)

    def __init__(self, store: Store | None = None, threshold: float = 0.7, warm_days: int = 30) -> None:
        self.index = DuplicateIndex(threshold)
        self.store = store
        self.warm_days = warm_days
        self._warmed = store is None

    @property
    def version(self) -> str:
        return f"minhash{NUM_PERM}x{BANDS}+j{self.index.threshold}"

    def warm_start(self) -> None:
        """Index the store's recent mentions with their stored groups, so new posts join old groups."""
        self._warmed = True
        if self.store is None:
            return
        from listener.types import utcnow

        now = utcnow()
        recent = self.store.mentions_between(now - timedelta(days=self.warm_days), now + timedelta(days=1))
        stored = self.store.enrichments_for([m.id for m in recent], stage=STAGE)
        for m in recent:
            data = stored.get(m.id, {}).get(STAGE)
            if data and data.get("group"):
                self.index.add(m.id, m.created_at, mention_text(m), group_id=data["group"])

    def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
        if not self._warmed:
            self.warm_start()
        version = self.version
        results: dict[str, dict[str, Any]] = {}
        for m in sorted(mentions, key=lambda m: m.created_at):  # earliest first → it becomes canonical
            results[m.id] = self.index.add(m.id, m.created_at, mention_text(m))
        return [Enrichment(m.id, self.name, version, results[m.id]) for m in mentions]


def canonical_members(store: Store, ids: Sequence[str]) -> dict[str, list[str]]:
    """group id → member ids (earliest first by the stored canonical id) among `ids`: for digests and counts."""
    found = store.enrichments_for(list(ids), stage=STAGE)
    groups: dict[str, list[str]] = {}
    for mid in ids:
        data = found.get(mid, {}).get(STAGE) or {}
        groups.setdefault(str(data.get("group") or f"dup-{mid}"), []).append(mid)
    return groups
