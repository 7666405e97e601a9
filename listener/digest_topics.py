"""The digest's "Topics and aspects": taxonomy topics this period vs the previous one, biggest movers, new themes.

Read back from the insight enrichments (no model runs here): the topic stage's hits give per-topic
counts and the aspect sentiment of each evidence clause; emerging themes are clusters of the
stored embeddings of mentions no topic covers (`enrich.emerging`). A mover needs `min_count`
mentions now, so 1 → 3 is never a headline. An emerging theme is *new* when its earliest mention
(looking back `lookback`, at least a week) falls in the period, *growing* when it has `growth` ×
the previous period's mentions. Without topic enrichments the section says so in one line; without
embeddings or scikit-learn the emerging part is left out with a note.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from listener.digest import SENTIMENTS, Quote, _md_escape, make_quote, safe_url
from listener.types import Mention
from storage import Store

log = logging.getLogger(__name__)
MIN_COUNT = 5  # a mover needs this many mentions this period
MIN_RISE = 1.25  # … and this many times the previous period's
MAX_TOPICS = 12
MAX_MOVERS = 3
MAX_EMERGING = 4
QUOTES_PER_MOVER = 2


@dataclass
class TopicLine:
    name: str
    count: int
    previous: int
    sentiment: Counter[str] = field(default_factory=Counter)  # aspect sentiment of the evidence clauses
    previous_sentiment: Counter[str] = field(default_factory=Counter)
    quotes: list[Quote] = field(default_factory=list)

    @property
    def net(self) -> float | None:
        return net_of(self.sentiment)

    @property
    def net_change(self) -> float | None:
        before = net_of(self.previous_sentiment)
        return None if self.net is None or before is None else self.net - before


@dataclass
class EmergingLine:
    id: str
    keywords: list[str]
    count: int  # mentions this period
    previous: int  # mentions in the previous period
    first_seen: datetime
    new: bool
    quote: Quote | None = None


@dataclass
class TopicsSection:
    enriched: bool  # any mention of the window has topic results
    topics: list[TopicLine] = field(default_factory=list)
    movers: list[TopicLine] = field(default_factory=list)
    emerging: list[EmergingLine] = field(default_factory=list)
    emerging_note: str | None = None  # why the emerging part is empty, when it could not run
    scope: tuple[str, ...] = ()  # the team's topics, when the digest names some


def net_of(c: Counter[str]) -> float | None:
    rated = sum(c[s] for s in SENTIMENTS)
    return (c["positive"] - c["negative"]) / rated if rated else None


def _hits(found: dict[str, dict[str, dict[str, Any]]], m: Mention) -> list[dict[str, Any]]:
    return [h for h in (found.get(m.id, {}).get("topics") or {}).get("topics", []) if isinstance(h, dict)]


def _scoped(mentions: Sequence[Mention], watches: Sequence[str]) -> list[Mention]:
    return [m for m in mentions if set(watches) & set(m.matched)] if watches else list(mentions)


def build_topics_section(store: Store, current: Sequence[Mention], previous: Sequence[Mention], since: datetime,
                         until: datetime, *, watches: Sequence[str] = (), topics: Sequence[str] = (),
                         min_count: int = MIN_COUNT, growth: float = 2.0, lookback: timedelta = timedelta(days=7),
                         emerging: bool = True) -> TopicsSection:
    """Topic counts, movers and emerging themes for `current` (the period) against `previous`.

    `watches` narrows every count to a team's watches, `topics` the topic lines and movers to its topics.
    """
    current, previous = _scoped(current, watches), _scoped(previous, watches)
    found = store.enrichments_for([m.id for m in [*current, *previous]], stage="topics") if current else {}
    section = TopicsSection(enriched=bool(found), scope=tuple(topics))
    if not found:
        return section
    wanted = set(topics)
    lines: dict[str, TopicLine] = {}
    evidence: dict[str, list[tuple[float, Mention, dict[str, Any]]]] = {}
    for m, now in [(m, True) for m in current] + [(m, False) for m in previous]:
        for hit in _hits(found, m):
            name = str(hit.get("name", ""))
            if not name or (wanted and name not in wanted):
                continue
            line = lines.setdefault(name, TopicLine(name, 0, 0))
            label = (hit.get("sentiment") or {}).get("label")
            if now:
                line.count += 1
                line.sentiment.update([label] if label else [])
                evidence.setdefault(name, []).append((float(hit.get("score") or 0.0), m, hit))
            else:
                line.previous += 1
                line.previous_sentiment.update([label] if label else [])
    ranked = sorted(lines.values(), key=lambda t: (-t.count, -t.previous, t.name))
    section.topics = ranked[:MAX_TOPICS]
    movers = [t for t in ranked if t.count >= min_count and t.count >= MIN_RISE * t.previous
              and t.count - t.previous >= 2]
    movers.sort(key=lambda t: (-(t.count - t.previous), -(t.count / max(t.previous, 1)), t.name))
    section.movers = movers[:MAX_MOVERS]
    for t in section.movers:  # the voices behind the move, in its prevailing tone (angry ones first if net < 0)
        tone = None if not t.net else ("negative" if t.net < 0 else "positive")
        t.quotes = _evidence_quotes(evidence.get(t.name, []), tone)
    if emerging:
        older: list[Mention] = []
        if lookback > until - since:  # "first seen" looks further back than one period
            older = _scoped(store.mentions_between(since - lookback, since - (until - since)), watches)
        extra = store.enrichments_for([m.id for m in older], stage="topics") if older else {}
        pool = [m for m in older if m.id in extra and not _hits(extra, m)]  # enriched, but no topic fits
        pool += [m for m in [*previous, *current] if m.id in found and not _hits(found, m)]
        _add_emerging(section, store, pool, {m.id for m in previous}, since, growth)
    return section


def _evidence_quotes(hits: list[tuple[float, Mention, dict[str, Any]]], tone: str | None) -> list[Quote]:
    """The evidence clauses (what was said about the topic): `tone` first, then strongest, most engaged;
    one per author and text."""
    out: list[Quote] = []
    seen: set[str] = set()

    def rank(h: tuple[float, Mention, dict[str, Any]]) -> tuple[bool, float, float, datetime]:
        label = (h[2].get("sentiment") or {}).get("label")
        return (label == tone, round(h[0], 2), h[1].score or 0.0, h[1].created_at)

    for _, m, hit in sorted(hits, key=rank, reverse=True):
        text = " ".join(str(hit.get("evidence") or m.text).split())
        keys = {text.lower()[:120], "@" + (m.author or "").strip().lower()} - {"@"}
        if keys & seen:
            continue
        seen |= keys
        q = make_quote(m, (hit.get("sentiment") or {}).get("label"))
        q.text = text if len(text) <= 280 else text[:279].rsplit(" ", 1)[0] + "…"
        out.append(q)
        if len(out) >= QUOTES_PER_MOVER:
            break
    return out


def _add_emerging(section: TopicsSection, store: Store, pool: list[Mention], previous_ids: set[str],
                  since: datetime, growth: float) -> None:
    """Cluster the uncovered mentions; keep themes first seen in the period or growing `growth`× on the last."""
    try:
        from enrich.emerging import MIN_SIZE, build_clusters
        from enrich.vectors import load_vectors

        vecs = load_vectors(store, [m.id for m in pool])
        if not vecs.any():
            section.emerging_note = "no embeddings yet (run `listener enrich`)"
            return
        clusters = build_clusters(pool, vecs, min_size=MIN_SIZE) if len(pool) >= MIN_SIZE else []
    except ImportError as exc:
        log.warning("digest: emerging topics skipped: %s", exc)
        section.emerging_note = "emerging topics need scikit-learn"
        return
    by_id = {m.id: m for m in pool}
    lines = []
    for c in clusters:
        members = [by_id[i] for i in c.members]
        now = [m for m in members if m.created_at >= since]
        before = sum(1 for m in members if m.id in previous_ids)
        first = min(m.created_at for m in members)
        new = first >= since
        if len(now) < MIN_SIZE or not (new or len(now) >= growth * max(before, 1)):
            continue
        in_period = {m.id for m in now}
        central = [by_id[q["id"]] for q in c.quotes if q["id"] in in_period]
        best = central[0] if central else max(now, key=lambda m: (m.score or 0.0, m.created_at))
        lines.append(EmergingLine(c.id, c.keywords, len(now), before, first, new, make_quote(best, None)))
    lines.sort(key=lambda e: (not e.new, -e.count))
    section.emerging = lines[:MAX_EMERGING]


# --- rendering -----------------------------------------------------------------------------------------------


def signed(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:+.0f}"


def pts(x: float | None) -> str:
    if x is None:
        return ""
    d = round(x * 100)
    return "= ±0 pts" if d == 0 else f"{'▲' if d > 0 else '▼'} {abs(d)} pts"


def rise(now: int, before: int) -> str:
    if before == 0:
        return "new" if now else "±0"
    pct = round((now - before) / before * 100)
    return f"{'▲' if pct > 0 else '▼'} {abs(pct)}%" if pct else "= ±0%"


def growth_label(e: EmergingLine) -> str:
    return "new this period" if e.new else f"growing: {e.previous} → {e.count}"


def render_markdown(s: TopicsSection | None, has_mentions: bool) -> list[str]:
    if s is None or not has_mentions:
        return []
    if not s.enriched:
        return ["## Topics and aspects", "", "_Topics not enriched yet (run `listener enrich`)._", ""]
    scope = f" ({', '.join(_md_escape(t) for t in s.scope)})" if s.scope else ""
    out = [f"## Topics and aspects{scope}", ""]
    if s.topics:
        out += ["| topic | mentions | change | aspect net sentiment | change |", "|---|---:|---:|---:|---:|"]
        out += [f"| {_md_escape(t.name)} | {t.count} | {rise(t.count, t.previous)} | {signed(t.net)} | "
                f"{pts(t.net_change) or '–'} |" for t in s.topics]
        out.append("")
    else:
        out += ["_No topic mentions in this period._", ""]
    if s.movers:
        out += ["### Biggest movers", ""]
        for t in s.movers:
            net = f", aspect net sentiment {signed(t.net)}" + (f" ({pts(t.net_change)})" if t.net_change is not None
                                                               else "")
            out.append(f"**{_md_escape(t.name)}**: {t.previous} → {t.count} ({rise(t.count, t.previous)}){net}")
            out += [_md_quote(q) for q in t.quotes] + [""]
    if s.emerging:
        out += ["### Emerging topics new this period", ""]
        for e in s.emerging:
            out.append(f"**{_md_escape(', '.join(e.keywords[:5]))}**: {e.count} mentions, {growth_label(e)}")
            out += ([_md_quote(e.quote)] if e.quote else []) + [""]
    elif s.emerging_note:
        out += [f"_Emerging topics: {_md_escape(s.emerging_note)}._", ""]
    return out


def _md_quote(q: Quote) -> str:
    who = _md_escape(q.author) if q.author else "someone"
    mood = f" [{q.sentiment}]" if q.sentiment else ""
    url = safe_url(q.url)
    link = f" — [{_md_escape(q.source)}]({url})" if url else f" — {_md_escape(q.source)}"
    return f"> {_md_escape(q.text)}\n> — {who}, {q.created_at:%b %d}{mood}{link}\n"


def render_text(s: TopicsSection | None, has_mentions: bool) -> list[str]:
    if s is None or not has_mentions:
        return []
    if not s.enriched:
        return ["", "Topics: not enriched yet (run `listener enrich`)"]
    out = ["", "Topics and aspects" + (f" ({', '.join(s.scope)})" if s.scope else "") + ":"]
    out += [f"- {t.name}: {t.count} ({rise(t.count, t.previous)}); aspect net sentiment {signed(t.net)}"
            + (f" ({pts(t.net_change)})" if t.net_change is not None else "") for t in s.topics]
    for t in s.movers:
        out.append(f"Mover: {t.name} {t.previous} -> {t.count} ({rise(t.count, t.previous)})")
        out += [f'    "{q.text}" — {q.author or "someone"} ({q.source}) {safe_url(q.url) or ""}'.rstrip()
                for q in t.quotes]
    for e in s.emerging:
        out.append(f"Emerging: {', '.join(e.keywords[:5])}: {e.count} mentions, {growth_label(e)}")
        if e.quote:
            out.append(f'    "{e.quote.text}" — {e.quote.author or "someone"} ({e.quote.source}) '
                       f'{safe_url(e.quote.url) or ""}'.rstrip())
    if not s.emerging and s.emerging_note:
        out.append(f"Emerging topics: {s.emerging_note}")
    return out


def as_data(s: TopicsSection | None) -> dict[str, Any] | None:
    """JSON for webhooks: numbers, quotes and keywords, no markup."""
    if s is None:
        return None

    def quote(q: Quote | None) -> dict[str, Any] | None:
        return None if q is None else {"text": q.text, "url": safe_url(q.url), "author": q.author,
                                       "source": q.source, "sentiment": q.sentiment}

    return {
        "enriched": s.enriched, "scope": list(s.scope),
        "topics": [{"name": t.name, "count": t.count, "previous": t.previous, "net_sentiment": t.net,
                    "net_sentiment_change": t.net_change} for t in s.topics],
        "movers": [{"name": t.name, "count": t.count, "previous": t.previous, "quotes": [quote(q) for q in t.quotes]}
                   for t in s.movers],
        "emerging": [{"keywords": e.keywords, "count": e.count, "previous": e.previous, "new": e.new,
                      "first_seen": e.first_seen.isoformat(), "quote": quote(e.quote)} for e in s.emerging],
    }
