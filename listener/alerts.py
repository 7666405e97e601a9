"""Spike alerts worth waking up for: a watch's volume or negative share far above its own recent normal.

Volume: a robust z-score on hourly counts — the median and MAD of the baseline (default 7 days)
ignore earlier spikes and absorb day/night swings. Counts are compared after the Anscombe transform
(2·sqrt(x + 3/8), Poisson noise ≈ 1), whose unit floor on the scale keeps flat or sparse series
(MAD 0) from alerting on a couple of extra posts. Negative share: the median hourly share is the
baseline and the scale is the sampling noise of *this* hour's rated count (arcsine transform), so a
hard swing in 4 mentions never outranks a real one in 40. `min_count` gates both.
Buckets are aligned to `now`, so the newest full hour is compared the moment a fetch lands.

One incident is one alert: a watch that alerted stays quiet for `cooldown`, whatever crossed.
History lives in the store's alert table (`AlertHistory`), so several daemons on one PostgreSQL
database share the cooldown; an older `<db>.alerts.jsonl` is imported once and renamed `.imported`.
"New topic growing fast" (emerging clusters) is in `listener.alerts_emerging`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import statistics
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote as url_quote

from listener.config import Config, parse_duration
from listener.delivery import Outgoing, Target, parse_targets, send_all, slack_escape
from listener.digest_html import dedup_quotes, safe_url, template_env
from listener.errors import ConfigError
from listener.types import Mention, as_utc, utcnow
from storage import AlertRecord, Store

log = logging.getLogger(__name__)

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution × this = its standard deviation
MIN_SHARE_BUCKETS = 12  # hourly shares needed before their median is trusted over the pooled share
MIN_POOLED_RATED = 20


@dataclass(frozen=True)
class AlertSettings:
    z: float = 4.0
    min_count: int = 5
    baseline: timedelta = timedelta(days=7)
    cooldown: timedelta = timedelta(hours=6)
    bucket: timedelta = timedelta(hours=1)
    min_rated: int = 10  # an hour's share counts towards the median baseline only with this many rated
    link: str | None = None  # e.g. "https://listener.example.com/search?watch={watch}"
    targets: tuple[Target, ...] = ()
    enabled: bool = True

    @classmethod
    def from_config(cls, config: Config) -> AlertSettings:
        raw = config.sections.get("alerts") or {}
        path = str(config.path) if config.path else None
        if not isinstance(raw, dict):
            raise ConfigError("must be a table ([alerts])", path=path, key="alerts")
        values: dict[str, Any] = {}
        for key in ("baseline", "cooldown", "bucket"):
            if key in raw:
                try:
                    values[key] = parse_duration(raw[key])
                except ValueError as exc:
                    raise ConfigError(str(exc), path=path, key=f"alerts.{key}") from None
        for key, kind in (("z", float), ("min_count", int), ("min_rated", int)):
            if key in raw:
                if not isinstance(raw[key], int | float) or raw[key] <= 0:
                    raise ConfigError("must be a positive number", path=path, key=f"alerts.{key}")
                values[key] = kind(raw[key])
        targets = parse_targets(raw.get("deliver"), "alerts.deliver", path)
        settings = cls(**values, link=raw.get("link"), targets=targets, enabled=bool(raw.get("enabled", True)))
        if settings.baseline < 12 * settings.bucket:
            raise ConfigError("baseline must span at least 12 buckets", path=path, key="alerts.baseline")
        return settings


@dataclass(frozen=True)
class Signal:
    """What crossed what: `value` against the baseline median, as a robust z-score."""

    metric: str  # "volume" (mentions per bucket) | "negative_share" (negative / rated in the bucket)
    value: float
    baseline: float
    z: float
    count: int

    def describe(self) -> str:
        if self.metric == "cluster_growth":
            return (f"{self.value:.0f} mentions in the last window vs {self.baseline:.0f} in the one before "
                    f"({self.z:.1f}×)")
        if self.metric == "volume":
            return f"volume {self.value:.0f}/h vs typical {self.baseline:.1f}/h at this hour (z {self.z:.1f})"
        return (f"negative share {self.value:.0%} vs baseline {self.baseline:.0%} "
                f"(z {self.z:.1f}, {self.count} negative)")


def robust_z(value: float, history: Sequence[float], floor: float) -> tuple[float, float]:
    """(median, z) with the scale max(1.4826·MAD, floor): MAD is 0 on flat series, the floor keeps z finite."""
    median = statistics.median(history)
    mad = statistics.median(abs(x - median) for x in history)
    return median, (value - median) / max(MAD_TO_SIGMA * mad, floor)


def _anscombe(count: float) -> float:
    return 2.0 * math.sqrt(count + 0.375)


def volume_signal(current: int, history: Sequence[int], s: AlertSettings) -> Signal | None:
    """`history` is oldest first, ending just before `current`. With ≥3 whole days of it the baseline is the median of
    the same hour on earlier days and the scale the MAD of every bucket's distance from its hour's median,
    so a busy afternoon is not a spike and a night-time burst is not hidden by the day's spread."""
    if current < s.min_count or not history:
        return None
    period = int(timedelta(days=1) / s.bucket) if timedelta(days=1) % s.bucket == timedelta(0) else 0
    history = list(history)[::-1]  # newest first: history[k-1] is k buckets ago
    values = [_anscombe(c) for c in history]
    if period > 1 and len(history) >= 3 * period:
        phases = [values[k - 1::period] for k in range(1, period + 1)]  # phase k-1: k, k+period, … buckets ago
        medians = [statistics.median(p) for p in phases]
        residuals = [v - medians[i % period] for i, v in enumerate(values)]
        level = medians[period - 1]  # buckets period, 2·period, … ago: the same hour as now
        mad = statistics.median(abs(r - statistics.median(residuals)) for r in residuals)
        z = (_anscombe(current) - level) / max(MAD_TO_SIGMA * mad, 1.0)
        typical = statistics.median(history[period - 1::period])
    else:
        _, z = robust_z(_anscombe(current), values, 1.0)
        typical = statistics.median(history)
    return Signal("volume", current, typical, z, current) if z >= s.z else None


