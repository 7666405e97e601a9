"""The digest as an email a marketing lead forwards: headline numbers, a 14-day chart, what customers want.

`build_email_digest` starts from the lead's `build_digest` (same counts, same quotes) and adds what
only the HTML digest shows: a daily volume series by sentiment, per-channel sentiment, want-lists
(complaints/requests/questions with deduplicated quotes), share of voice, and source health that
also flags *lagging* sources, so a silent gap is never mistaken for silence.
`render_html` escapes every piece of user content (Jinja autoescape) and only links http(s) URLs.
The chart's series and PNG are in listener/digest_chart.py.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, PackageLoader, StrictUndefined

from listener.config import Config
from listener.cues import HEURISTIC_NOTE, intents
from listener.digest import (
    SENTIMENTS,
    Digest,
    Quote,
    SourceHealthLine,
    build_digest,
    in_languages,
    make_quote,
    safe_url,
)
from listener.digest_chart import CHART_DAYS, COLOURS, DayVolume, chart_png, daily_volumes
from listener.digest_topics import pts, rise, signed
from listener.types import Mention, utcnow
from storage import Store

CHART_CID = "volume-chart"
_QUOTES_PER_LIST = 3
_FEED_TITLES = ("New comment by ", "Comment by ", "Comment on ", "Re: ")


@dataclass
class Headline:
    label: str
    value: str
    change: str
    tone: str  # "good" | "bad" | "flat": colours the change, since "up" is bad for complaints
    note: str = ""


@dataclass
class KindLine:
    kind: str
    count: int
    previous: int
    sentiment: Counter[str]
    warning: bool = False  # a source of this kind is failing or lagging: low numbers may be a gap


@dataclass
class WantList:
    key: str  # complaints | requests | questions
    title: str
    count: int
    previous: int
    quotes: list[Quote]


@dataclass
class VoiceShare:
    name: str
    competitor: bool
    count: int
    share: float
    sentiment: Counter[str]


@dataclass
class EmailDigest:
    name: str
    base: Digest
    headlines: list[Headline]
    daily: list[DayVolume]
    kinds: list[KindLine]
    wants: list[WantList]
    voices: list[VoiceShare]
    timezone: str = "UTC"
    link: str | None = None

    @property
    def period_label(self) -> str:
        length = self.base.until - self.base.since
        days, rest = divmod(length, timedelta(days=1))
        return f"{days} days" if days > 1 and not rest else f"{length.total_seconds() / 3600:.0f}h"

    @property
    def subject(self) -> str:
        d = self.base
        net = f" · net sentiment {d.net_sentiment * 100:+.0f}" if d.net_sentiment is not None else ""
        warn = f" · ⚠ {len(d.health)} source problem(s)" if d.health else ""
        team = f" [{self.name}]" if self.name != "default" else ""
        return f"Customer voice{team}: {d.total} mentions ({_pct(d.total, d.previous_total)}){net}{warn}"


def _net(c: Counter[str]) -> float | None:
    rated = sum(c[s] for s in SENTIMENTS)
    return (c["positive"] - c["negative"]) / rated if rated else None


def _neg_share(c: Counter[str]) -> float | None:
    rated = sum(c[s] for s in SENTIMENTS)
    return c["negative"] / rated if rated else None


def _points(now: float | None, before: float | None, *, up_is_good: bool) -> tuple[str, str]:
    if now is None or before is None:
        return ("no earlier data" if now is not None else "not enriched yet"), "flat"
    delta = round((now - before) * 100)
    if delta == 0:
        return "= ±0 pts", "flat"
    tone = "good" if (delta > 0) == up_is_good else "bad"
    return f"{'▲' if delta > 0 else '▼'} {abs(delta)} pts", tone


def _pct(now: int, before: int) -> str:
    if before == 0:
        return "new" if now else "±0"
    pct = round((now - before) / before * 100)
    return f"{'▲' if pct > 0 else '▼'} {abs(pct)}%" if pct else "= ±0%"


def _count_change(now: int, before: int, *, up_is_good: bool | None) -> tuple[str, str]:
    text = _pct(now, before)
    if up_is_good is None or now == before:
        return text, "flat"
    return text, "good" if (now > before) == up_is_good else "bad"


def dedup_quotes(mentions: Sequence[Mention], labels: dict[str, str | None], limit: int,
                  seen_text: set[str] | None = None) -> list[Quote]:
    """Engagement then recency; syndicated copies and a second post by the same author are one voice.

    Pass one `seen_text` set across lists so a quote shown as a complaint is not repeated as a question.
    """
    seen_text = set() if seen_text is None else seen_text
    seen_author: set[str] = set()
    out: list[Quote] = []
    for m in sorted(mentions, key=lambda m: (m.score or 0.0, m.created_at), reverse=True):
        key = " ".join(m.text.lower().split())[:120]
        author = (m.author or "").strip().lower()
        if key in seen_text or (author and author in seen_author):
            continue
        seen_text.add(key)
        if author:
            seen_author.add(author)
        if m.title and m.title.startswith(_FEED_TITLES):  # "New comment by x in …" says nothing the text doesn't
            m = replace(m, title=None)
        out.append(make_quote(m, labels.get(m.id)))
        if len(out) >= limit:
            break
    return out


def source_health(store: Store, config: Config, until: datetime) -> list[SourceHealthLine]:
    """Failing, never-succeeded, lagging (no success for 3× its interval) and never-fetched sources."""
    configured = {s.name: s for s in config.sources if s.enabled}
    lines: list[SourceHealthLine] = []
    seen: set[str] = set()
    for st in store.source_states():
        seen.add(st.source)
        src = configured.get(st.source)
        if st.consecutive_failures:
            error = (st.last_error or "unknown error").splitlines()[0][:160]
            lines.append(SourceHealthLine(st.source, f"failing ({st.consecutive_failures}× in a row): {error}"))
        elif st.last_success_at is None and st.last_run_at is not None:
            lines.append(SourceHealthLine(st.source, "has never fetched successfully"))
        elif src is not None and st.last_success_at is not None:
            allowed = timedelta(hours=26) if src.cron else max(3 * src.every, timedelta(hours=2))
            gap = until - st.last_success_at
            if gap > allowed:
                hours = gap.total_seconds() / 3600
                lines.append(SourceHealthLine(st.source, f"lagging: no successful fetch for {hours:.0f}h "
                                                         f"(expected {src.cron or f'every {src.every}'})"))
    for name in configured:
        if name not in seen:
            lines.append(SourceHealthLine(name, "configured but never fetched: no data from it yet"))
    return lines


def build_email_digest(
    store: Store, config: Config, *, since: datetime | None = None, until: datetime | None = None,
    period: timedelta = timedelta(hours=24), watches: Sequence[str] = (), name: str = "default",
    link: str | None = None, topics: Sequence[str] = (), languages: Sequence[str] = (),
) -> EmailDigest:
    """The lead's digest plus series, channels, want-lists and share of voice; `watches` narrows to a team's
    watches, `topics` its "Topics and aspects" section to those taxonomy topics."""
    from listener.errors import ConfigError

    unknown = sorted(set(watches) - {w.name for w in config.watches})
    if unknown:
        raise ConfigError(f"digest {name!r} names unknown watch(es): {', '.join(unknown)}")
    if topics:
        from enrich.topics import taxonomy_from_config

        unknown = sorted(set(topics) - {t.name for t in taxonomy_from_config(config)})
        if unknown:
            raise ConfigError(f"digest {name!r} names unknown topic(s): {', '.join(unknown)}")
    scoped = replace(config, watches=tuple(w for w in config.watches if w.name in watches)) if watches else config
    base = build_digest(store, scoped, since=since, until=until, period=period, watches=watches, topics=topics,
                        languages=languages)
    length = base.until - base.since
    start = min(base.since - length, base.until - timedelta(days=CHART_DAYS))
    window = in_languages(store, store.mentions_between(start, base.until, watches=tuple(watches)), languages)
    labels: dict[str, str | None] = {}
    if window:
        found = store.enrichments_for([m.id for m in window], stage="sentiment")
        labels = {mid: (stages.get("sentiment") or {}).get("label") for mid, stages in found.items()}
    current = [m for m in window if m.created_at >= base.since]
    previous = [m for m in window if base.since - length <= m.created_at < base.since]
    cur_sent = Counter(lbl for m in current if (lbl := labels.get(m.id)))
    prev_sent = Counter(lbl for m in previous if (lbl := labels.get(m.id)))
    health = source_health(store, scoped, base.until)
    base = replace(base, health=health)
    if watches:  # the lead's totals count every mention; a team digest counts its own watches only
        base = replace(base, total=len(current), previous_total=len(previous), sentiment=cur_sent,
                       by_source=Counter(m.source for m in current), by_kind=Counter(m.kind for m in current))

    own = {w.name for w in scoped.watches if not w.competitor}
    mine = [m for m in current if not own or own & set(m.matched)]
    mine_prev = [m for m in previous if not own or own & set(m.matched)]
    wants = _want_lists(mine, mine_prev, labels)
    asks = sum(w.count for w in wants if w.key != "complaints")
    asks_prev = sum(w.previous for w in wants if w.key != "complaints")

    tz = _zone(config.timezone)
    daily = daily_volumes(window, labels, base.until, tz)
    first = base.since.astimezone(tz).date()
    for day in daily:
        day.in_period = day.day >= first
    troubled = {h.source for h in health}
    kind_of = {s.name: s.kind for s in config.sources}
    troubled_kinds = {kind_of.get(s) for s in troubled}
    kinds = [
        KindLine(kind, n, sum(1 for m in previous if m.kind == kind),
                 Counter(lbl for m in current if m.kind == kind and (lbl := labels.get(m.id))), kind in troubled_kinds)
        for kind, n in base.by_kind.most_common()
    ]
    kinds += [KindLine(k, 0, sum(1 for m in previous if m.kind == k), Counter(), True)
              for k in sorted(k for k in troubled_kinds if k and k not in base.by_kind)]
    total_watch = sum(w.count for w in base.watches) or 1
    voices = [VoiceShare(w.name, w.competitor, w.count, w.count / total_watch, w.sentiment) for w in base.watches]
    headlines = [
        Headline("Mentions", f"{base.total:,}", *_count_change(base.total, base.previous_total, up_is_good=None)),
        _rate_headline("Negative share", _neg_share(cur_sent), _neg_share(prev_sent), up_is_good=False),
        _rate_headline("Net sentiment", _net(cur_sent), _net(prev_sent), up_is_good=True, signed=True),
        Headline("Requests & questions", f"{asks:,}", *_count_change(asks, asks_prev, up_is_good=None)),
    ]
    return EmailDigest(name, base, headlines, daily, kinds, wants,
                       voices if any(v.competitor for v in voices) else [], config.timezone, safe_url(link))


def from_digest(d: Digest, name: str = "default", link: str | None = None) -> EmailDigest:
    """Wrap the lead's Digest when no store is at hand: its counts and quotes, no series or want-lists."""
    total_watch = sum(w.count for w in d.watches) or 1
    voices = [VoiceShare(w.name, w.competitor, w.count, w.count / total_watch, w.sentiment) for w in d.watches]
    headlines = [
        Headline("Mentions", f"{d.total:,}", *_count_change(d.total, d.previous_total, up_is_good=None)),
        _rate_headline("Negative share", _neg_share(d.sentiment), None, up_is_good=False),
        _rate_headline("Net sentiment", _net(d.sentiment), None, up_is_good=True, signed=True),
    ]
    kinds = [KindLine(kind, n, 0, Counter()) for kind, n in d.by_kind.most_common()]
    return EmailDigest(name, d, headlines, [], kinds, [], voices if any(v.competitor for v in voices) else [],
                       link=safe_url(link))


