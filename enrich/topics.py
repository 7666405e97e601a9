"""Topic stage: assign taxonomy topics by sentence-embedding similarity, with evidence and aspect sentiment.

Why clauses: a review says "love the app, battery dies in an hour" — the whole-post vector is a
blend, the clause "battery dies in an hour" is not. Each topic's prototypes (description + seed
phrasings) are embedded once; a topic is assigned when the blend of its best clause's cosine and the
whole post's cosine reaches the topic's threshold, a keyword hit adding a small bonus. The evidence
clause is stored with the score, and its sentiment (via `enrich.sentiment`) is the aspect sentiment.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enrich.base import Enrichment
from enrich.embedding import ClauseData, Encoder, clause_spans, default_encoder, dot_rows, mention_text
from enrich.textprep import IGNORECASE_ASCII_TWINS, clean_unicode
from enrich.vectors import clause_vectors_for

if TYPE_CHECKING:
    from listener.config import Config
    from listener.types import Mention
    from storage import Store

DEFAULT_TOPICS = Path(__file__).resolve().parent / "default_topics.toml"
STAGE = "topics"
# Tuned on the dev split only (enrich/evaluate_insight.py --tune, macro-F1 0.515 on dev, for the per-token
# int8 encoder minilm-l6-v2-base-onnx-pt8-2, kept for the static st8-1); see docs/insight_evaluation.md.
DEFAULT_THRESHOLD = 0.5
KEYWORD_BONUS = 0.16
POST_WEIGHT = 0.0


@dataclass(frozen=True)
class Topic:
    name: str
    description: str
    seeds: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    threshold: float | None = None

    @cached_property
    def keyword_re(self) -> re.Pattern[str] | None:
        return keyword_pattern(self.keywords)

    @cached_property
    def keyword_literals(self) -> tuple[str, ...] | None:
        """The lowercased keywords when all are ASCII: `keyword_re` can only match where one occurs."""
        found = tuple(k for k in (kw.strip().lower() for kw in self.keywords) if k)
        return found if all(k.isascii() for k in found) else None


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str] | None:
    """Short keywords match whole words (app ≠ apply), longer ones as word prefixes (crash → crashes)."""
    parts = []
    for kw in keywords:
        kw = kw.strip().lower()
        if not kw:
            continue
        body = re.escape(kw)
        start = r"\b" if kw[0].isalnum() else ""
        end = r"s?\b" if len(kw) <= 4 and kw[-1].isalnum() else ""
        parts.append(f"{start}{body}{end}")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def keyword_hits(topics: Sequence[Topic], lowered: str) -> list[bool]:
    """Per topic: does its keyword pattern match the lowercased text? Same answer as `keyword_re.search`.

    The pattern needs one of the topic's ASCII keywords literally, so a topic none of whose keywords
    occurs as a substring is skipped without running the regex; texts holding a character that
    IGNORECASE maps onto an ASCII letter (or non-ASCII keywords) always take the regex.
    """
    exact = not any(ch in lowered for ch in IGNORECASE_ASCII_TWINS)
    out = []
    for topic in topics:
        rx, literals = topic.keyword_re, topic.keyword_literals
        if rx is None:
            out.append(False)
        elif exact and literals is not None:
            out.append(any(k in lowered for k in literals) and rx.search(lowered) is not None)
        else:
            out.append(rx.search(lowered) is not None)
    return out


def _topic_from(raw: Any, where: str) -> Topic:
    from listener.errors import ConfigError

    if not isinstance(raw, Mapping):
        raise ConfigError("each [[topics]] entry must be a table", key=where)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("needs a name", key=f"{where}.name")
    desc = raw.get("description", "")
    seeds = raw.get("seeds", [])
    keywords = raw.get("keywords", [])
    if not isinstance(desc, str):
        raise ConfigError("description must be a string", key=f"topics.{name}.description")
    for key, value in (("seeds", seeds), ("keywords", keywords)):
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ConfigError(f"{key} must be a list of strings", key=f"topics.{name}.{key}")
    if not desc.strip() and not seeds:
        raise ConfigError("needs a description or seeds to recognise it", key=f"topics.{name}")
    threshold = raw.get("threshold")
    if threshold is not None and (not isinstance(threshold, int | float) or not 0 < float(threshold) < 1):
        raise ConfigError("threshold must be a number between 0 and 1", key=f"topics.{name}.threshold")
    return Topic(
        name=name.strip(),
        description=desc.strip(),
        seeds=tuple(s.strip() for s in seeds if s.strip()),
        keywords=tuple(keywords),
        threshold=None if threshold is None else float(threshold),
    )


def parse_taxonomy(tables: Sequence[Any]) -> list[Topic]:
    """[[topics]] tables → topics; a bad entry is a ConfigError naming the key."""
    from listener.errors import ConfigError

    topics = [_topic_from(raw, f"topics[{i}]") for i, raw in enumerate(tables)]
    names = [t.name for t in topics]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"duplicate topic names: {', '.join(dupes)}", key="topics")
    return topics


def default_taxonomy_toml(header: str) -> str:
    """The default taxonomy's [[topics]] tables as config text, after `header` (comment lines)."""
    body = DEFAULT_TOPICS.read_text("utf-8")
    found = re.search(r"^\[\[topics\]\]", body, re.MULTILINE)  # the first table, not the file's header comment
    if found is None:
        raise RuntimeError(f"{DEFAULT_TOPICS} has no [[topics]] table")
    return header + body[found.start() :].rstrip() + "\n"