def share_signal(negative: int, rated: int, history: Sequence[tuple[int, int]], s: AlertSettings) -> Signal | None:
    """Negative share now vs the median hourly share (the pooled share while rated history is sparse)."""
    if negative < s.min_count or rated == 0:
        return None
    shares = [n / r for n, r in history if r >= s.min_rated]
    if len(shares) >= MIN_SHARE_BUCKETS:
        p = statistics.median(shares)
    else:
        pooled = sum(r for _, r in history)
        if pooled < MIN_POOLED_RATED:
            return None  # too little rated history to know what normal is
        p = sum(n for n, _ in history) / pooled
    value = negative / rated
    # arcsin(sqrt(share)) has sampling sd 1/(2·sqrt(n)) whatever the share: one scale for every hour's size
    z = (math.asin(math.sqrt(value)) - math.asin(math.sqrt(p))) * 2.0 * math.sqrt(rated)
    return Signal("negative_share", value, p, z, negative) if z >= s.z else None


@dataclass
class Alert:
    watch: str  # what the alert is about: the watch, or the emerging cluster's id
    at: datetime
    window_start: datetime
    window_end: datetime
    signals: list[Signal]
    quotes: list[dict[str, Any]] = field(default_factory=list)
    link: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "spike"  # "spike" | "emerging"
    details: dict[str, Any] = field(default_factory=dict)  # emerging: keywords, cluster size, member ids

    @property
    def key(self) -> str:
        """The incident this alert is about: the cooldown is per key."""
        return f"{self.kind}:{self.watch}"

    @property
    def title(self) -> str:
        if self.kind == "emerging":
            return "New topic growing fast: " + ", ".join(self.details.get("keywords", [])[:4])
        return f"Spike on {self.watch}"

    @property
    def headline(self) -> str:
        return f"{self.title}: " + "; ".join(sig.describe() for sig in self.signals)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("at", "window_start", "window_end"):
            data[key] = getattr(self, key).isoformat()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Alert:
        data = dict(raw)
        for key in ("at", "window_start", "window_end"):
            data[key] = as_utc(datetime.fromisoformat(data[key]))
        data["signals"] = [Signal(**sig) for sig in data["signals"]]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Alert:
        return cls.from_dict(json.loads(text))

    def record(self) -> AlertRecord:
        return AlertRecord(self.id, self.kind, self.key, self.watch, self.at, json.loads(self.to_json()))


