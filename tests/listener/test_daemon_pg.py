"""The scale-out daemon in-process (PostgreSQL): schema gate, one tick + worker pass, /healthz from the
store and the queue (a failing source shows its stored streak and the retry's time), reload."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from listener.config import load_config
from listener.daemon_pg import PgDaemon
from listener.errors import StorageError
from storage import Store, jobqueue
from tests.reliability.multiworker_kit import WordCountStage
from tests.support.server import ReplayServer, Reply
from tests.test_scheduler import rss

pytestmark = pytest.mark.postgres


def write(path: Path, url: str, server: ReplayServer, extra: str = "") -> Path:
    path.write_text(
        f'[storage]\nurl = "{url}"\n[daemon]\nhealth_port = false\nhttp_retries = 0\ndigest_at = false\n'
        f'[[watch]]\nname = "acme"\nterms = ["acme"]\n'
        f'[[source]]\nname = "good"\nkind = "rss"\nurl = "{server.url}/good"\nevery = "10m"\nrate = 1000\n'
        f'backfill = "3650d"\n'
        f'[[source]]\nname = "bad"\nkind = "rss"\nurl = "{server.url}/bad"\nevery = "10m"\nrate = 1000\n' + extra,
        encoding="utf-8",
    )
    return path


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    s = Store.open(pg_url)
    yield s
    s.close()


def test_the_daemon_refuses_a_database_without_the_queue_schema(pg_store: Store, tmp_path: Path,
                                                                 replay_server: ReplayServer) -> None:
    config = load_config(write(tmp_path / "l.toml", pg_store.url, replay_server))
    with pytest.raises(StorageError, match="run `listener db upgrade` first"):
        PgDaemon(config, pg_store)
    with Store.open(tmp_path / "l.db") as sqlite, pytest.raises(StorageError, match="is SQLite"):
        PgDaemon(config, sqlite)


def test_one_pass_fetches_backs_off_the_failing_source_and_health_shows_it(
    pg_store: Store, tmp_path: Path, replay_server: ReplayServer
) -> None:
    replay_server.routes["/good"] = Reply(body=rss(["g-1", "g-2"]), content_type="application/rss+xml")
    replay_server.routes["/bad"] = Reply(500, b"boom", content_type="text/plain")
    jobqueue.apply_schema(pg_store)
    path = write(tmp_path / "l.toml", pg_store.url, replay_server)
    daemon = PgDaemon(load_config(path), pg_store, stages_factory=lambda: [WordCountStage()])

    async def scenario() -> tuple[int, int, tuple[int, dict[str, Any]], str]:
        async with daemon.app.open_async():
            from listener import queue

            queue.install(daemon.runtime)
            try:
                created = await daemon.tick()
                await daemon.app.run_worker_async(wait=False, install_signal_handlers=False, listen_notify=False)
                await daemon.tick()  # both sources ran in this slot: no new fetch job (maintenance slots may roll)
                fetches = await daemon.app.job_manager.list_jobs_async(task="listener.fetch_source")
                again = len(fetches)
                daemon._worker = asyncio.create_task(asyncio.sleep(30))  # stands in for the running worker
                health = daemon.health()
                metrics = daemon.metrics_text()
                daemon._worker.cancel()
                return created, again, health, metrics
            finally:
                queue.install(None)

    started = datetime.now(UTC)
    created, again, (status, body), metrics = asyncio.run(scenario())
    assert created >= 2 and again == 2  # good: succeeded, bad: waiting for its retry
    assert status == 200 and body["mode"] == "postgres" and body["scheduler"] is True
    sources = {s["name"]: s for s in body["sources"]}
    assert sources["good"]["last_status"] == "ok" and sources["good"]["total_mentions"] == 2
    bad = sources["bad"]
    assert bad["consecutive_failures"] == 1 and bad["last_status"] == "failed" and "500" in bad["last_error"]
    retry_at = datetime.fromisoformat(bad["next_run_at"])
    assert 1100 < (retry_at - started).total_seconds() < 1300  # 10 min × 2^1, as the single-node back-off
    assert 1100 < bad["backoff_seconds"] < 1300
    assert body["queue"].get("fetch/todo") == 1  # the retry, holding the source's queueing lock
    assert body["enrich"]["model_loaded"] is True
    assert 'listener_source_consecutive_failures{source="bad"} 1' in metrics
    assert 'listener_fetch_errors_total{source="bad"} 1' in metrics


def test_reload_applies_a_good_config_and_refuses_a_broken_one(
    pg_store: Store, tmp_path: Path, replay_server: ReplayServer
) -> None:
    jobqueue.apply_schema(pg_store)
    path = write(tmp_path / "l.toml", pg_store.url, replay_server)
    daemon = PgDaemon(load_config(path), pg_store)
    write(path, pg_store.url, replay_server, extra='[[source]]\nname = "more"\nkind = "rss"\nurl = "http://x/y"\n')
    assert daemon.reload("test") and [s.name for s in daemon.config.sources] == ["good", "bad", "more"]
    write(path, pg_store.url, replay_server, extra='[[source]]\nname = "x"\nkind = "rss"\nurl = "u"\ncron = "99 *"\n')
    assert not daemon.reload("test") and len(daemon.config.sources) == 3


def test_without_procrastinate_the_daemon_says_what_to_install_and_db_upgrade_skips_the_queue(
    pg_store: Store, tmp_path: Path, replay_server: ReplayServer, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    from listener.cli import main
    from listener.cli_daemon import run_daemon
    from listener.context import Context

    monkeypatch.setattr(jobqueue, "available", lambda: False)
    path = write(tmp_path / "l.toml", pg_store.url, replay_server)
    with pytest.raises(SystemExit):
        main(["-c", str(path), "db", "upgrade"])
    assert "job queue schema skipped: procrastinate is not installed" in " ".join(capsys.readouterr().out.split())
    assert not jobqueue.schema_present(pg_store)
    from listener import logging_setup

    monkeypatch.setattr(logging_setup, "configure", lambda *a, **k: logging_setup.REDACTOR)  # keep caplog's handler
    code = run_daemon(Context(config_path=str(path)), health_port=0)
    assert code == 1
    assert "pip install 'customer-voice-listener[postgres]'" in caplog.text
