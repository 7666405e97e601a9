"""Alert "new topic growing fast": an emerging cluster much bigger in the last window than in the one before.

Mentions of the last two windows that no taxonomy topic covers are clustered on their stored
embeddings (`enrich.emerging`); a cluster alerts when its last-window count reaches `min_size` and
`growth` × the previous window's (a theme absent before counts as 1). Identities come from the
emerging-topic state beside a SQLite database, and the incident check also accepts an earlier
emerging alert with overlapping mentions or a near-identical centroid (cosine ≥ 0.8), so a cluster
whose id changed between runs (PostgreSQL, where there is no state file) is still one incident.
Clustering costs more than bucket counting: the daemon runs this at most every `every` (default 1h).

Config: `[alerts.emerging]` enabled, window ("24h"), min_size (8), growth (3.0), cooldown (default:
the longer of `[alerts] cooldown` and the window), every ("1h"), link (may contain `{keywords}`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote as url_quote

import numpy as np

from listener.alerts import Alert, AlertHistory, AlertSettings, Signal, fire
from listener.config import Config, parse_duration
from listener.delivery import Target
from listener.digest import make_quote, safe_url
from listener.errors import ConfigError
from listener.types import Mention, as_utc, utcnow
from storage import Store

log = logging.getLogger(__name__)
MAX_MEMBERS = 500  # ids kept per alert for the overlap test
SAME_CENTROID = 0.8
SAME_OVERLAP = 0.3


@dataclass(frozen=True)
class EmergingAlertSettings:
    enabled: bool = True
    window: timedelta = timedelta(hours=24)
    min_size: int = 8
    growth: float = 3.0
    cooldown: timedelta = timedelta(hours=24)
    every: timedelta = timedelta(hours=1)
    link: str | None = None
    targets: tuple[Target, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> EmergingAlertSettings:
        base = AlertSettings.from_config(config)
        raw = (config.sections.get("alerts") or {}).get("emerging") or {}
        path = str(config.path) if config.path else None
        if not isinstance(raw, dict):
            raise ConfigError("must be a table ([alerts.emerging])", path=path, key="alerts.emerging")
        values: dict[str, Any] = {}
        for key in ("window", "cooldown", "every"):
            if key in raw:
                try:
                    values[key] = parse_duration(raw[key])
                except ValueError as exc:
                    raise ConfigError(str(exc), path=path, key=f"alerts.emerging.{key}") from None
        for key, kind, floor in (("min_size", int, 2), ("growth", float, 1.0)):
            if key in raw:
                if not isinstance(raw[key], int | float) or raw[key] < floor:
                    raise ConfigError(f"must be a number ≥ {floor:g}", path=path, key=f"alerts.emerging.{key}")
                values[key] = kind(raw[key])
        window = values.get("window", cls.window)
        values.setdefault("cooldown", max(base.cooldown, window))
        return cls(enabled=base.enabled and bool(raw.get("enabled", True)), link=raw.get("link", None),
                   targets=base.targets, **values)


@dataclass
class GrowingCluster:
    id: str
    keywords: list[str]
    current: list[Mention]  # members in the last window, most central first
    previous: int
    centroid: np.ndarray


def state_path(store: Store) -> Path | None:
    """The emerging-topic identity file `listener topics --emerging` uses (SQLite files only)."""
    from enrich.emerging import state_path_for

    database = store.engine.url.database if store.dialect == "sqlite" else None
    return state_path_for(database) if database and database != ":memory:" else None


def growing_clusters(store: Store, now: datetime, s: EmergingAlertSettings,
                     state: Path | None = None) -> list[GrowingCluster]:
    """Clusters of the last two windows whose last-window count is ≥ min_size and ≥ growth × the previous."""
    from enrich.emerging import build_clusters, load_state, match_identities, save_state
    from enrich.vectors import load_vectors

    start, cut = now - 2 * s.window, now - s.window
    mentions = store.mentions_between(start, now)
    if mentions:
        topics = store.enrichments_for([m.id for m in mentions], stage="topics")
        mentions = [m for m in mentions if not (topics.get(m.id, {}).get("topics") or {}).get("topics")]
    if len(mentions) < s.min_size:
        return []
    vecs = load_vectors(store, [m.id for m in mentions])
    clusters = build_clusters(mentions, vecs, min_size=s.min_size)
    if state is not None:
        save_state(state, clusters, match_identities(clusters, load_state(state), now), now)
    by_id = {m.id: m for m in mentions}
    out = []
    for c in clusters:
        members = [by_id[i] for i in c.members]
        current = [m for m in members if m.created_at >= cut]
        previous = len(members) - len(current)
        if len(current) < s.min_size or len(current) < s.growth * max(previous, 1):
            continue
        central = [by_id[q["id"]] for q in c.quotes if q["id"] in by_id and by_id[q["id"]].created_at >= cut]
        shown = {m.id for m in central}
        rest = sorted((m for m in current if m.id not in shown), key=lambda m: (m.score or 0.0, m.created_at),
                      reverse=True)
        cid = c.id if state is not None else "em-" + hashlib.blake2b(min(c.members).encode(), digest_size=3).hexdigest()
        out.append(GrowingCluster(cid, c.keywords, central + rest, previous, c.centroid))
    return out


def _alert(c: GrowingCluster, now: datetime, s: EmergingAlertSettings) -> Alert:
    quotes = []
    seen: set[str] = set()
    for m in c.current:
        q = make_quote(m, None)
        key = " ".join(q.text.lower().split())[:120]
        if key not in seen:
            seen.add(key)
            quotes.append({"text": q.text, "url": safe_url(q.url), "author": q.author, "source": q.source,
                           "sentiment": None})
        if len(quotes) >= 3:
            break
    link = s.link.replace("{keywords}", url_quote(" ".join(c.keywords[:3]), safe="")) if s.link else None
    link = link or next((q["url"] for q in quotes if q["url"]), None)
    n = len(c.current)
    signal = Signal("cluster_growth", n, c.previous, n / max(c.previous, 1), n)
    from enrich.vectors import pack

    details = {"keywords": c.keywords, "size": n, "previous": c.previous,
               "window_hours": s.window.total_seconds() / 3600, "centroid": pack(c.centroid),
               "members": sorted(m.id for m in c.current)[:MAX_MEMBERS]}
    return Alert(c.id, now, now - s.window, now, [signal], quotes, link, kind="emerging", details=details)


def same_incident(new: Alert) -> Callable[[Alert], bool]:
    """Predicate: an earlier emerging alert about the same theme (shared mentions or the same centroid)."""
    from enrich.vectors import unpack

    mine = set(new.details.get("members", []))
    centre = unpack(new.details.get("centroid"))

    def same(earlier: Alert) -> bool:
        theirs = set(earlier.details.get("members", []))
        if mine and theirs and len(mine & theirs) >= SAME_OVERLAP * min(len(mine), len(theirs)):
            return True
        other = unpack(earlier.details.get("centroid"))
        if centre is None or other is None:
            return False
        return other.shape == centre.shape and float(other @ centre) >= SAME_CENTROID

    return same


def check_emerging_alerts(store: Store, config: Config, now: datetime | None = None, *,
                          history: AlertHistory | None = None, deliver: bool = True,
                          state: Path | Literal["auto"] | None = "auto") -> list[Alert]:
    """Cluster, find themes growing fast, record and deliver one alert per incident.

    `state="auto"` uses the identity file beside a SQLite database; pass a path, or None for none.
    Without embeddings (insight enrichment not run) or scikit-learn there is nothing to cluster: [].
    """
    s = EmergingAlertSettings.from_config(config)
    if not s.enabled:
        return []
    now = as_utc(now or utcnow())
    try:
        found = growing_clusters(store, now, s, state_path(store) if state == "auto" else state)
    except ImportError as exc:
        log.warning("emerging-topic alerts skipped: %s (pip install scikit-learn)", exc)
        return []
    history = history or AlertHistory.open(store, config)
    fired = []
    for c in found:
        alert = _alert(c, now, s)
        if fire(history, alert, s.cooldown, s.targets, deliver=deliver, same_incident=same_incident(alert)):
            fired.append(alert)
    return fired

