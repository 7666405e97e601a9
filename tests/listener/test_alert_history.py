"""Alert history in the store (SQLite and PostgreSQL): cooldown per incident, restarts, concurrent checkers,
the one-time import of the old JSONL file, and the "new topic growing fast" alert on synthetic clusters."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from enrich.base import Enrichment
from enrich.vectors import pack
from listener.alerts import Alert, AlertHistory, Signal, alert_outgoing, check_alerts
from listener.alerts_emerging import EmergingAlertSettings, check_emerging_alerts
from listener.config import parse_config
from listener.errors import ConfigError
from listener.types import Mention
from storage import AlertRecord, Store
from tests.listener.test_alerts import CONFIG, NOW, _seed
from tests.listener.test_digest_html import assert_inert
from tests.support.postgres import BACKENDS


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each backend (PostgreSQL: a new database per test, so restarts are real)."""
    return str(request.getfixturevalue("pg_url")) if request.param == "postgres" else str(tmp_path / "a.db")


@pytest.fixture
def store(target: str) -> Iterator[Store]:
    with Store.open(target) as s:
        yield s


def _record(n: int, key: str, at: datetime, kind: str = "spike") -> AlertRecord:
    return AlertRecord(f"id{n}", kind, key, key, at, {"n": n})


def test_claim_respects_cooldown_per_key_and_lists_newest_first(store: Store) -> None:
    hour = timedelta(hours=1)
    assert store.claim_alert(_record(1, "spike:acme", NOW), 6 * hour) is None
    blocked = store.claim_alert(_record(2, "spike:acme", NOW + 2 * hour), 6 * hour)
    assert blocked is not None and blocked.id == "id1" and blocked.at == NOW
    assert store.claim_alert(_record(3, "spike:other", NOW + 2 * hour), 6 * hour) is None  # another incident
    assert store.claim_alert(_record(4, "spike:acme", NOW + 7 * hour), 6 * hour) is None  # cooldown over
    assert [r.id for r in store.alerts_since(NOW)] == ["id4", "id3", "id1"]
    assert [r.id for r in store.alerts_since(NOW + hour, kind="spike")] == ["id4", "id3"]
    assert store.update_alert("id4", {"n": 4, "deliveries": [{"ok": True}]})
    assert store.alerts_since(NOW + 7 * hour)[0].data["deliveries"] == [{"ok": True}]
    assert not store.update_alert("nope", {})


def test_claim_with_same_incident_predicate_matches_other_keys(store: Store) -> None:
    store.claim_alert(_record(1, "emerging:em-a", NOW, "emerging"), timedelta(hours=24))
    same = store.claim_alert(_record(2, "emerging:em-b", NOW + timedelta(hours=1), "emerging"), timedelta(hours=24),
                             lambda r: r.data.get("n") == 1)
    assert same is not None and same.id == "id1"
    assert store.claim_alert(_record(3, "emerging:em-c", NOW + timedelta(hours=1), "emerging"), timedelta(hours=24),
                             lambda r: False) is None


def test_concurrent_checkers_announce_an_incident_once(target: str) -> None:
    stores = [Store.open(target) for _ in range(4)]
    results: list[AlertRecord | None] = []
    barrier = threading.Barrier(len(stores))

    def claim(i: int) -> None:
        barrier.wait()
        results.append(stores[i].claim_alert(_record(i, "spike:acme", NOW), timedelta(hours=6)))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is None for r in results) == 1  # exactly one claim recorded, the others saw it
    assert len(stores[0].alerts_since(NOW - timedelta(days=1))) == 1
    for s in stores:
        s.close()


def test_alert_state_survives_restart(target: str, tmp_path: Path) -> None:
    config = parse_config(CONFIG, str(tmp_path / "listener.toml"))
    with Store.open(target) as s:
        _seed(s, NOW, spike=30)
        assert [a.watch for a in check_alerts(s, config, NOW)] == ["acme"]
    with Store.open(target) as s:  # a new process: nothing in memory, the cooldown is in the database
        assert check_alerts(s, config, NOW + timedelta(minutes=45)) == []
        listed = AlertHistory(s).since(NOW - timedelta(hours=1))
        assert [a.watch for a in listed] == ["acme"] and listed[0].signals[0].metric == "volume"


def _legacy_line(watch: str, at: datetime, alert_id: str) -> str:
    return Alert(watch, at, at - timedelta(hours=1), at, [Signal("volume", 20, 2, 8.0, 20)], id=alert_id).to_json()


