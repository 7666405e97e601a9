"""Scale-out job queue: schedule slots, de-duplicated defers, per-source locks, stalled-job recovery,
failed-source back-off, enrichment windows, `listener db upgrade` / `listener workers` (PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from listener import queue
from listener.cli import main
from listener.config import Config, SourceConfig, load_config
from listener.daemon_jobs import EnrichJob
from listener.daemon_settings import DaemonSettings, backoff_delay, load_settings
from listener.errors import ConfigError
from listener.health import Metrics
from listener.pipeline import enrich_pending, make_http
from listener.types import Cursor, Mention, utcnow
from storage import SourceState, Store, jobqueue
from tests.reliability.multiworker_kit import WordCountStage
from tests.support.postgres import BACKENDS
from tests.support.server import ReplayServer, Reply

SETTINGS = DaemonSettings()
NOW = datetime(2026, 11, 25, 12, 0, 7, tzinfo=UTC)


def state(name: str, last_run: datetime | None, failures: int = 0) -> SourceState:
    return SourceState(source=name, cursor=Cursor(), last_run_at=last_run, last_success_at=None, last_error=None,
                       last_error_at=None, consecutive_failures=failures, notes=(), total_mentions=0, last_run=None)


def source(name: str = "feed", every: timedelta = timedelta(minutes=15), cron: str | None = None) -> SourceConfig:
    return SourceConfig(name=name, kind="rss", every=every, cron=cron, params={"url": "http://127.0.0.1:9/x"})


# --- slots (pure) ------------------------------------------------------------------------------------


def test_a_source_slot_is_the_same_everywhere_and_runs_once_per_slot() -> None:
    feed = source()
    slot = queue.fetch_slot(feed, None, SETTINGS, NOW)
    assert slot is not None and slot <= NOW.timestamp() < slot + 900
    assert queue.fetch_slot(feed, None, SETTINGS, NOW + timedelta(seconds=1)) == slot  # same grid in every process
    ran = datetime.fromtimestamp(slot + 5, UTC)
    assert queue.fetch_slot(feed, state("feed", ran), SETTINGS, NOW) is None  # already fetched in this slot
    later = NOW + timedelta(minutes=15)
    assert queue.fetch_slot(feed, state("feed", ran), SETTINGS, later) == slot + 900
    offsets = {queue.source_offset(f"s{i}", 900) for i in range(50)}
    assert len(offsets) > 40  # 50 sources on a 15-minute schedule do not all fire together


def test_a_failing_source_waits_its_backoff_before_a_new_slot_is_due() -> None:
    feed = source()
    failed_at = NOW - timedelta(minutes=20)
    delay = backoff_delay(timedelta(minutes=15), 2, SETTINGS.max_backoff)
    assert delay == timedelta(hours=1)
    assert queue.fetch_slot(feed, state("feed", failed_at, failures=2), SETTINGS, NOW) is None
    assert queue.fetch_slot(feed, state("feed", failed_at, failures=2), SETTINGS, failed_at + delay) is not None


def test_cron_slots_use_crontab_days_in_the_configured_zone() -> None:
    from zoneinfo import ZoneInfo

    paris = replace(SETTINGS, timezone=ZoneInfo("Europe/Paris"))
    weekly = source(cron="30 8 * * 0")  # crontab: Sunday 08:30 Paris time
    slot = queue.fetch_slot(weekly, None, paris, NOW)  # NOW is a Wednesday
    fired = datetime.fromtimestamp(slot or 0, ZoneInfo("Europe/Paris"))
    assert (fired.strftime("%A %H:%M"), fired.date().isoformat()) == ("Sunday 08:30", "2026-11-22")


def test_digest_slot_is_skipped_when_missed_by_more_than_the_grace() -> None:
    settings = replace(SETTINGS, digest_at=datetime(2026, 1, 1, 12, 0).time())
    assert queue.digest_slot(settings, NOW) == int(datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp())
    assert queue.digest_slot(settings, NOW + timedelta(hours=1)) is None


def test_queue_settings_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "l.toml"
    path.write_text('[daemon]\nqueue = "redis"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"daemon\.queue"):
        load_settings(load_config(path))
    path.write_text('[daemon]\nstalled_after = "1s"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"daemon\.stalled_after"):
        load_settings(load_config(path))
    path.write_text('[daemon]\nqueue = "local"\nstalled_after = "45s"\n', encoding="utf-8")
    settings = load_settings(load_config(path))
    assert (settings.queue, settings.stalled_after) == ("local", timedelta(seconds=45))


# --- enrichment windows (both backends) ---------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    target = request.getfixturevalue("pg_url") if request.param == "postgres" else str(tmp_path / "t.db")
    s = Store.open(target)
    yield s
    s.close()


def mentions(n: int, source: str = "s") -> list[Mention]:
    t0 = utcnow() - timedelta(days=1)
    return [Mention(source=source, kind="rss", native_id=str(i), url=None, title=None, author="a",
                    text=f"acme word {i}", created_at=t0 + timedelta(seconds=i)) for i in range(n)]


def test_enrichment_backfill_splits_into_windows_that_cover_everything_once(store: Store) -> None:
    store.save_batch("s", mentions(50), Cursor())
    stage = WordCountStage()
    pending = [(stage.name, stage.version)]
    starts, top = store.pending_enrichment_windows(pending, size=16, limit=100)
    assert len(starts) >= 3 and starts == sorted(starts) and all(s % 16 == 0 for s in starts)
    assert store.pending_enrichment_windows(pending, size=16, limit=2) == (starts[:2], top)
    assert store.pending_enrichment_windows(pending, size=16, limit=100, from_seq=top + 1) == ([], top)
    first = enrich_pending(store, [stage], batch_size=4, seq_range=(starts[0], starts[0] + 16))
    assert 0 < first <= 16
    assert store.pending_enrichment_windows(pending, size=16, limit=100)[0] == starts[1:]  # only that window done
    total = first + sum(enrich_pending(store, [stage], batch_size=4, seq_range=(s, s + 16)) for s in starts[1:])
    assert total == 50 and store.count_unenriched(stage.name, stage.version) == 0
    assert store.pending_enrichment_windows(pending, size=16, limit=100) == ([], top)


# --- PostgreSQL: the queue itself -------------------------------------------------------------------


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    s = Store.open(pg_url)
    jobqueue.apply_schema(s)
    yield s
    s.close()


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def opened(store: Store, work: Any) -> Any:
    app = queue.make_app(store, min_size=1, max_size=4)
    async with app.open_async():
        return await work(app)


def jobs(store: Store) -> list[tuple[str, str, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT task_name, status, args::text FROM procrastinate_jobs ORDER BY id"))
        return [(r[0], r[1], r[2]) for r in rows]


@pytest.mark.postgres
def test_db_upgrade_applies_the_queue_schema_once(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for _ in range(2):
        with pytest.raises(SystemExit) as exit_info:
            main(["--db", pg_url, "db", "upgrade"])
        assert exit_info.value.code in (0, None)
        outputs.append(capsys.readouterr().out)
    assert "job queue schema (procrastinate) created" in outputs[0]
    assert "job queue schema (procrastinate) present" in outputs[1]
    with Store.open(pg_url) as s:
        assert jobqueue.schema_present(s)
        assert jobqueue.apply_schema(s) is False


@pytest.mark.postgres
def test_two_processes_deferring_the_same_slot_make_one_job(pg_store: Store) -> None:
    config = Config(path=None, sources=(source("feed", timedelta(seconds=60)),))
    due = queue.due_jobs(config, SETTINGS, {}, NOW)
    fetch = [d for d in due if d.task == queue.TASK_FETCH]
    assert len(fetch) == 1 and fetch[0].lock == "fetch:feed"
    created = [run_async(opened(pg_store, lambda app: queue.defer_due(app, due))) for _ in range(2)]
    assert created[0] == len(due) and created[1] == 0  # the second "process" found every slot deferred
    later = queue.due_jobs(config, SETTINGS, {}, NOW + timedelta(seconds=60))  # next slot, first job still waiting
    assert run_async(opened(pg_store, lambda app: queue.defer_due(app, later))) == 0  # queueing lock drops it
    assert [j[:2] for j in jobs(pg_store)].count((queue.TASK_FETCH, "todo")) == 1


@pytest.mark.postgres
def test_a_slot_is_offered_again_after_a_database_error(pg_store: Store) -> None:
    config = Config(path=None, sources=(source("feed", timedelta(seconds=60)),))
    due = queue.due_jobs(config, SETTINGS, {}, NOW)
    tried: dict[str, int] = {}
    closed = queue.make_app(pg_store)  # never opened: every query fails like a database that is down
    with pytest.raises(queue.pq_exc.AppNotOpen):
        run_async(queue.defer_due(closed, due, tried))
    assert tried == {}
    assert run_async(opened(pg_store, lambda app: queue.defer_due(app, due, tried))) == len(due)
    assert tried["fetch:feed"] == due[0].slot
    assert run_async(opened(pg_store, lambda app: queue.defer_due(app, due, tried))) == 0  # asked once per slot


@pytest.mark.postgres
def test_a_source_is_never_fetched_by_two_workers_at_once(pg_store: Store) -> None:
    async def scenario(app: Any) -> list[Any]:
        manager = app.job_manager
        task = app.tasks[queue.TASK_FETCH]
        first, second = await manager.register_worker(), await manager.register_worker()
        lock = {"lock": "fetch:feed", "queueing_lock": "fetch:feed"}
        await task.configure(**lock).defer_async(timestamp=1, source="feed")
        got_a = await manager.fetch_job(queues=None, worker_id=first)
        await task.configure(**lock).defer_async(timestamp=2, source="feed")  # allowed: the first is running
        blocked = await manager.fetch_job(queues=None, worker_id=second)  # same lock: nothing for worker 2
        await manager.finish_job(got_a, status=queue.Status.SUCCEEDED, delete_job=False)
        got_b = await manager.fetch_job(queues=None, worker_id=second)
        return [got_a.task_kwargs["timestamp"], blocked, got_b.task_kwargs["timestamp"]]

    assert run_async(opened(pg_store, scenario)) == [1, None, 2]


@pytest.mark.postgres
def test_jobs_of_a_dead_worker_are_requeued_or_superseded(pg_store: Store) -> None:
    async def scenario(app: Any) -> tuple[int, int]:
        manager = app.job_manager
        fetch, enrich = app.tasks[queue.TASK_FETCH], app.tasks[queue.TASK_ENRICH]
        dead = await manager.register_worker()
        await fetch.configure(lock="fetch:a", queueing_lock="fetch:a").defer_async(timestamp=1, source="a")
        await enrich.configure(lock="enrich:0", queueing_lock="enrich:0").defer_async(start=0, end=64)
        await manager.fetch_job(queues=None, worker_id=dead)
        await manager.fetch_job(queues=None, worker_id=dead)
        # a new slot of source a was deferred while the dead worker "ran" it: that job redoes the work
        await fetch.configure(lock="fetch:a", queueing_lock="fetch:a").defer_async(timestamp=2, source="a")
        before = await queue.recover_stalled(app, stalled_after=30)  # heartbeat still fresh: nothing to do
        with pg_store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE procrastinate_workers SET last_heartbeat = NOW() - INTERVAL '1 hour'"))
        return before, await queue.recover_stalled(app, stalled_after=30)

    assert run_async(opened(pg_store, scenario)) == (0, 1)
    assert sorted(jobs(pg_store)) == sorted([
        (queue.TASK_FETCH, "failed", '{"source": "a", "timestamp": 1}'),  # superseded by the queued slot 2
        (queue.TASK_ENRICH, "todo", '{"end": 64, "start": 0}'),  # back in the queue
        (queue.TASK_FETCH, "todo", '{"source": "a", "timestamp": 2}'),
    ])
    assert jobqueue.workers(pg_store) == []  # the dead worker was pruned


@pytest.fixture
def runtime(pg_store: Store) -> Iterator[queue.Runtime]:
    config = Config(path=None)
    settings = replace(SETTINGS, enrich_batch=16)  # 64-seq enrichment windows
    http = make_http(config, retries=0, timeout=3.0)
    stop = threading.Event()
    rt = queue.Runtime(config, settings, pg_store, http, Metrics(),
                       EnrichJob(pg_store, Metrics(), lambda: [WordCountStage()], stop), stop, lambda *a, **k: None)
    rt.app = queue.make_app(pg_store, min_size=1, max_size=4)
    queue.install(rt)
    yield rt
    queue.install(None)
    http.close()


@pytest.mark.postgres
def test_a_failing_source_is_retried_after_its_stored_backoff(
    runtime: queue.Runtime, replay_server: ReplayServer
) -> None:
    replay_server.routes["/feed"] = Reply(503, b"down", content_type="text/plain")
    feed = replace(source("feed", timedelta(minutes=10)), params={"url": f"{replay_server.url}/feed"})
    runtime.config = Config(path=None, sources=(feed,))
    runtime.pipeline = replace_pipeline(runtime)

    async def scenario(app: Any) -> None:
        await queue.defer_due(app, queue.due_jobs(runtime.config, runtime.settings, {}, datetime.now(UTC)))
        await app.run_worker_async(wait=False, install_signal_handlers=False, listen_notify=False)

    assert runtime.app is not None
    started = datetime.now(UTC)
    run_async(opened_app(runtime.app, scenario))
    st = {s.source: s for s in runtime.store.source_states()}["feed"]
    assert st.consecutive_failures == 1 and st.last_error
    with runtime.store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT status, attempts, scheduled_at FROM procrastinate_jobs "
                                   "WHERE task_name = :t"), {"t": queue.TASK_FETCH}).one()
    assert (row.status, row.attempts) == ("todo", 1)  # back in the queue, holding the source's queueing lock
    delay = backoff_delay(timedelta(minutes=10), 1, runtime.settings.max_backoff)  # 20 min, as single-node
    assert abs((row.scheduled_at - started - delay).total_seconds()) < 30


@pytest.mark.postgres
def test_enrichment_is_planned_in_windows_and_done_by_the_worker(runtime: queue.Runtime) -> None:
    runtime.store.save_batch("s", mentions(150), Cursor())
    assert runtime.app is not None

    async def scenario(app: Any) -> None:
        for _ in range(2):  # plan, then work; a second plan finds nothing left
            await app.tasks[queue.TASK_PLAN].defer_async(timestamp=1)
            await app.run_worker_async(wait=False, install_signal_handlers=False, listen_notify=False)

    run_async(opened_app(runtime.app, scenario))
    windows = [(status, json.loads(args)) for task, status, args in jobs(runtime.store) if task == queue.TASK_ENRICH]
    assert windows == [("succeeded", {"start": s, "end": s + 64}) for s in (0, 64, 128)]  # seq 1..150
    assert runtime.plan_floor is not None and runtime.plan_floor[1] == 151  # the next plan scans only newer seqs
    runtime.store.save_batch("t", mentions(10, "t"), Cursor())  # seq 151..160: one more window, found from the floor
    run_async(opened_app(runtime.app, scenario))
    windows = [json.loads(args)["start"] for task, _, args in jobs(runtime.store) if task == queue.TASK_ENRICH]
    assert windows == [0, 64, 128, 128] and runtime.store.count_unenriched("wordcount", "wc-1") == 0
    assert runtime.store.count_unenriched("wordcount", "wc-1") == 0


@pytest.mark.postgres
def test_workers_command_shows_workers_queues_and_stalled_jobs(
    pg_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario(app: Any) -> None:
        worker = await app.job_manager.register_worker()
        await app.tasks[queue.TASK_FETCH].configure(lock="fetch:a").defer_async(timestamp=1, source="a")
        await app.tasks[queue.TASK_FETCH].configure(lock="fetch:b").defer_async(timestamp=1, source="b")
        await app.job_manager.fetch_job(queues=None, worker_id=worker)
        with pg_store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE procrastinate_workers SET last_heartbeat = NOW() - INTERVAL '5 minutes'"))

    run_async(opened(pg_store, scenario))
    with pytest.raises(SystemExit) as exit_info:
        main(["--db", pg_store.url, "workers", "--json"])
    assert exit_info.value.code in (0, None)
    data = json.loads(capsys.readouterr().out)
    assert [(w["alive"], len(w["running"])) for w in data["workers"]] == [(False, 1)]
    assert data["queues"]["fetch"]["todo"] == 1 and data["queues"]["fetch"]["doing"] == 1
    assert [j["job"].split("[")[0] for j in data["stalled_jobs"]] == [queue.TASK_FETCH]
    with pytest.raises(SystemExit):
        main(["--db", pg_store.url, "workers"])
    text = capsys.readouterr().out
    assert "silent" in text and "stalled jobs" in text


def test_workers_command_explains_sqlite_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--db", str(tmp_path / "l.db"), "workers"])
    assert exit_info.value.code in (0, None)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "is SQLite: one `listener daemon` runs every job in its own process" in out


def replace_pipeline(rt: queue.Runtime) -> Any:
    from listener.pipeline import Pipeline

    return Pipeline(rt.config, rt.store, rt.http)


async def opened_app(app: Any, work: Any) -> Any:
    async with app.open_async():
        return await work(app)
