"""Core value types shared by connectors, storage, enrichment and surfaces.

A `Mention` is one thing a customer wrote somewhere (post, comment, review, feed entry).
A `Cursor` is where a source stopped last time, so the next fetch only asks for what is new.
Both are plain dataclasses: connectors build them without touching storage or HTTP.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

RAW_MAX_BYTES = 16_384
"""Raw payloads are kept for debugging and re-parsing, but capped so one huge post cannot bloat the store."""

SOURCE_KINDS = (
    "rss",
    "reddit",
    "hackernews",
    "discourse",
    "stackexchange",
    "lemmy",
    "mastodon",
    "appstore",
    "googleplay",
    "reviews",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted. Storage and comparisons need one zone."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def mention_id(source: str, native_id: str) -> str:
    """Stable id: the same item fetched twice from the same source gets the same id (idempotent upserts)."""
    digest = hashlib.sha256(f"{source}\x1f{native_id}".encode()).hexdigest()
    return digest[:24]


def cap_raw(raw: Any, limit: int = RAW_MAX_BYTES) -> str | None:
    """Serialise a raw payload to JSON text, truncated to `limit` bytes (marked, never silently)."""
    if raw is None:
        return None
    text = raw if isinstance(raw, str) else json.dumps(raw, default=str, ensure_ascii=False)
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore") + "…[truncated]"


@dataclass(frozen=True)
class Mention:
    """One customer utterance from one source, normalised."""

    source: str
    """Configured source name (unique per config), e.g. ``"hn-brand"``."""
    kind: str
    """Connector kind, one of SOURCE_KINDS."""
    native_id: str
    """The id the service itself uses (entry id, post id, review id)."""
    url: str | None
    title: str | None
    text: str
    author: str | None
    created_at: datetime
    fetched_at: datetime = field(default_factory=utcnow)
    thread_id: str | None = None
    parent_id: str | None = None
    score: float | None = None
    """Engagement: votes/points/likes where the source has them."""
    comments: int | None = None
    rating: float | None = None
    """Star rating (1-5) for reviews."""
    language: str | None = None
    matched: tuple[str, ...] = ()
    """Names of watch queries this mention matched."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Source-specific small facts (app version, accepted answer, tags, subreddit …)."""
    raw: str | None = None
    """Size-capped JSON of the original payload."""

    def __post_init__(self) -> None:
        if not self.source or not self.native_id:
            raise ValueError("Mention needs a source and a native_id")
        object.__setattr__(self, "created_at", as_utc(self.created_at))
        object.__setattr__(self, "fetched_at", as_utc(self.fetched_at))
        if self.raw is not None and len(self.raw) > RAW_MAX_BYTES:
            object.__setattr__(self, "raw", cap_raw(self.raw))

    @property
    def id(self) -> str:
        return mention_id(self.source, self.native_id)

    @property
    def body(self) -> str:
        """Title and text together: what matching and enrichment read."""
        if self.title and self.title.strip() and self.title.strip() not in self.text:
            return f"{self.title.strip()}\n{self.text}"
        return self.text

    def with_matches(self, names: tuple[str, ...]) -> Mention:
        return replace(self, matched=names)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["id"] = self.id
        data["created_at"] = self.created_at.isoformat()
        data["fetched_at"] = self.fetched_at.isoformat()
        data["matched"] = list(self.matched)
        data.pop("raw", None)
        return data


@dataclass(frozen=True)
class Cursor:
    """Per-source position. Connectors read it and return an advanced copy; storage persists it.

    `last_time`/`last_id` mark the newest item already stored; `etag`/`last_modified` make the next
    request conditional; `extra` holds connector-specific state (e.g. per-subreddit positions).
    """

    last_time: datetime | None = None
    last_id: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["last_time"] = self.last_time.isoformat() if self.last_time else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        data = json.loads(text)
        last_time = data.get("last_time")
        return cls(
            last_time=as_utc(datetime.fromisoformat(last_time)) if last_time else None,
            last_id=data.get("last_id"),
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
            extra=dict(data.get("extra") or {}),
        )

    def advanced(self, **changes: Any) -> Cursor:
        return replace(self, **changes)


@dataclass(frozen=True)
class Batch:
    """What a connector yields: mentions plus the cursor that is valid once *these* are stored.

    Storage commits the mentions and the cursor in one transaction, so a crash between batches
    never moves the cursor past unsaved items.
    """

    mentions: list[Mention]
    cursor: Cursor
    notes: tuple[str, ...] = ()
    """Health notes for this batch: "rate-limited", "backlog capped at 1000", "not modified" …"""
