"""What the Store hands back (plain dataclasses, no ORM objects) and the Mention ↔ row mapping."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from listener.types import Cursor, Mention
from storage.models import one_shot_encoder

_HASH_ENCODE = one_shot_encoder(
    json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)
)
"""Sorted keys: a source returning the same `extra` in another key order is not an edit. The text must never
change (stored hashes would all turn into edits), hence the stdlib encoder and these exact options."""

# Fields copied 1:1 between Mention and the mention table.
MENTION_FIELDS = (
    "source",
    "kind",
    "native_id",
    "url",
    "title",
    "text",
    "author",
    "created_at",
    "fetched_at",
    "thread_id",
    "parent_id",
    "score",
    "comments",
    "rating",
    "language",
    "raw",
)
# What a source can change after the fact; fetched_at/raw/matched are ours, so they do not make an edit.
HASHED_FIELDS = (
    "kind",
    "url",
    "title",
    "text",
    "author",
    "created_at",
    "thread_id",
    "parent_id",
    "score",
    "comments",
    "rating",
    "language",
)
# Columns rewritten when a mention's content changed.
UPDATED_COLUMNS = (*(f for f in MENTION_FIELDS if f not in ("source", "native_id")), "extra", "deleted", "content_hash")


@dataclass(frozen=True)
class SaveResult:
    new: int = 0
    duplicates: int = 0
    updated: int = 0
    new_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunInfo:
    id: int
    source: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    new: int
    duplicates: int
    updated: int
    error: str | None
    notes: tuple[str, ...]

    @property
    def duration_s(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


@dataclass(frozen=True)
class SourceState:
    source: str
    cursor: Cursor
    last_run_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    notes: tuple[str, ...] = ()
    total_mentions: int = 0
    last_run: RunInfo | None = None


@dataclass(frozen=True)
class StoredMention:
    """A search hit: the Mention plus where it lives (`seq`), for text searches a [marked] snippet, and for
    semantic searches its cosine similarity to the query text."""

    mention: Mention
    id: str
    seq: int
    snippet: str | None = None
    similarity: float | None = None


@dataclass(frozen=True)
class SearchPage:
    items: list[StoredMention]
    next_after: str | None
    """Opaque token for the next page; None when this page is the last."""
    ranked_newest: int | None = None
    """Set when relevance ranked only this many newest matches of more (SQLite, `relevance.RANKED_NEWEST`)."""


def is_deleted(m: Mention) -> bool:
    """Sources that report deletions say so with ``extra["deleted"] = True``."""
    return bool(m.extra.get("deleted"))


def content_hash(m: Mention) -> str:
    # HASHED_FIELDS in order (created_at as ISO text), then extra; spelled out: this runs once per saved mention.
    payload = [
        m.kind,
        m.url,
        m.title,
        m.text,
        m.author,
        m.created_at.isoformat(),
        m.thread_id,
        m.parent_id,
        m.score,
        m.comments,
        m.rating,
        m.language,
        m.extra,
    ]
    return hashlib.sha256(_HASH_ENCODE(payload).encode("utf-8")).hexdigest()[:32]


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; replace it on every backend so both store the same."""
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


def to_row(m: Mention, mid: str, now: datetime, digest: str) -> dict[str, Any]:
    # Spelled out rather than getattr over MENTION_FIELDS: this runs once per ingested mention.
    return {
        "id": mid,
        "source": m.source,
        "kind": m.kind,
        "native_id": m.native_id,
        "url": _text(m.url),
        "title": _text(m.title),
        "text": _text(m.text),
        "author": _text(m.author),
        "created_at": m.created_at,
        "fetched_at": m.fetched_at,
        "updated_at": now,
        "thread_id": m.thread_id,
        "parent_id": m.parent_id,
        "score": m.score,
        "comments": m.comments,
        "rating": m.rating,
        "language": m.language,
        "matched": list(m.matched),
        "extra": m.extra,
        "raw": _text(m.raw),
        "content_hash": digest,
        "deleted": bool(m.extra.get("deleted")),
    }


def to_mention(row: Mapping[Any, Any]) -> Mention:
    values = {name: row[name] for name in MENTION_FIELDS}
    return Mention(**values, matched=tuple(row["matched"] or ()), extra=dict(row["extra"] or {}))


def run_info(row: Mapping[Any, Any]) -> RunInfo:
    return RunInfo(
        id=row["id"],
        source=row["source"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        status=row["status"],
        new=row["new"],
        duplicates=row["duplicates"],
        updated=row["updated"],
        error=row["error"],
        notes=tuple(row["notes"] or ()),
    )


def merge_matched(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """Union in first-seen order: a re-fetch matched by another watch adds to, never replaces, the list."""
    return list(dict.fromkeys([*old, *new]))