def default_taxonomy() -> list[Topic]:
    return parse_taxonomy(tomllib.loads(DEFAULT_TOPICS.read_text("utf-8"))["topics"])


def taxonomy_from_config(config: Config | None) -> list[Topic]:
    tables = (config.sections.get("topics") if config is not None else None) or []
    return parse_taxonomy(tables) if tables else default_taxonomy()


def taxonomy_hash(topics: Sequence[Topic]) -> str:
    blob = json.dumps([[t.name, t.description, t.seeds, t.keywords, t.threshold] for t in topics], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def split_sentences(text: str) -> list[str]:
    """The clauses the topic stage scores (see `enrich.embedding.clause_spans`), each ≤ 400 characters."""
    cleaned = clean_unicode(text)[:20_000]
    return [cleaned[a:b][:400] for a, b in clause_spans(cleaned)]


@dataclass
class TopicHit:
    name: str
    score: float
    evidence: str
    keyword: bool = False
    sentiment: dict[str, Any] | None = None
    sentiment_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": round(self.score, 4),
            "evidence": self.evidence,
            "keyword": self.keyword,
            "sentiment": self.sentiment,
            "sentiment_reason": self.sentiment_reason,
        }


@dataclass
class TopicModel:
    """Prototype matrix for a taxonomy; `assign` maps texts (+ their post vectors) to topic hits."""

    topics: list[Topic]
    encoder: Encoder = field(default_factory=default_encoder)
    threshold: float = DEFAULT_THRESHOLD
    keyword_bonus: float = KEYWORD_BONUS
    post_weight: float = POST_WEIGHT

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._protos: np.ndarray | None = None
        self._owner: np.ndarray = np.zeros(0, dtype=np.int64)

    def prototypes(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows × 384 unit vectors, topic index of each row); embedded once per process."""
        with self._lock:
            if self._protos is None:
                texts, owner = [], []
                for i, t in enumerate(self.topics):
                    for p in (t.description, *t.seeds):
                        if p:
                            texts.append(p)
                            owner.append(i)
                self._protos = self.encoder.embed(texts)
                self._owner = np.asarray(owner, dtype=np.int64)
            return self._protos, self._owner

    def topic_sims(self, vecs: np.ndarray) -> np.ndarray:
        """(n × topics) best prototype cosine per topic."""
        protos, owner = self.prototypes()
        sims = dot_rows(vecs, protos)
        out = np.full((len(vecs), len(self.topics)), -1.0, dtype=np.float32)
        for t in range(len(self.topics)):
            cols = owner == t
            if cols.any():
                out[:, t] = sims[:, cols].max(axis=1)
        return out

    def score_matrix(
        self, texts: Sequence[str], post_vecs: np.ndarray, clauses: Sequence[ClauseData] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """(n × topics) scores, keyword flags, evidence clauses.

        Score = post_weight · cosine(whole post) + (1 − post_weight) · cosine(best clause); a
        single-clause post uses its post vector alone. Clause vectors come from the embedding
        stage's pass (token states pooled per clause); without them one pass computes both.
        """
        if clauses is None:
            post_vecs, clauses = self.encoder.embed_clauses(texts)
        multi = [i for i, (c, _) in enumerate(clauses) if len(c) > 1]
        flat = np.concatenate([clauses[i][1] for i in multi]) if multi else np.zeros((0, 384), np.float32)
        clause_sims = self.topic_sims(flat) if len(flat) else np.zeros((0, len(self.topics)), np.float32)
        scores = self.topic_sims(post_vecs)
        keywords = np.zeros_like(scores, dtype=bool)
        evidence: list[list[str]] = [
            [(c[0] if c else t[:400])] * len(self.topics) for t, (c, _) in zip(texts, clauses, strict=True)
        ]
        pos = 0
        for i in multi:
            names = clauses[i][0]
            rows = clause_sims[pos : pos + len(names)]
            pos += len(names)
            scores[i] = self.post_weight * scores[i] + (1 - self.post_weight) * rows.max(axis=0)
            evidence[i] = [names[int(k)] for k in rows.argmax(axis=0)]
        for i, text in enumerate(texts):
            keywords[i] = keyword_hits(self.topics, text[:20_000].lower())
            if not post_vecs[i].any():
                scores[i] = -1.0
        return scores, keywords, evidence

    def decide(self, scores: np.ndarray, keywords: np.ndarray) -> np.ndarray:
        """Boolean (n × topics) assignment: score + keyword bonus ≥ per-topic threshold."""
        bars = np.asarray([t.threshold or self.threshold for t in self.topics], dtype=np.float32)
        total: np.ndarray = (scores + self.keyword_bonus * keywords) >= bars
        return total

    def assign(
        self, texts: Sequence[str], post_vecs: np.ndarray, clauses: Sequence[ClauseData] | None = None
    ) -> list[list[TopicHit]]:
        scores, keywords, evidence = self.score_matrix(texts, post_vecs, clauses)
        chosen = self.decide(scores, keywords)
        out: list[list[TopicHit]] = []
        for i in range(len(texts)):
            hits = [
                TopicHit(
                    self.topics[t].name,
                    float(scores[i, t] + self.keyword_bonus * keywords[i, t]),
                    evidence[i][t],
                    bool(keywords[i, t]),
                )
                for t in np.flatnonzero(chosen[i])
            ]
            hits.sort(key=lambda h: -h.score)
            out.append(hits)
        return out


def _aspect_sentiment(hits: Sequence[TopicHit], classifier: Any) -> None:
    """Fill sentiment of each hit's evidence sentence; missing model → None with the reason, never a crash."""
    if not hits:
        return
    unique = list(dict.fromkeys(h.evidence for h in hits))  # topics sharing a clause share one model call
    try:
        found = dict(zip(unique, classifier.classify(unique, batch_size=16), strict=True))
    except FileNotFoundError:
        for h in hits:
            h.sentiment_reason = "sentiment model not installed"
        return
    except Exception as exc:  # a sentiment failure must not lose the topics
        for h in hits:
            h.sentiment_reason = f"sentiment failed: {exc.__class__.__name__}"
        return
    for h in hits:
        r = found[h.evidence]
        if r.label is None:
            h.sentiment_reason = r.reason
        else:
            h.sentiment = {"label": r.label, "score": r.score}


