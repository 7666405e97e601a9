"""Enrichment labels as rows (`mention_label`): filters and stats by topic, intent, stage, lang, sentiment.

The enrichment table keeps each stage's full JSON result; a filter like "intent = complaint" over 1M
mentions cannot parse JSON per row, so every saved enrichment also writes its labels here, lowercased:
one row per (mention, label name, value). They always mirror the mention's newest result of each stage
(the same row `enrichments_for` returns), because the row just saved is the newest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from storage.models import mention, mention_label

LABEL_NAMES = ("topic", "intent", "stage", "lang", "sentiment")
"""Filterable/groupable label names (plus "canonical", which `canonical_only` uses)."""

STAGE_LABELS = {
    "sentiment": "sentiment",
    "intent": "intent",
    "journey": "stage",
    "language": "lang",
    "topics": "topic",
    "duplicates": "canonical",
}
"""Enrichment stage → the label name its results fill (migration 0002 backfills the same mapping)."""

MAX_VALUE = 200


def normalise(value: Any) -> str:
    """How labels are stored and looked up: trimmed, lowercase, at most 200 characters."""
    return str(value).strip().lower()[:MAX_VALUE]


def labels_of(stage: str, data: Mapping[str, Any]) -> list[str]:
    """The label values one stage result carries ([] for stages without labels or empty results)."""
    if stage == "topics":
        topics = data.get("topics")
        values = [t.get("name") for t in topics if isinstance(t, dict)] if isinstance(topics, list) else []
    elif stage == "duplicates":
        values = ["true" if data.get("canonical", True) else "false"]
    elif stage == "language":
        values = [data.get("lang")]
    elif stage in STAGE_LABELS:
        values = [data.get("label")]
    else:
        return []
    out = [normalise(v) for v in values if v is not None]
    return list(dict.fromkeys(v for v in out if v))


def replace(conn: Connection, newest: Iterable[tuple[int, str, Mapping[str, Any]]]) -> None:
    """Make the labels of each (seq, stage) those of `data`: old ones of that stage go, new ones come."""
    doomed: dict[str, list[int]] = {}
    rows: list[dict[str, Any]] = []
    for seq, stage, data in newest:
        name = STAGE_LABELS.get(stage)
        if name is None:
            continue
        doomed.setdefault(name, []).append(seq)
        rows += [{"seq": seq, "name": name, "value": v} for v in labels_of(stage, data)]
    for name, seqs in doomed.items():
        for start in range(0, len(seqs), 500):
            part = seqs[start : start + 500]
            conn.execute(sa.delete(mention_label).where(mention_label.c.name == name, mention_label.c.seq.in_(part)))
    if rows:  # DO NOTHING: a concurrent writer of the same labels (two workers, one mention) is not an error
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        conn.execute(insert(mention_label).on_conflict_do_nothing(), rows)


def has_label(name: str, value: str) -> ColumnElement[bool]:
    """EXISTS clause: the mention's newest result for this label equals `value` (case-insensitive)."""
    if name not in LABEL_NAMES:
        raise ValueError(f"unknown label filter {name!r} (use one of: {', '.join(LABEL_NAMES)})")
    found = sa.select(sa.literal(1)).where(
        mention_label.c.seq == mention.c.seq, mention_label.c.name == name, mention_label.c.value == normalise(value)
    )
    return sa.exists(found)


RARE_LABEL = 5000
"""A label on at most this many mentions drives the query (its rows first, then the mentions) instead of
being checked on each mention walked newest-first: walking 1M mentions to find 150 costs ~1 s."""


def rare(conn: Connection, wanted: Iterable[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """The (name, value) filters held by at most RARE_LABEL mentions (a bounded, index-only count each)."""
    found = set()
    for name, value in wanted:
        held = sa.select(sa.literal(1)).where(mention_label.c.name == name, mention_label.c.value == normalise(value))
        n = conn.execute(sa.select(sa.func.count()).select_from(held.limit(RARE_LABEL + 1).subquery())).scalar_one()
        if n <= RARE_LABEL:
            found.add((name, value))
    return frozenset(found)


def in_label(name: str, value: str) -> ColumnElement[bool]:
    """`seq IN (label rows)`: for a rare label, the planner looks up its few mentions by rowid."""
    if name not in LABEL_NAMES:
        raise ValueError(f"unknown label filter {name!r} (use one of: {', '.join(LABEL_NAMES)})")
    rows = sa.select(mention_label.c.seq).where(mention_label.c.name == name, mention_label.c.value == normalise(value))
    return mention.c.seq.in_(rows)


def is_canonical() -> ColumnElement[bool]:
    """Not marked as a non-canonical duplicate (mentions without a duplicates result count as canonical)."""
    marked = sa.select(sa.literal(1)).where(
        mention_label.c.seq == mention.c.seq, mention_label.c.name == "canonical", mention_label.c.value == "false"
    )
    return ~sa.exists(marked)