def _rate_headline(label: str, now: float | None, before: float | None, *, up_is_good: bool,
                   signed: bool = False) -> Headline:
    value = "–" if now is None else (f"{now * 100:+.0f}" if signed else f"{now:.0%}")
    change, tone = _points(now, before, up_is_good=up_is_good)
    return Headline(label, value, change, tone, "−100 … +100" if signed else "")


def _want_lists(current: list[Mention], previous: list[Mention], labels: dict[str, str | None]) -> list[WantList]:
    out = []
    shown: set[str] = set()
    for key, title, test in (
        ("complaints", "Top complaints", lambda m: labels.get(m.id) == "negative"),
        ("requests", "Feature requests & wishes", lambda m: "request" in intents(_own_words(m))),
        ("questions", "Questions", lambda m: "question" in intents(_own_words(m))),
    ):
        hits = [m for m in current if test(m)]
        out.append(WantList(key, title, len(hits), sum(1 for m in previous if test(m)),
                            dedup_quotes(hits, labels, _QUOTES_PER_LIST, shown)))
    return out


def _own_words(m: Mention) -> str:
    """What the author wrote: a feed's "New comment by x in 'Ask HN: …?'" title is the thread's question, not theirs."""
    return m.text if m.title and m.title.startswith(_FEED_TITLES) else m.body


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@lru_cache(maxsize=1)
def template_env() -> Environment:
    env = Environment(loader=PackageLoader("listener", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["safe_url"] = safe_url
    env.filters["pct"] = lambda x: f"{x:.0%}"
    env.filters["signed"] = signed
    env.filters["pts"] = pts
    env.filters["rise"] = lambda t: rise(t.count, t.previous)
    return env


def _sentiment_bar(c: Counter[str]) -> list[tuple[str, float, str]]:
    rated = sum(c[s] for s in SENTIMENTS)
    return [(s, c[s] / rated, COLOURS[s]) for s in ("negative", "neutral", "positive") if c[s]] if rated else []


def render_html(ed: EmailDigest, chart_src: str) -> str:
    """HTML for email (`chart_src="cid:…"`) or a standalone file (a `data:` URI): same template."""
    tz = _zone(ed.timezone)
    return template_env().get_template("digest.html").render(
        d=ed.base, ed=ed, chart_src=chart_src, colours=COLOURS, heuristic_note=HEURISTIC_NOTE,
        since=ed.base.since.astimezone(tz), until=ed.base.until.astimezone(tz), tzname=ed.timezone,
        sentiment_bar=_sentiment_bar, net=_net, generated=utcnow(),
    )


def render_standalone(ed: EmailDigest, png: bytes | None = None) -> str:
    """One self-contained file: the chart travels inside it as a data: URI."""
    png = png if png is not None else chart_png(ed)
    return render_html(ed, "data:image/png;base64," + base64.b64encode(png).decode("ascii") if png else "")