class AlertHistory:
    """Alert history in the store: "did this incident already alert?" and "what alerted lately?".

    On first use an older JSONL history beside the database is imported and renamed `.imported`,
    so upgrading loses no history and the cooldown of an alert fired just before still holds.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def open(cls, store: Store, config: Config) -> AlertHistory:
        history = cls(store)
        history.import_legacy(legacy_path(store, config))
        return history

    def import_legacy(self, path: Path) -> int:
        """Import a JSONL alert file once; unreadable lines are logged and skipped, the file kept as `.imported`."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return 0
        records = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(Alert.from_json(line).record())
            except (ValueError, TypeError, KeyError) as exc:  # one bad line must not block the rest
                log.warning("%s:%d: skipping unreadable alert record (%s)", path, n, exc)
        added = self.store.import_alerts(records)
        with contextlib.suppress(FileNotFoundError):  # a concurrent process imported it first (idempotent)
            path.replace(path.with_name(path.name + ".imported"))
        log.info("imported %d alert(s) from %s into the database (file kept as .imported)", added, path)
        return added

    def claim(self, alert: Alert, cooldown: timedelta,
              same_incident: Callable[[Alert], bool] | None = None) -> Alert | None:
        """Record `alert` unless its incident alerted within `cooldown`; returns that earlier alert, else None."""
        match = None if same_incident is None else (lambda r: _is_same(r, same_incident))
        earlier = self.store.claim_alert(alert.record(), cooldown, match)
        return _from_record(earlier) if earlier is not None else None

    def save(self, alert: Alert) -> None:
        """Store what changed after the claim (delivery results)."""
        self.store.update_alert(alert.id, alert.record().data)

    def since(self, when: datetime, kind: str | None = None) -> list[Alert]:
        out = []
        for r in self.store.alerts_since(when, kind=kind):
            try:
                out.append(_from_record(r))
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("skipping unreadable stored alert %s (%s)", r.id, exc)
        return out


def _from_record(record: AlertRecord) -> Alert:
    return Alert.from_dict(record.data)


def _is_same(record: AlertRecord, same_incident: Callable[[Alert], bool]) -> bool:
    try:
        earlier = _from_record(record)
    except (ValueError, TypeError, KeyError):  # an unreadable row is no reason to stay silent
        return False
    return same_incident(earlier)


def legacy_path(store: Store, config: Config) -> Path:
    """Where the pre-database JSONL history was written: beside a SQLite file, else beside the config."""
    database = store.engine.url.database if store.dialect == "sqlite" else None
    if database and database != ":memory:":
        return Path(f"{database}.alerts.jsonl")
    base = config.path.parent if config.path is not None else Path.cwd()
    return base / "listener.alerts.jsonl"


def fire(history: AlertHistory, alert: Alert, cooldown: timedelta, targets: Sequence[Target], *,
         deliver: bool = True, same_incident: Callable[[Alert], bool] | None = None) -> bool:
    """Claim the incident, then deliver: False (nothing sent) when it already alerted within `cooldown`.

    The claim commits before delivery, so a slow SMTP server never holds a lock and a crash mid-delivery
    leaves the alert listed as not delivered rather than announced twice.
    """
    earlier = history.claim(alert, cooldown, same_incident)
    if earlier is not None:
        log.info("alert on %s suppressed: same incident as %s (cooldown %s)", alert.watch, earlier.id, cooldown)
        return False
    if deliver and targets:
        results = send_all(alert_outgoing(alert), targets, default_format="json")
        alert.deliveries = [asdict(r) for r in results]
        for r in results:
            if not r.ok:
                log.error("alert %s to %s failed: %s", alert.id, r.target, r.detail)
        history.save(alert)
    return True


