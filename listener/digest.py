"""The digest: what customers said in a period, in a form a marketing lead reads in two minutes.

`build_digest` gathers the numbers and quotes from the store (no formatting); `render_markdown`
and `render_text` turn them into Markdown (pastes into Slack/GitHub) or plain text.
Fields that need enrichment (sentiment) degrade gracefully when a mention has none yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from listener.config import Config
from listener.types import Mention, utcnow
from storage import Store

if TYPE_CHECKING:
    from listener.digest_topics import TopicsSection

SENTIMENTS = ("positive", "neutral", "negative")


@dataclass
class Quote:
    text: str
    url: str | None
    author: str | None
    source: str
    created_at: datetime
    sentiment: str | None = None


@dataclass
class WatchSummary:
    name: str
    competitor: bool
    count: int
    previous: int
    sentiment: Counter[str] = field(default_factory=Counter)
    quotes: list[Quote] = field(default_factory=list)


@dataclass
class SourceHealthLine:
    source: str
    problem: str


@dataclass
class Digest:
    since: datetime
    until: datetime
    total: int
    previous_total: int
    by_source: Counter[str]
    by_kind: Counter[str]
    sentiment: Counter[str]
    watches: list[WatchSummary]
    health: list[SourceHealthLine]
    topics: TopicsSection | None = None  # "Topics and aspects" (listener.digest_topics)
    languages: tuple[str, ...] = ()  # when set, only mentions in these languages (or undetected) were counted

    @property
    def net_sentiment(self) -> float | None:
        rated = sum(self.sentiment[s] for s in SENTIMENTS)
        if not rated:
            return None
        return (self.sentiment["positive"] - self.sentiment["negative"]) / rated


def safe_url(url: object) -> str | None:
    """The URL if it is an absolute http(s) link, else None: a `javascript:`/`data:` URL never becomes an href."""
    if not isinstance(url, str):
        return None
    text = url.strip()
    if any(ord(ch) < 32 or ch in " <>\"'`" for ch in text):
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    return text if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def make_quote(m: Mention, sentiment: str | None, limit: int = 280) -> Quote:
    text = " ".join((m.title + " — " if m.title and m.title not in m.text else "").split() + m.text.split())
    if len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0] + "…"
    return Quote(text=text, url=m.url, author=m.author, source=m.source, created_at=m.created_at, sentiment=sentiment)


def _rank(m: Mention, sentiment: str | None) -> tuple[int, float, datetime]:
    # Negative voices first (what to fix), then engagement, then recency.
    return (1 if sentiment == "negative" else 0, m.score or 0.0, m.created_at)


def in_languages(store: Store, mentions: list[Mention], languages: Sequence[str]) -> list[Mention]:
    """`mentions` whose detected language is one of `languages` (ISO 639-1), plus those the language stage
    could not decide or has not seen yet: a filter drops what is known to be elsewhere, never the unknown."""
    wanted = {code.strip().lower() for code in languages if code.strip()}
    if not wanted or not mentions:
        return mentions
    found = store.enrichments_for([m.id for m in mentions], stage="language")
    keep = []
    for m in mentions:
        lang = ((found.get(m.id, {}).get("language") or {}).get("lang") or "und").lower()
        if lang in wanted or lang == "und":
            keep.append(m)
    return keep


def build_digest(
    store: Store,
    config: Config,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    period: timedelta = timedelta(hours=24),
    quotes_per_watch: int = 3,
    watches: Sequence[str] = (),
    topics: Sequence[str] = (),
    languages: Sequence[str] = (),
) -> Digest:
    """`watches`/`topics` scope the topics section to a team's watches and taxonomy topics; `languages`
    keeps mentions in those languages (`in_languages`)."""
    from listener.digest_topics import build_topics_section

    until = until or utcnow()
    since = since or until - period
    length = until - since
    mentions = in_languages(store, store.mentions_between(since, until), languages)
    previous = in_languages(store, store.mentions_between(since - length, since), languages)
    labels: dict[str, str | None] = {}
    if mentions:
        enrichments = store.enrichments_for([m.id for m in mentions], stage="sentiment")
        labels = {mid: (stages.get("sentiment") or {}).get("label") for mid, stages in enrichments.items()}
    prev_by_watch = Counter(w for m in previous for w in m.matched)
    summaries: list[WatchSummary] = []
    for watch in config.watches:
        hits = [m for m in mentions if watch.name in m.matched]
        summary = WatchSummary(watch.name, watch.competitor, len(hits), prev_by_watch[watch.name])
        summary.sentiment.update(label for m in hits if (label := labels.get(m.id)))
        seen_texts: set[str] = set()
        for m in sorted(hits, key=lambda m: _rank(m, labels.get(m.id)), reverse=True):
            key = " ".join(m.text.lower().split())[:120]
            if key in seen_texts:  # syndicated copies are one voice, not several
                continue
            seen_texts.add(key)
            summary.quotes.append(make_quote(m, labels.get(m.id)))
            if len(summary.quotes) >= quotes_per_watch:
                break
        summaries.append(summary)
    health = []
    for state in store.source_states():
        if state.consecutive_failures:
            health.append(
                SourceHealthLine(state.source, f"failing ({state.consecutive_failures}×): {state.last_error}")
            )
        elif state.last_success_at is None and state.last_run_at is not None:
            health.append(SourceHealthLine(state.source, "never succeeded"))
    sentiment: Counter[str] = Counter(label for label in labels.values() if label)
    return Digest(
        since=since,
        until=until,
        total=len(mentions),
        previous_total=len(previous),
        by_source=Counter(m.source for m in mentions),
        by_kind=Counter(m.kind for m in mentions),
        sentiment=sentiment,
        watches=summaries,
        health=health,
        topics=build_topics_section(store, mentions, previous, since, until, watches=watches, topics=topics),
        languages=tuple(sorted({code.strip().lower() for code in languages if code.strip()})),
    )


def change_label(now: int, before: int) -> str:
    if before == 0:
        return "new" if now else "±0"
    pct = (now - before) / before * 100
    arrow = "▲" if pct > 0 else ("▼" if pct < 0 else "=")
    return f"{arrow} {pct:+.0f}%"


def _md_escape(text: str) -> str:
    for ch in ("\\", "`", "*", "_", "[", "]", "<", ">", "|"):
        text = text.replace(ch, "\\" + ch)
    return text


def _sentiment_line(c: Counter[str]) -> str:
    rated = sum(c[s] for s in SENTIMENTS)
    if not rated:
        return "sentiment: not enriched yet"
    return " · ".join(f"{s} {c[s] / rated:.0%}" for s in SENTIMENTS)


def render_markdown(d: Digest) -> str:
    from listener.digest_topics import render_markdown as topics_markdown

    fmt = "%Y-%m-%d %H:%M"
    lines = [
        f"# Customer voice digest — {d.since:{fmt}} → {d.until:{fmt}} UTC",
        "",
        f"**{d.total} mentions** ({change_label(d.total, d.previous_total)} vs previous period)"
        + (f" · net sentiment **{d.net_sentiment:+.2f}**" if d.net_sentiment is not None else ""),
        f"_{_sentiment_line(d.sentiment)}_",
        "",
    ]
    if d.languages:
        lines += [f"_Mentions in {', '.join(d.languages)} (and of undetected language) only._", ""]
    if d.health:
        lines += (
            ["## ⚠ Source health", ""]
            + [f"- **{_md_escape(h.source)}**: {_md_escape(h.problem)}" for h in d.health]
            + [""]
        )
    lines += ["## By source", "", "| source | mentions |", "|---|---:|"]
    lines += [f"| {_md_escape(s)} | {n} |" for s, n in d.by_source.most_common()] or ["| – | 0 |"]
    lines.append("")
    for w in d.watches:
        tag = " (competitor)" if w.competitor else ""
        lines += [
            f"## {_md_escape(w.name)}{tag} — {w.count} mentions ({change_label(w.count, w.previous)})",
            f"_{_sentiment_line(w.sentiment)}_",
            "",
        ]
        for q in w.quotes:
            who = _md_escape(q.author) if q.author else "someone"
            mood = f" [{q.sentiment}]" if q.sentiment else ""
            link = f" — [{_md_escape(q.source)}]({q.url})" if safe_url(q.url) else f" — {_md_escape(q.source)}"
            lines.append(f"> {_md_escape(q.text)}\n> — {who}, {q.created_at:%b %d}{mood}{link}\n")
        if not w.quotes:
            lines += ["_No mentions in this period._", ""]
    lines += topics_markdown(d.topics, bool(d.total))
    return "\n".join(lines).rstrip() + "\n"


def render_text(d: Digest) -> str:
    from listener.digest_topics import render_text as topics_text

    fmt = "%Y-%m-%d %H:%M"
    out = [
        f"Customer voice digest {d.since:{fmt}} -> {d.until:{fmt}} UTC",
        f"{d.total} mentions ({change_label(d.total, d.previous_total)} vs previous period); "
        f"{_sentiment_line(d.sentiment)}",
    ]
    if d.languages:
        out.append(f"Languages: {', '.join(d.languages)} (and undetected) only")
    for h in d.health:
        out.append(f"! {h.source}: {h.problem}")
    out.append("By source: " + (", ".join(f"{s} {n}" for s, n in d.by_source.most_common()) or "none"))
    for w in d.watches:
        out += [
            "",
            f"{w.name}{' (competitor)' if w.competitor else ''}: {w.count} mentions "
            f"({change_label(w.count, w.previous)}); {_sentiment_line(w.sentiment)}",
        ]
        for q in w.quotes:
            out.append(f'  "{q.text}" — {q.author or "someone"} ({q.source}) {q.url or ""}'.rstrip())
    out += topics_text(d.topics, bool(d.total))
    return "\n".join(out) + "\n"