class TopicStage:
    """Stage "topics": zero or more taxonomy topics per mention with score, evidence and aspect sentiment."""

    name = STAGE

    def __init__(
        self,
        topics: Sequence[Topic] | None = None,
        *,
        store: Store | None = None,
        encoder: Encoder | None = None,
        sentiment: Any = None,
        aspect_sentiment: bool = True,
    ) -> None:
        self.model = TopicModel(list(topics) if topics else default_taxonomy(), encoder or default_encoder())
        self.store = store
        self.aspect_sentiment = aspect_sentiment
        self._sentiment = sentiment

    @property
    def version(self) -> str:
        m = self.model
        base = f"{m.encoder.version}+tax-{taxonomy_hash(m.topics)}+t{m.threshold}+k{m.keyword_bonus}+w{m.post_weight}"
        if not self.aspect_sentiment:
            return base
        from enrich.sentiment import MODEL_VERSION  # a new sentiment model re-runs aspect sentiment

        return f"{base}+{MODEL_VERSION}"

    def sentiment_classifier(self) -> Any:
        if self._sentiment is None:
            from enrich.sentiment import SentimentClassifier

            self._sentiment = SentimentClassifier()
        return self._sentiment

    def _reuse_post_sentiment(
        self, mentions: Sequence[Mention], hits: list[list[TopicHit]], clauses: Sequence[ClauseData]
    ) -> list[TopicHit]:
        """Single-clause posts: the evidence is the whole post, so the stored post sentiment (the
        sentiment stage runs first) is the aspect sentiment; returns the hits still to classify."""
        single = [i for i, hs in enumerate(hits) if hs and len(clauses[i][0]) <= 1]
        stored = (
            self.store.enrichments_for([mentions[i].id for i in single], stage="sentiment")
            if (self.store is not None and single)
            else {}
        )
        for i in single:
            post = stored.get(mentions[i].id, {}).get("sentiment") or {}
            if post.get("label"):
                for h in hits[i]:
                    h.sentiment = {"label": post["label"], "score": post.get("score")}
        return [h for hs in hits for h in hs if h.sentiment is None]

    def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
        texts = [mention_text(m) for m in mentions]
        vecs, clauses = clause_vectors_for(mentions, self.store, self.model.encoder)
        hits = self.model.assign(texts, vecs, clauses)
        if self.aspect_sentiment:
            todo = self._reuse_post_sentiment(mentions, hits, clauses)
            _aspect_sentiment(todo, self.sentiment_classifier())
        version = self.version
        return [
            Enrichment(m.id, self.name, version, {"topics": [h.as_dict() for h in hs]})
            for m, hs in zip(mentions, hits, strict=True)
        ]
