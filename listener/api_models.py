"""The REST API's parameter types and response schemas (what /api/openapi.json publishes).

Apart from the routes in listener/api.py so the contract can be read, and changed, in one place.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, StringConstraints

from listener.types import SOURCE_KINDS


def _iso_only(value: Any) -> Any:
    """Dates are ISO 8601 (as the spec says): pydantic would also read "1700000000" as a Unix time."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("expected an ISO 8601 date-time such as 2026-11-01T08:00:00Z")
    return value


When = Annotated[datetime, BeforeValidator(_iso_only)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
"""A source or watch name as stored (1-200 characters)."""


class Sort(str, Enum):
    newest = "newest"
    relevance = "relevance"
    engagement = "engagement"


class Format(str, Enum):
    json = "json"
    ndjson = "ndjson"
    csv = "csv"


class Bucket(str, Enum):
    hour = "hour"
    day = "day"
    week = "week"


Kind = Enum("Kind", {k: k for k in SOURCE_KINDS}, type=str)  # type: ignore[misc]


class Sentiment(str, Enum):
    negative = "negative"
    neutral = "neutral"
    positive = "positive"


class GroupBy(str, Enum):
    none = "none"
    source = "source"
    kind = "kind"
    watch = "watch"
    topic = "topic"
    intent = "intent"
    stage = "stage"
    lang = "lang"
    sentiment = "sentiment"


class Problem(BaseModel):
    detail: str


class MentionOut(BaseModel):
    id: str
    source: str
    kind: str
    native_id: str
    url: str | None
    title: str | None
    text: str
    author: str | None
    created_at: datetime
    fetched_at: datetime
    thread_id: str | None
    parent_id: str | None
    score: float | None
    comments: int | None
    rating: float | None
    language: str | None
    matched: list[str]
    extra: dict[str, Any]
    enrichments: dict[str, dict[str, Any]] = Field(description="stage → result (newest model version)")


class MentionHit(MentionOut):
    sentiment: str | None
    snippet: str | None = Field(None, description="Text searches: the best passage, matches in [brackets]")
    similarity: float | None = Field(
        None, description="Semantic searches (`semantic=`): cosine similarity of the mention to that text"
    )


class MentionPage(BaseModel):
    items: list[MentionHit]
    next_after: str | None = Field(description="Pass as `after` for the next page; null on the last page")
    ranked_newest: int | None = Field(
        None,
        description="sort=relevance on a very common query: only this many newest matches were ranked "
        "(narrow `since` to rank older ones); null when every match was ranked",
    )


class ThreadItem(BaseModel):
    id: str
    author: str | None
    text: str
    created_at: datetime
    url: str | None


class MentionDetail(MentionOut):
    thread: list[ThreadItem]


class Stats(BaseModel):
    since: datetime
    until: datetime
    bucket: Bucket
    group_by: GroupBy
    total: int
    series: dict[str, dict[str, int]] = Field(description="group → bucket start (ISO) → count")


class SourceOut(BaseModel):
    name: str
    kind: str | None
    enabled: bool
    every: float | None = Field(description="seconds between runs")
    cron: str | None
    last_success_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    notes: list[str]
    total_mentions: int


class WatchOut(BaseModel):
    name: str
    terms: list[str]
    competitor: bool