def test_jsonl_history_is_imported_once_and_kept(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    legacy = tmp_path / "t.db.alerts.jsonl"
    legacy.write_text("\n".join([
        _legacy_line("acme", NOW - timedelta(hours=2), "old-recent"),  # still in cooldown at NOW
        _legacy_line("acme", NOW - timedelta(days=3), "old-older"),
        "{not json",
        "",
    ]) + "\n", encoding="utf-8")
    config = parse_config(CONFIG)
    with Store.open(db) as s:
        _seed(s, NOW, spike=30)
        history = AlertHistory.open(s, config)
        assert not legacy.exists() and (tmp_path / "t.db.alerts.jsonl.imported").exists()
        assert [a.id for a in history.since(NOW - timedelta(days=7))] == ["old-recent", "old-older"]
        # the imported alert's cooldown holds: the spike it reported is not announced again
        assert check_alerts(s, config, NOW, history=history) == []
        # importing the same file again (e.g. restored from a backup) adds nothing
        (tmp_path / "t.db.alerts.jsonl.imported").rename(legacy)
        assert AlertHistory.open(s, config).import_legacy(legacy) == 0
        assert len(history.since(NOW - timedelta(days=7))) == 2


def test_alerts_verb_reads_the_store(tmp_path: Path) -> None:
    from listener.cli import root
    from listener.cli_digest import register

    (tmp_path / "listener.toml").write_text('[storage]\ndatabase = "t.db"\n[[watch]]\nname = "acme"\nterms = "acme"\n',
                                            encoding="utf-8")
    (tmp_path / "t.db.alerts.jsonl").write_text(_legacy_line("acme", NOW, "from-file") + "\n", encoding="utf-8")
    Store.open(tmp_path / "t.db").close()
    app = typer.Typer()
    app.callback()(root)
    register(app)
    result = CliRunner().invoke(app, ["-c", str(tmp_path / "listener.toml"), "alerts", "--since", "3650d"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "1 alert(s)" in result.output and "Spike on acme" in result.output and "volume 20/h" in result.output


# --- new topic growing fast ---------------------------------------------------------------------------------

THEMES = {
    "widget": "home screen widget vanished after update",
    "carplay": "carplay display freezes while driving",
}
EMERGING: dict[str, Any] = {"alerts": {"cooldown": "6h", "emerging": {"window": "24h", "min_size": 6, "growth": 3},
                                       "link": "https://l.example/s?w={watch}"}}


def _seed_clusters(store: Store, now: datetime, counts: dict[str, tuple[int, int]], start: int = 0,
                   seed: int = 1) -> None:
    """Per theme (previous-window count, last-window count) mentions with tight synthetic embeddings."""
    rng = np.random.default_rng(seed)
    centres = {name: rng.normal(size=384) for name in THEMES}
    mentions, vectors = [], {}
    i = start
    for name, (before, recent) in counts.items():
        for k in range(before + recent):
            i += 1
            hours = rng.uniform(25, 47) if k < before else rng.uniform(0.1, 23)
            m = Mention(source="reviews", kind="appstore", native_id=f"e{i}", url=f"https://apps.example/r/{i}",
                        title=None, text=f"{THEMES[name]} ({k})", author=f"u{i}",
                        created_at=now - timedelta(hours=hours), score=float(k))
            v = centres[name] + 0.3 * rng.normal(size=384)
            mentions.append(m)
            vectors[m.id] = (v / np.linalg.norm(v)).astype(np.float32)
    store.save_batch("reviews", mentions, None)
    store.save_enrichments([Enrichment(mid, "embedding", "test-enc", pack(v)) for mid, v in vectors.items()])


def test_emerging_growth_alert_fires_once_for_a_growing_cluster_not_a_flat_one(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = parse_config({"alerts": {**EMERGING["alerts"], "deliver": [
        {"kind": "file", "path": str(out / "alert-{name}.json"), "format": "json"}]}})
    _seed_clusters(store, NOW, {"widget": (2, 12), "carplay": (9, 9)})
    state = tmp_path / "t.emerging.json"
    fired = check_emerging_alerts(store, config, NOW, state=state)
    assert len(fired) == 1
    alert = fired[0]
    assert alert.kind == "emerging" and "widget" in alert.details["keywords"]
    assert (alert.details["size"], alert.details["previous"]) == (12, 2)
    assert alert.signals[0].metric == "cluster_growth" and alert.signals[0].z == 6.0
    assert 1 <= len(alert.quotes) <= 3 and all("widget" in q["text"] for q in alert.quotes)
    assert alert.link and alert.link.startswith("https://apps.example/r/")
    assert alert.headline.startswith("New topic growing fast: ") and "12 mentions in the last window" in alert.headline
    sent = json.loads(next(out.glob("alert-*.json")).read_text())
    assert sent["kind"] == "emerging" and "members" not in sent["details"] and "centroid" not in sent["details"]

    # still growing half an hour later: the same incident, whether the id is stable (state) or not (no state)
    _seed_clusters(store, NOW + timedelta(minutes=30), {"widget": (0, 3)}, start=1000)
    assert check_emerging_alerts(store, config, NOW + timedelta(minutes=30), state=state) == []
    assert check_emerging_alerts(store, config, NOW + timedelta(minutes=40), state=None) == []
    stored = AlertHistory(store).since(NOW - timedelta(hours=1), kind="emerging")
    assert [a.id for a in stored] == [alert.id] and stored[0].deliveries[0]["ok"]


def test_no_emerging_alert_on_flat_clusters_or_without_embeddings(store: Store) -> None:
    config = parse_config(EMERGING)
    _seed_clusters(store, NOW, {"widget": (8, 10), "carplay": (7, 7)})
    assert check_emerging_alerts(store, config, NOW, state=None) == []
    store.save_batch("x", [Mention(source="x", kind="rss", native_id=f"n{i}", url=None, title=None,
                                   text="no vector yet", author=None, created_at=NOW - timedelta(hours=1))
                           for i in range(20)], None)
    assert check_emerging_alerts(store, config, NOW, state=None) == []  # unembedded mentions never cluster


def test_emerging_settings_defaults_and_errors() -> None:
    s = EmergingAlertSettings.from_config(parse_config({"alerts": {"cooldown": "2h"}}))
    assert (s.window, s.min_size, s.growth, s.cooldown) == (timedelta(hours=24), 8, 3.0, timedelta(hours=24))
    with pytest.raises(ConfigError, match=r"alerts\.emerging\.growth"):
        EmergingAlertSettings.from_config(parse_config({"alerts": {"emerging": {"growth": 0.5}}}))
    with pytest.raises(ConfigError, match=r"alerts\.emerging\.window"):
        EmergingAlertSettings.from_config(parse_config({"alerts": {"emerging": {"window": "soon"}}}))
    assert not EmergingAlertSettings.from_config(parse_config({"alerts": {"emerging": {"enabled": False}}})).enabled


def test_emerging_alert_message_is_inert() -> None:
    alert = Alert("em-0001", NOW, NOW - timedelta(hours=24), NOW, [Signal("cluster_growth", 12, 2, 6.0, 12)],
                  [{"text": "<script>alert(1)</script>", "url": "javascript:alert(1)", "author": "<b onclick=x>m</b>",
                    "source": "reviews", "sentiment": None}], link="javascript:alert(2)", kind="emerging",
                  details={"keywords": ['<img src=x onerror="alert(3)">', "widget"], "members": ["a"]})
    out = alert_outgoing(alert)
    assert out.html is not None
    assert_inert(out.html)
    assert "New topic growing fast" in out.html and "&lt;img src=x" in out.html
    slack = json.dumps(out.slack)
    assert "<script>" not in slack and "javascript:" not in slack and "<img" not in out.slack["text"]
    assert out.data["details"] == {"keywords": ['<img src=x onerror="alert(3)">', "widget"]}


def test_imported_timestamps_are_utc() -> None:
    a = Alert.from_json(_legacy_line("acme", datetime(2026, 1, 1, 12, tzinfo=UTC), "x"))
    assert a.at.tzinfo is not None and a.key == "spike:acme" and a.kind == "spike"


def test_alerts_check_verb_runs_the_emerging_detector(tmp_path: Path) -> None:
    from listener.cli import root
    from listener.cli_digest import register
    from listener.types import utcnow

    (tmp_path / "listener.toml").write_text(
        '[storage]\ndatabase = "t.db"\n[[watch]]\nname = "acme"\nterms = "acme"\n'
        '[alerts.emerging]\nmin_size = 6\n', encoding="utf-8")
    with Store.open(tmp_path / "t.db") as s:
        _seed_clusters(s, utcnow(), {"widget": (1, 10)})
    app = typer.Typer()
    app.callback()(root)
    register(app)
    runner = CliRunner()
    args = ["-c", str(tmp_path / "listener.toml"), "alerts", "--check", "--since", "1d"]
    first = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    assert "1 new alert(s): New topic growing fast: widget" in first.output and "10 mentions in the last" in first.output
    again = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 0 and "0 new alert(s)" in again.output and "1 alert(s) since" in again.output


def test_daemon_alert_check_clusters_at_its_own_pace(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import listener.alerts_emerging as emerging
    from listener.daemon_jobs import AlertCheck

    calls: list[float] = []
    monkeypatch.setattr(emerging, "check_emerging_alerts", lambda *a, **k: calls.append(clock[0]) or [])
    clock = [1000.0]
    check = AlertCheck(min_interval=60, clock=lambda: clock[0])
    config = parse_config({"alerts": {"emerging": {"every": "1h"}}})
    for step in range(5):  # a fetch with new mentions every 10 minutes
        clock[0] = 1000.0 + step * 600
        check.mark()
        check.run_if_due(store, config)
    clock[0] = 1000.0 + 3600
    check.mark()
    check.run_if_due(store, config)
    assert calls == [1000.0, 4600.0]
