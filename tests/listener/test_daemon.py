"""Daemon internals in-process: back-off and recovery, schedules (cron in a time zone, jitter), reload,
health/metrics, digest + delivery hook, JSON logs without secrets, --once, shutdown between batches."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from listener.config import Config, load_config
from listener.daemon import Daemon
from listener.daemon_jobs import EnrichJob, run_once, write_digest
from listener.daemon_settings import (
    DaemonSettings,
    backoff_delay,
    crontab_day_of_week,
    first_run,
    human,
    load_settings,
    open_current_store,
    source_trigger,
)
from listener.errors import ConfigError, StorageError
from listener.health import Metrics, render_metrics
from listener.logging_setup import configure
from storage import Store
from tests.support.server import ReplayServer, Reply
from tests.test_scheduler import GrowingFeed, rss, source_toml, write_config


def no_model() -> list[Any]:
    raise FileNotFoundError("sentiment model not found: (test)")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "listener.db")
    yield s
    s.close()


@pytest.fixture
def running() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for d in daemons:
        if not d._stop.is_set():
            d.stop()


def start(config: Config, store: Store, running: list[Daemon], **kwargs: Any) -> Daemon:
    d = Daemon(config, store, health_port=0, stages_factory=no_model, **kwargs)
    running.append(d)
    d.start()
    return d


def wait_until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def by_name(d: Daemon) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in d.health()[1]["sources"]}


# --- schedules --------------------------------------------------------------------------------------


def test_backoff_doubles_is_capped_and_never_beats_the_normal_schedule() -> None:
    every, cap = timedelta(minutes=15), timedelta(hours=6)
    assert [backoff_delay(every, n, cap) for n in (0, 1, 2, 3)] == [every, every * 2, every * 4, every * 8]
    assert backoff_delay(every, 10, cap) == cap
    assert backoff_delay(timedelta(days=1), 3, cap) == timedelta(days=1)


def test_first_run_after_restart() -> None:
    s, now, every = DaemonSettings(), datetime(2026, 11, 25, 12, tzinfo=UTC), timedelta(minutes=15)
    soon = now + timedelta(seconds=10)
    fresh = first_run(every, now=now, last_run=None, last_ok=None, failures=0, interrupted=False, settings=s)
    assert now <= fresh <= soon
    recent = now - timedelta(minutes=5)
    assert first_run(every, now=now, last_run=recent, last_ok=recent, failures=0, interrupted=False,
                     settings=s) == recent + every
    assert now <= first_run(every, now=now, last_run=recent, last_ok=recent, failures=0, interrupted=True,
                            settings=s) <= soon  # killed mid-run: redo now
    overdue = now - timedelta(days=2)  # downtime: one coalesced run soon, not a burst
    assert now <= first_run(every, now=now, last_run=overdue, last_ok=overdue, failures=0, interrupted=False,
                            settings=s) <= soon
    failing = first_run(every, now=now, last_run=recent, last_ok=None, failures=3, interrupted=False, settings=s)
    assert failing == recent + every * 8


def test_cron_uses_crontab_weekdays_in_the_configured_time_zone(tmp_path: Path) -> None:
    assert crontab_day_of_week("1-5") == "mon,tue,wed,thu,fri"
    assert crontab_day_of_week("0") == crontab_day_of_week("7") == crontab_day_of_week("sun") == "sun"
    assert crontab_day_of_week("*/2") == "sun,tue,thu,sat"
    cfg = tmp_path / "c.toml"
    cfg.write_text('[listener]\ntimezone = "America/New_York"\n[[source]]\nname = "s"\nkind = "rss"\n'
                   'url = "http://127.0.0.1/x"\ncron = "30 7 * * 1-5"\n', encoding="utf-8")
    config = load_config(cfg)
    settings = load_settings(config)
    trigger = source_trigger(config.sources[0], settings, datetime.now(UTC))
    saturday = datetime(2026, 11, 28, 12, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, saturday)
    local = fire.astimezone(ZoneInfo("America/New_York"))
    slot = local.replace(hour=7, minute=30, second=0, microsecond=0)
    assert local.strftime("%a") == "Mon"
    assert timedelta(0) <= local - slot <= timedelta(minutes=5)  # jitter: 10 % of a day, capped at 5 min


def test_interval_jitter_is_a_capped_fraction_of_the_interval(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.toml", source_toml("a", "http://x/a", every="60s")
                                      + source_toml("b", "http://x/b", every="1d")))
    settings = load_settings(config)
    start = datetime.now(UTC)
    assert source_trigger(config.sources[0], settings, start).jitter == pytest.approx(6.0)
    assert source_trigger(config.sources[1], settings, start).jitter == pytest.approx(300.0)


def test_settings_errors_name_the_key(tmp_path: Path) -> None:
    for daemon, key in (('digest_at = "7am"', "daemon.digest_at"), ("health_port = 99999", "daemon.health_port"),
                        ("helth_port = 1", "daemon"), ('max_backoff = "soon"', "daemon.max_backoff")):
        config = load_config(write_config(tmp_path / "c.toml", "", daemon))
        with pytest.raises(ConfigError, match=key):
            load_settings(config)
    bad_tz = Config(path=None, timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match=r"listener\.timezone"):
        load_settings(bad_tz)
    assert human(timedelta(seconds=5400)) == "1h30m"


# --- the daemon in-process --------------------------------------------------------------------------


def test_failing_sources_back_off_and_recover_while_the_healthy_one_keeps_its_schedule(
    tmp_path: Path, store: Store, running: list[Daemon]
) -> None:
    good_server, bad_server = ReplayServer().start(), ReplayServer().start()  # separate hosts: separate limits
    try:
        good = GrowingFeed("g")
        good_server.routes["/feed"] = good
        bad_server.routes["/err"] = Reply(500, b"boom")
        bad_server.routes["/slow"] = Reply(body=rss(["s"]), content_type="application/rss+xml", delay=1.5)
        sources = (source_toml("good", good_server.url + "/feed", every="0.5s")
                   + source_toml("err", bad_server.url + "/err", every="0.5s")
                   + source_toml("slow", bad_server.url + "/slow", every="0.5s"))
        cfg = write_config(tmp_path / "c.toml", sources, 'http_timeout = "0.3s"\nmax_jitter = "0.05s"\n')
        d = start(load_config(cfg), store, running)
        seen: dict[str, list[tuple[int, float]]] = {"err": [], "slow": []}

        def failing_enough() -> bool:
            health = by_name(d)
            for name in seen:
                h = health[name]
                if h["backoff_seconds"] and (not seen[name] or seen[name][-1][0] != h["consecutive_failures"]):
                    seen[name].append((h["consecutive_failures"], h["backoff_seconds"]))
            return all(health[n]["consecutive_failures"] >= 3 for n in seen)

        wait_until(failing_enough, timeout=15)
        health = by_name(d)
        for name in seen:
            assert health[name]["failing"] and health[name]["next_run_ts"] > time.time()
            delays = [b for _, b in seen[name]]
            assert delays == sorted(delays) and delays[-1] >= 2.0, seen  # 0.5 × 2^n: growing
        assert "timed out" in health["slow"]["last_error"].lower() or "timeout" in health["slow"]["last_error"].lower()
        assert d.health()[1]["status"] == "degraded" and d.health()[0] == 200
        assert health["good"]["consecutive_failures"] == 0
        # The healthy source kept its 0.5 s rhythm through all of that (generous bound for a busy CI box).
        elapsed = time.monotonic() - d.started
        assert len(good_server.hits("/feed")) >= elapsed / 0.5 * 0.5
        metrics = d.metrics_text()
        assert 'listener_fetch_errors_total{source="err"}' in metrics
        assert 'listener_source_consecutive_failures{source="err"} ' in metrics

        bad_server.routes["/err"] = Reply(body=rss(["fixed"]), content_type="application/rss+xml")
        wait_until(lambda: by_name(d)["err"]["consecutive_failures"] == 0, timeout=15)
        assert by_name(d)["err"]["backoff_seconds"] is None  # back on its normal schedule
    finally:
        good_server.stop()
        bad_server.stop()


def test_health_is_503_when_the_scheduler_is_dead_or_the_database_unreachable(
    tmp_path: Path, store: Store, running: list[Daemon]
) -> None:
    d = start(load_config(write_config(tmp_path / "c.toml", "")), store, running)
    assert d.health()[0] == 200
    digest = d.scheduler.get_job("digest").next_run_time  # default digest_at 07:00 in [listener] timezone
    assert str(digest.tzinfo) == "Europe/Paris" and (digest.hour, digest.minute) == (7, 0)
    store.close()
    code, body = d.health()
    assert code == 503 and body["status"] == "down" and "closed" in body["database_error"]
    d.scheduler.shutdown(wait=False)
    assert d.health()[0] == 503
    assert "listener_up 0" in d.metrics_text()


def test_reload_on_file_change_applies_good_configs_and_refuses_broken_ones(
    tmp_path: Path, store: Store, running: list[Daemon], replay_server: ReplayServer, caplog: Any
) -> None:
    replay_server.routes["/a"] = GrowingFeed("a")
    cfg = write_config(tmp_path / "c.toml", source_toml("a", replay_server.url + "/a", every="1h"))
    d = start(load_config(cfg), store, running)
    stamp = d._config_stamp()
    assert d.poll_reload(stamp) == stamp and set(d.enabled_sources()) == {"a"}  # unchanged: nothing to do

    write_config(cfg, source_toml("b", replay_server.url + "/a", every="2h"))
    stamp = d.poll_reload(stamp)
    assert set(d.enabled_sources()) == {"b"}
    assert d.scheduler.get_job("source:a") is None and d.scheduler.get_job("source:b") is not None

    cfg.write_text("[[source]\nbroken", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="listener.daemon"):
        d.poll_reload(stamp)
    assert any("config reload refused (config file changed)" in r.getMessage() and "invalid TOML" in r.getMessage()
               for r in caplog.records)
    assert set(d.enabled_sources()) == {"b"} and d.scheduler.get_job("source:b") is not None


def test_shutdown_lets_the_current_batch_commit_and_stops_before_the_next(
    tmp_path: Path, store: Store, running: list[Daemon], replay_server: ReplayServer
) -> None:
    for n in range(20):
        replay_server.routes[f"/f/{n}"] = GrowingFeed(f"f{n}", step=3, delay=0.2)
    urls = [f"{replay_server.url}/f/{n}" for n in range(20)]
    d = start(load_config(write_config(tmp_path / "c.toml", source_toml("many", urls, every="1h"),
                                       'max_jitter = "0.05s"\n')), store, running)
    wait_until(lambda: store.count(sources=["many"]) >= 3)
    started = time.monotonic()
    assert d.stop() is True
    assert time.monotonic() - started < 2.0
    kept = store.count(sources=["many"])
    assert 3 <= kept < 60 and kept % 3 == 0  # whole batches only
    [last] = store.runs("many", limit=1)
    # a shutdown is not a source failure: the run closes ok, says it was interrupted, and health stays clean
    assert last.status == "ok" and any("interrupted by shutdown" in n for n in last.notes), last
    assert {s.source: s for s in store.source_states()}["many"].consecutive_failures == 0


def test_shutdown_abandons_a_run_stuck_in_io_after_the_grace_period(
    tmp_path: Path, store: Store, running: list[Daemon], replay_server: ReplayServer
) -> None:
    replay_server.routes["/stuck"] = Reply(body=rss(["x"]), content_type="application/rss+xml", delay=3)
    cfg = write_config(tmp_path / "c.toml", source_toml("stuck", replay_server.url + "/stuck"),
                       'http_timeout = "10s"\nshutdown_grace = "0.5s"\nmax_jitter = "0.05s"\n')
    d = start(load_config(cfg), store, running)
    wait_until(lambda: by_name(d)["stuck"]["running"])
    started = time.monotonic()
    assert d.stop() is False  # serve() then exits the process: committed batches are safe, like kill -9
    assert time.monotonic() - started < 1.5


# --- jobs, hooks, --once ----------------------------------------------------------------------------


def test_digest_file_is_written_and_a_failing_delivery_hook_never_crashes(
    tmp_path: Path, store: Store, caplog: Any
) -> None:
    config = load_config(write_config(tmp_path / "c.toml", "", 'digest_out = "out"'))
    settings = load_settings(config)

    def broken(digest: Any, cfg: Config, **kwargs: Any) -> None:
        raise RuntimeError("smtp down")

    with caplog.at_level(logging.ERROR):
        path = write_digest(store, config, settings, broken)
    assert path.parent == tmp_path / "out" and path.name.endswith(".md") and len(path.stem) == 10  # daily: date
    assert path.read_text("utf-8").startswith("# Customer voice digest")
    assert any("digest delivery failed" in r.getMessage() for r in caplog.records)


def test_default_delivery_hook_sends_the_digest_to_the_configured_targets(tmp_path: Path, store: Store) -> None:
    sent = tmp_path / "sent" / "team-{date}.md"
    cfg = write_config(tmp_path / "c.toml", "", 'digest_out = "out"')
    cfg.write_text(cfg.read_text("utf-8") + f'\n[[digest]]\nname = "team"\nformat = "md"\n'
                   f'deliver = [{{ kind = "file", path = "{sent}" }}]\n', encoding="utf-8")
    config = load_config(cfg)
    write_digest(store, config, load_settings(config))  # default hook: listener.delivery
    [delivered] = list((tmp_path / "sent").glob("team-*.md"))
    assert "digest" in delivered.read_text("utf-8").lower()


def test_enrichment_without_a_model_is_reported_once_and_with_one_enriches(store: Store, caplog: Any) -> None:
    import threading

    calls = []

    def factory() -> list[Any]:
        calls.append(1)
        raise FileNotFoundError("model.onnx missing")

    job = EnrichJob(store, Metrics(), factory, threading.Event())
    with caplog.at_level(logging.ERROR):
        assert job.run() == 0 and job.run() == 0
    assert len(calls) == 1 and sum("cannot load" in r.getMessage() for r in caplog.records) == 1
    assert job.error and not job.loaded


def test_run_once_fetches_every_source_and_exits_1_when_one_failed(
    tmp_path: Path, store: Store, replay_server: ReplayServer
) -> None:
    replay_server.routes["/a"] = GrowingFeed("a")
    replay_server.routes["/bad"] = Reply(500, b"no")
    config = load_config(write_config(tmp_path / "c.toml", source_toml("a", replay_server.url + "/a")
                                      + source_toml("bad", replay_server.url + "/bad")))
    seen: list[str] = []
    code = run_once(config, store, load_settings(config), hook=lambda run, c, s: seen.append(run.source),
                    stages_factory=no_model)
    assert code == 1 and seen == ["a", "bad"] and store.count(sources=["a"]) == 2


def test_schema_gate_refuses_an_empty_database(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    with pytest.raises(StorageError, match="run `listener db upgrade` first"):
        open_current_store(str(tmp_path / "empty.db"))


def test_json_logs_carry_fields_and_never_secrets(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TEST_DISCOURSE_KEY", "s3cr3t-value-123")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[source]]\nname = "forum"\nkind = "discourse"\nbase_url = "http://127.0.0.1:9"\n'
                   'api_key = { env = "TEST_DISCOURSE_KEY" }\n', encoding="utf-8")
    out = io.StringIO()
    redactor = configure("json", stream=out)
    try:
        redactor.use_config(load_config(cfg))
        log = logging.getLogger("listener.test")
        log.info("calling with key %s", "s3cr3t-value-123", extra={"source": "forum", "run": 7})
        log.warning("headers {'Authorization': 'Bearer abcdefghijkl'} url http://h/x?api_key=zzz&q=1")
    finally:
        logging.getLogger().handlers.clear()
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "calling with key ${TEST_DISCOURSE_KEY}"
    assert (first["level"], first["logger"], first["source"], first["run"]) == ("info", "listener.test", "forum", 7)
    assert first["ts"].endswith("Z")
    assert "abcdefghijkl" not in second["msg"] and "zzz" not in second["msg"] and "q=1" in second["msg"]


def test_metrics_render_in_prometheus_text_format() -> None:
    m = Metrics()
    m.record_fetch('we"ird', "ok", 3)
    m.record_fetch('we"ird', "failed", 0)
    m.record_enriched(30)
    text = render_metrics(m.families([{"name": 'we"ird', "lag_seconds": 1.5, "consecutive_failures": 1}],
                                     {"enrich_queue_depth": None, "scheduler_running": True, "uptime": 2}))
    lines = text.splitlines()
    assert 'listener_fetch_total{source="we\\"ird",status="failed"} 1' in lines
    assert 'listener_mentions_new_total{source="we\\"ird"} 3' in lines
    assert "listener_enrich_queue_depth NaN" in lines and "listener_enriched_total 30" in lines
    assert "listener_enrich_rate_per_second 0.5" in lines
    assert "# TYPE listener_fetch_errors_total counter" in lines
    for line in lines:
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


def test_enrich_rate_window_does_not_grow_without_scrapes() -> None:
    now = [0.0]
    m = Metrics(clock=lambda: now[0])
    for _ in range(100):
        m.record_enriched(1)
        now[0] += 10
    assert len(m._enrich_events) <= 7 and m.enriched_total == 100
    assert m.enrich_rate() == pytest.approx(6 / 60)


class SlowStage:
    """An enrichment stage whose batches take `seconds` each and do not look at the shutdown flag."""

    name, version = "slow", "1"

    def __init__(self, seconds: float) -> None:
        self.seconds, self.batches = seconds, 0

    def run(self, mentions: list[Any]) -> list[Any]:
        from enrich.base import Enrichment

        self.batches += 1
        time.sleep(self.seconds)
        return [Enrichment(m.id, self.name, self.version, {}) for m in mentions]


@pytest.mark.parametrize(("seconds", "clean"), [(0.2, True), (3.0, False)])
def test_shutdown_waits_for_an_enrichment_batch_within_the_grace_period_only(
    tmp_path: Path, store: Store, running: list[Daemon], seconds: float, clean: bool, caplog: Any
) -> None:
    from tests.storage.conftest import make_mention

    store.save_batch("hn", [make_mention(i) for i in range(40)], None)
    stage = SlowStage(seconds)
    cfg = write_config(tmp_path / "c.toml", "", 'enrich_every = "1s"\nenrich_batch = 2\nshutdown_grace = "1s"\n')
    d = Daemon(load_config(cfg), store, health_port=0, stages_factory=lambda: [stage])
    running.append(d)
    d.start()
    wait_until(lambda: stage.batches >= 1)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="listener.daemon"):
        assert d.stop() is clean
    # the grace period (1 s) bounds the wait, busy job or not (+ the health server's shutdown poll)
    assert time.monotonic() - started < 2.5
    ids = [make_mention(i).id for i in range(40)]
    done = len(store.enriched_ids(ids, "slow", "1"))
    if clean:  # stopped between batches: whole batches only, and not the whole store
        assert done % 2 == 0 and done < 40
    else:  # abandoned mid-batch: nothing half-written, and the log names the job
        assert done == 0 and any("job:enrich" in r.getMessage() for r in caplog.records)
        wait_until(lambda: not d._running)  # (serve() would exit the process here; let the thread end first)
        assert len(store.enriched_ids(ids, "slow", "1")) == 2  # its batch commits whole, then it stops
