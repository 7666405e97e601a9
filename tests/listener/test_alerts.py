"""Spike alerts: detector quality on synthetic series, silence on flat/noisy ones, one incident = one alert."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from enrich.base import Enrichment
from listener.alerts import AlertHistory, AlertSettings, check_alerts, share_signal, volume_signal
from listener.config import parse_config
from listener.errors import ConfigError
from listener.types import Mention
from storage import Store

WEEK = 168
S = AlertSettings()  # the documented defaults: z 4.0, min_count 5, baseline 7d, cooldown 6h


def _score(detected: set[int], truth: set[int]) -> tuple[float, float]:
    tp = len(detected & truth)
    precision = tp / len(detected) if detected else 0.0
    recall = tp / len(truth) if truth else 1.0
    return precision, recall


def _seasonal(hours: int, low: float, high: float) -> np.ndarray:
    t = np.arange(hours)
    return low + (high - low) * (0.5 + 0.5 * np.sin(2 * math.pi * (t % 24) / 24))


def test_volume_spikes_are_found_with_high_precision_and_recall() -> None:
    rng = np.random.default_rng(20261125)
    hours = 4 * WEEK
    counts = rng.poisson(_seasonal(hours, 1.0, 8.0))  # day/night swing, like real traffic
    truth = set(rng.choice(np.arange(WEEK + 12, hours), size=20, replace=False).tolist())
    for h in truth:  # a thread goes viral / an outage: 3-10x the typical hour for one hour
        counts[h] += rng.integers(20, 50)
    detected = {t for t in range(WEEK, hours)
                if volume_signal(int(counts[t]), [int(c) for c in counts[t - WEEK:t]], S) is not None}
    precision, recall = _score(detected, truth)
    print(f"\nvolume spikes: precision {precision:.2f} recall {recall:.2f} "
          f"({len(detected & truth)}/{len(truth)} found, {len(detected - truth)} false)")
    assert precision >= 0.8 and recall >= 0.8


def test_negative_share_spikes_are_found_with_high_precision_and_recall() -> None:
    rng = np.random.default_rng(7)
    hours = 4 * WEEK
    rated = rng.poisson(12, hours)
    negative = rng.binomial(rated, 0.15)
    truth = set(rng.choice(np.arange(WEEK + 12, hours), size=15, replace=False).tolist())
    for h in truth:  # a bad release: twice the usual volume, most of it angry
        rated[h] = rng.poisson(24)
        negative[h] = rng.binomial(rated[h], 0.8)
    detected = set()
    for t in range(WEEK, hours):
        history = list(zip(negative[t - WEEK:t].tolist(), rated[t - WEEK:t].tolist(), strict=True))
        if share_signal(int(negative[t]), int(rated[t]), history, S) is not None:
            detected.add(t)
    precision, recall = _score(detected, truth)
    print(f"\nnegative-share spikes: precision {precision:.2f} recall {recall:.2f} "
          f"({len(detected & truth)}/{len(truth)} found, {len(detected - truth)} false)")
    assert precision >= 0.8 and recall >= 0.8


@pytest.mark.parametrize("kind", ["flat", "noisy", "sparse", "high-volume"])
def test_no_alert_on_flat_or_merely_noisy_series(kind: str) -> None:
    rng = np.random.default_rng(3)
    hours = 4 * WEEK
    series = {
        "flat": np.full(hours, 6),
        "noisy": rng.poisson(_seasonal(hours, 1.0, 9.0)),
        "sparse": rng.poisson(0.3, hours),
        "high-volume": rng.poisson(_seasonal(hours, 40.0, 120.0)),
    }[kind]
    hits = [t for t in range(WEEK, hours) if volume_signal(int(series[t]), series[t - WEEK:t].tolist(), S)]
    assert hits == []
    rated = np.maximum(series, 1)
    negative = rng.binomial(rated, 0.2)
    share_hits = [t for t in range(WEEK, hours) if share_signal(
        int(negative[t]), int(rated[t]), list(zip(negative[t - WEEK:t].tolist(), rated[t - WEEK:t].tolist(),
                                                  strict=True)), S)]
    assert share_hits == []


def test_min_count_gates_tiny_spikes() -> None:
    # 4 posts in an hour on a watch that usually gets none is notable, but below min_count
    assert volume_signal(4, [0] * WEEK, S) is None
    assert volume_signal(9, [0] * WEEK, S) is not None


NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CONFIG: dict[str, Any] = {
    "watch": [{"name": "acme", "terms": "acme"}, {"name": "quiet", "terms": "quiet"}],
    "alerts": {"z": 4.0, "min_count": 5, "baseline": "7d", "cooldown": "6h", "link": "https://l.example/s?w={watch}"},
}


def _mention(i: int, when: datetime, text: str = "acme is fine", watch: str = "acme") -> Mention:
    return Mention(source="forum", kind="discourse", native_id=f"m{i}", url=f"https://forum.example/t/{i}", title=None,
                   text=text, author=f"user{i % 50}", created_at=when, matched=(watch,), score=float(i % 7))


def _seed(store: Store, now: datetime, spike: int, start: int = 0) -> None:
    """A week of 1-3 mentions/hour with 10% negative, then `spike` mentions (mostly angry) in the last hour."""
    rng = np.random.default_rng(start + 1)
    mentions, labels = [], {}
    i = start
    for h in range(1, WEEK + 1):
        for _ in range(int(rng.integers(1, 4))):
            i += 1
            m = _mention(i, now - timedelta(hours=h) - timedelta(minutes=int(rng.integers(0, 59))))
            mentions.append(m)
            labels[m.id] = "negative" if rng.random() < 0.1 else "positive"
    for k in range(spike):
        i += 1
        m = _mention(i, now - timedelta(minutes=55 - k), text=f"acme sync ate my notes again, outage #{k % 4}")
        mentions.append(m)
        labels[m.id] = "negative" if k % 5 else "neutral"
    store.save_batch("forum", mentions, None)
    store.save_enrichments([Enrichment(mid, "sentiment", "t1", {"label": lbl}) for mid, lbl in labels.items()])


def test_check_alerts_fires_once_per_incident_and_persists(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db")
    _seed(store, NOW, spike=30)
    config = parse_config({**CONFIG, "alerts": {**CONFIG["alerts"], "deliver": [
        {"kind": "file", "path": str(tmp_path / "out" / "alert-{date}.json"), "format": "json"}]}})
    fired = check_alerts(store, config, NOW)
    assert [a.watch for a in fired] == ["acme"]  # "quiet" has no mentions: no alert
    alert = fired[0]
    metrics = {s.metric: s for s in alert.signals}
    assert set(metrics) == {"volume", "negative_share"}  # both crossed, still one alert
    assert metrics["volume"].value == 30 and metrics["volume"].baseline <= 3 and metrics["volume"].z >= 4
    assert 1 <= len(alert.quotes) <= 3 and len({q["text"] for q in alert.quotes}) == len(alert.quotes)
    assert all(q["sentiment"] == "negative" for q in alert.quotes)  # negative-share alert shows the anger
    assert alert.link == "https://l.example/s?w=acme"
    assert alert.deliveries and alert.deliveries[0]["ok"]
    written = json.loads(next((tmp_path / "out").glob("alert-*.json")).read_text())
    assert written["type"] == "alert" and written["watch"] == "acme"

    # the same incident 30 minutes later (still spiking) stays quiet, also across a restart (stored)
    store.close()
    store = Store.open(tmp_path / "t.db")
    assert check_alerts(store, config, NOW + timedelta(minutes=30)) == []
    history = AlertHistory(store)
    assert [a.id for a in history.since(NOW - timedelta(days=1))] == [alert.id]
    assert history.since(NOW)[0].deliveries[0]["ok"]  # delivery results stored after the claim

    # after the cooldown a new spike is a new incident
    later = NOW + timedelta(hours=7)
    _seed(store, later, spike=35, start=10_000)
    again = check_alerts(store, config, later)
    assert [a.watch for a in again] == ["acme"] and again[0].id != alert.id
    assert [a.id for a in history.since(NOW - timedelta(days=1))] == [again[0].id, alert.id]
    store.close()


def test_no_alert_without_spike(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db")
    _seed(store, NOW, spike=0)
    assert check_alerts(store, parse_config(CONFIG), NOW) == []
    assert AlertHistory(store).since(NOW - timedelta(days=30)) == []
    store.close()


def test_alerts_verb_lists_recent_alerts(tmp_path: Path) -> None:
    from listener.cli import root
    from listener.cli_digest import register

    store = Store.open(tmp_path / "t.db")
    _seed(store, NOW, spike=25)
    store.close()
    cfg = tmp_path / "listener.toml"
    cfg.write_text('[storage]\ndatabase = "t.db"\n[[watch]]\nname = "acme"\nterms = "acme"\n', encoding="utf-8")
    with Store.open(tmp_path / "t.db") as s:
        check_alerts(s, parse_config({"watch": [{"name": "acme", "terms": "acme"}]}, str(cfg)), NOW)
    app = typer.Typer()
    app.callback()(root)
    register(app)
    result = CliRunner().invoke(app, ["-c", str(cfg), "alerts", "--since", "3650d"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "acme" in result.output and "volume 25/h" in result.output and "1 alert(s)" in result.output


def test_bad_alert_settings_fail_at_config_time() -> None:
    with pytest.raises(ConfigError, match=r"alerts\.z"):
        AlertSettings.from_config(parse_config({"alerts": {"z": -1}}))
    with pytest.raises(ConfigError, match=r"alerts\.cooldown"):
        AlertSettings.from_config(parse_config({"alerts": {"cooldown": "soon"}}))
    with pytest.raises(ConfigError, match=r"alerts\.deliver"):
        AlertSettings.from_config(parse_config({"alerts": {"deliver": [{"kind": "pager"}]}}))


def test_alert_message_is_inert_and_escaped(tmp_path: Path) -> None:
    from listener.alerts import Alert, Signal, alert_outgoing
    from tests.listener.test_digest_html import assert_inert

    alert = Alert("<b>acme</b>", NOW, NOW - timedelta(hours=1), NOW, [Signal("volume", 30, 2, 9.5, 30)],
                  [{"text": "<script>alert(1)</script>", "url": "javascript:alert(1)", "author": "<i onclick=x>m</i>",
                    "source": "forum", "sentiment": "negative"}], link="javascript:alert(2)")
    out = alert_outgoing(alert)
    assert out.html is not None
    assert_inert(out.html)
    assert "<script>alert(1)</script>" in out.text  # plain text keeps what was said
    slack = json.dumps(out.slack)
    assert "<script>" not in slack and "javascript:" not in slack
    assert out.data["watch"] == "<b>acme</b>" and out.data["signals"][0]["z"] == 9.5
