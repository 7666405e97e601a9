"""Builders shared by the enrichment tests: a Mention from a text, the App Store reviews corpus by title."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from listener.types import Mention

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def mention(
    n: int,
    text: str,
    title: str | None = None,
    *,
    kind: str = "reviews",
    source: str = "t",
    minutes: int | None = None,
    when: datetime = T0,
) -> Mention:
    """Mention number `n` (native id m{n}), created `n` (or `minutes`) minutes after `when`."""
    return Mention(
        source=source,
        kind=kind,
        native_id=f"m{n}",
        url=None,
        title=title,
        text=text,
        author=None,
        created_at=when + timedelta(minutes=n if minutes is None else minutes),
    )


def appstore_reviews(corpora: Path) -> dict[str, str]:
    """Real App Store reviews from the shared corpus: title → review text."""
    feed = json.loads((corpora / "appstore_reviews/customerreviews_id1321994487_us.json").read_text())["feed"]["entry"]
    return {e["title"]["label"]: e["content"]["label"] for e in feed}
