"""Language stage on the real multilingual feeds (heise German, UOL Portuguese, Guardian English)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest

from enrich.language import LanguageDetector, LanguageStage
from listener.types import Mention

FEEDS = "rss_realworld/rss_parser/input"


def entries(path: Path) -> list[Mention]:
    parsed = feedparser.parse(path.read_bytes())
    return [
        Mention(
            source="f",
            kind="rss",
            native_id=str(i),
            url=None,
            title=e.get("title"),
            text=e.get("summary", ""),
            author=None,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i, e in enumerate(parsed.entries)
    ]


@pytest.fixture(scope="module")
def stage() -> LanguageStage:
    return LanguageStage()


@pytest.mark.parametrize(("feed", "lang"), [("heise.atom", "de"), ("uolNoticias.rss", "pt"), ("guardian.rss", "en")])
def test_feed_languages(stage: LanguageStage, corpora: Path, feed: str, lang: str) -> None:
    ms = entries(corpora / FEEDS / feed)
    assert len(ms) >= 10
    out = stage.run(ms)
    counts = Counter(e.data["lang"] for e in out)
    assert counts[lang] >= 0.95 * len(ms), counts
    assert sum(e.data["reliable"] for e in out) >= 0.7 * len(ms)


def test_short_and_bad_input(stage: LanguageStage) -> None:
    det = LanguageDetector()
    assert det.detect("")["lang"] == "und"
    assert det.detect("🙂🙂🙂")["lang"] == "und"
    assert det.detect("🙂", hint="pt")["lang"] == "pt"
    assert det.detect("x" * 100_000)["lang"]  # does not hang or raise on 100 kB
    assert (
        det.detect("broken \ud83d surrogate \x00 Das ist ein ganz normaler deutscher Satz über Software.")["lang"]
        == "de"
    )
    assert det.detect(b"Isto \xe9 um texto em portugu\xeas".decode("latin-1"))["lang"] == "pt"
    ja = det.detect("たびたび話題になるサイドバーの閲覧中ユーザ数について調べた")
    assert ja["lang"] == "ja"
    m = Mention(
        source="f",
        kind="rss",
        native_id="x",
        url=None,
        title=None,
        text="ok",
        author=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        language="de-DE",
    )
    [e] = stage.run([m])
    assert e.data["lang"] == "de" and e.data["reliable"] is False
    assert stage.run([]) == []