def _buckets(mentions: Sequence[Mention], labels: dict[str, str | None], now: datetime, s: AlertSettings,
             n: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Per bucket (0 = newest, ending at `now`): volume and (negative, rated)."""
    volume = [0] * n
    share = [[0, 0] for _ in range(n)]
    for m in mentions:
        k = int((now - m.created_at) / s.bucket)
        if 0 <= k < n:
            volume[k] += 1
            label = labels.get(m.id)
            if label:
                share[k][1] += 1
                share[k][0] += label == "negative"
    return volume, [(a, b) for a, b in share]


def detect(mentions: Sequence[Mention], labels: dict[str, str | None], now: datetime,
           s: AlertSettings) -> list[Signal]:
    """Signals for one watch's mentions over [now - baseline - bucket, now)."""
    n = int(s.baseline / s.bucket) + 1
    volume, share = _buckets(mentions, labels, now, s, n)
    signals = [volume_signal(volume[0], volume[:0:-1], s), share_signal(*share[0], share[:0:-1], s)]
    return [sig for sig in signals if sig is not None]


def check_alerts(store: Store, config: Config, now: datetime | None = None, *,
                 history: AlertHistory | None = None, deliver: bool = True) -> list[Alert]:
    """After each fetch: detect spikes per watch, skip watches still in cooldown, record and deliver new alerts."""
    s = AlertSettings.from_config(config)
    if not s.enabled or not config.watches:
        return []
    now = as_utc(now or utcnow())
    history = history or AlertHistory.open(store, config)
    window = store.mentions_between(now - s.baseline - s.bucket, now)
    labels: dict[str, str | None] = {}
    if window:
        found = store.enrichments_for([m.id for m in window], stage="sentiment")
        labels = {mid: (st.get("sentiment") or {}).get("label") for mid, st in found.items()}
    fired = []
    for watch in config.watches:
        hits = [m for m in window if watch.name in m.matched]
        signals = detect(hits, labels, now, s)
        if signals:
            alert = _alert(watch.name, hits, labels, signals, now, s)
            if fire(history, alert, s.cooldown, s.targets, deliver=deliver):
                fired.append(alert)
    return fired


def _alert(watch: str, hits: list[Mention], labels: dict[str, str | None], signals: list[Signal], now: datetime,
           s: AlertSettings) -> Alert:
    """The alert with the hour's top voices: the angry ones first when the negative share is what crossed."""
    current = [m for m in hits if m.created_at >= now - s.bucket]
    if any(sig.metric == "negative_share" for sig in signals):
        current = [m for m in current if labels.get(m.id) == "negative"] or current
    quotes = [{"text": q.text, "url": safe_url(q.url), "author": q.author, "source": q.source,
               "sentiment": q.sentiment} for q in dedup_quotes(current, labels, 3)]
    link = s.link.replace("{watch}", url_quote(watch, safe="")) if s.link else None
    link = link or next((q["url"] for q in quotes if q["url"]), None)
    return Alert(watch, now, now - s.bucket, now, signals, quotes, link)


def alert_outgoing(alert: Alert) -> Outgoing:
    """The alert as email (text + escaped HTML), Slack blocks and JSON."""
    text = [alert.headline, f"window {alert.window_start:%Y-%m-%d %H:%M} – {alert.window_end:%H:%M} UTC", ""]
    text += [f"\"{q['text']}\" — {q['author'] or 'someone'} ({q['source']}) {safe_url(q['url']) or ''}".rstrip()
             for q in alert.quotes]
    if alert.link:
        text += ["", f"More: {safe_url(alert.link) or alert.link}"]
    html = template_env().get_template("alert.html").render(alert=alert)
    quotes = "\n".join(f">{slack_escape(q['text'])}\n— {slack_escape(q['author'] or 'someone')} "
                       f"({slack_escape(q['source'])})" for q in alert.quotes)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f":rotating_light: {alert.title}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(f"• {slack_escape(sig.describe())}"
                                                                         for sig in alert.signals)}},
    ]
    if quotes:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": quotes[:2900]}})
    if safe_url(alert.link):
        button = {"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": alert.link}
        blocks.append({"type": "actions", "elements": [button]})
    data = {"type": "alert", **json.loads(alert.to_json())}
    data["details"] = {k: v for k, v in alert.details.items() if k not in ("members", "centroid")}  # dedup only
    data.pop("deliveries", None)
    return Outgoing(subject=alert.headline, text="\n".join(text) + "\n", html=html,
                    documents={"text": "\n".join(text) + "\n", "json": json.dumps(data, ensure_ascii=False, indent=2)},
                    slack={"text": slack_escape(alert.headline), "blocks": blocks}, data=data)
