"""`listener daemon` on a PostgreSQL store: one of any number of procrastinate workers sharing the store.

Each process runs the same loop: every second it works out what is due (listener.queue.due_jobs) and
defers it — the queue keeps one job per slot for the whole cluster — and its procrastinate worker
runs `workers` jobs at a time from every queue. Every few seconds it also re-queues the jobs of
workers whose heartbeat stopped. SIGTERM/SIGINT stop taking jobs and give running ones
`shutdown_grace`; a job cut short goes straight back to the queue for another worker. SIGHUP (or
an edited config file) reloads sources. /healthz and /metrics as in single-node mode.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from listener import queue
from listener.config import Config, SourceConfig
from listener.daemon_health import Health, bind_health_server, health_address, health_report, metrics_report
from listener.daemon_jobs import EnrichJob, deliver_digest
from listener.daemon_settings import (
    RESTART_KEYS,
    DaemonSettings,
    ReloadWatch,
    Stamp,
    config_stamp,
    read_reloaded_config,
    settings_for,
    warn_restart_needed,
)
from listener.errors import ListenerError, StorageError
from listener.health import HealthServer, Metrics, aware, source_health
from listener.logging_setup import REDACTOR
from listener.pipeline import Pipeline, default_stages, make_http
from storage import SourceState, Store, jobqueue

log = logging.getLogger("listener.daemon")
TICK = 1.0
OLD_JOBS_HOURS = 72
"""Finished jobs older than this are deleted (hourly), so the queue tables stay small."""


class PgDaemon:
    """Deferrer + procrastinate worker for one process. `serve()` is the blocking entry."""

    def __init__(
        self, config: Config, store: Store, *, health_port: int | None = None,
        deliver: Callable[..., None] = deliver_digest, stages_factory: Callable[[], list[Any]] | None = None,
        name: str | None = None,
    ) -> None:
        jobqueue.require_postgres(store)
        if not jobqueue.schema_present(store):
            raise StorageError(f"database {store.display_url} has no job queue schema: run `listener db upgrade` "
                               "first, then start the daemons again")
        self._port_override = health_port
        settings = settings_for(config, health_port)
        self.store = store
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._reloads = ReloadWatch()
        self.metrics = Metrics()
        REDACTOR.use_config(config)
        self.http = make_http(config, store, timeout=settings.http_timeout.total_seconds(),
                              retries=settings.http_retries, sleep=self._sleep)
        factory = stages_factory or (lambda: default_stages(self.runtime.config, store))
        enrich = EnrichJob(store, self.metrics, factory, self._stop, settings.enrich_batch)
        self.runtime = queue.Runtime(config, settings, store, self.http, self.metrics, enrich, self._stop, deliver)
        self._emerging_every = queue.emerging_every(config)
        self.app = queue.make_app(store)
        self.runtime.app = self.app
        self.health_server: HealthServer | None = None
        self.started = time.monotonic()
        self._last_tick = 0.0
        self._worker: asyncio.Task[None] | None = None
        self._jobs: dict[str, dict[str, Any]] = {}
        self._queue_depth: dict[str, int] = {}
        self._tried: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker_cancelled = False

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def settings(self) -> DaemonSettings:
        return self.runtime.settings

    def _sleep(self, seconds: float) -> None:
        """HTTP waits end early, and abort the run (back to the queue), on shutdown."""
        if self._stop.wait(seconds):
            raise queue.Interrupted("daemon shutting down")

    # --- lifecycle -----------------------------------------------------------------------------------

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT. Returns the exit code (1: the worker died)."""
        self._install_signals()
        server = bind_health_server(self.settings, self.health, self.metrics_text)
        self.health_server = server.start() if server is not None else None
        try:
            return asyncio.run(self._main())
        finally:
            if self.health_server is not None:
                self.health_server.stop()

    async def _main(self) -> int:
        s = self.settings
        stalled = s.stalled_after.total_seconds()
        self._loop = asyncio.get_running_loop()
        # procrastinate runs sync jobs in the loop's default executor: room for every job plus the loop's own reads
        self._loop.set_default_executor(ThreadPoolExecutor(s.workers + 4, thread_name_prefix="listener-job"))
        async with self.app.open_async():
            queue.install(self.runtime)
            recovered = await queue.recover_stalled(self.app, stalled)
            where = health_address(self.health_server)
            log.info("daemon started (scale-out worker %s): %d source(s), database %s, %d job(s) of dead workers "
                     "re-queued, health %s", self.name, sum(x.enabled for x in self.config.sources),
                     self.store.display_url, recovered, where, extra={"worker": self.name, "health": where})
            self._worker = asyncio.create_task(self.app.run_worker_async(
                name=self.name, concurrency=s.workers, install_signal_handlers=False, queues=list(queue.QUEUES),
                update_heartbeat_interval=stalled / 3, stalled_worker_timeout=stalled,
                fetch_job_polling_interval=TICK, abort_job_polling_interval=5.0,
                shutdown_graceful_timeout=s.shutdown_grace.total_seconds(),
            ))
            code = await self._defer_loop(stalled)
            return await self._stop_worker(code)

    async def _defer_loop(self, stalled: float) -> int:
        stamp = config_stamp(self.config.path)
        next_recovery = time.monotonic() + stalled / 3
        next_cleanup = time.monotonic() + 60
        next_reload = time.monotonic() + self.settings.reload_poll.total_seconds()
        last_error_log = -math.inf
        while not self._stop.is_set():
            assert self._worker is not None
            if self._worker.done():
                error = None if self._worker.cancelled() else self._worker.exception()
                log.error("job worker stopped unexpectedly: %s; exiting so a supervisor restarts this daemon", error)
                return 1
            now = time.monotonic()
            try:
                await self.tick()
                if now >= next_recovery:
                    next_recovery = now + stalled / 3
                    await queue.recover_stalled(self.app, stalled)
                if now >= next_cleanup:
                    next_cleanup = now + 3600
                    await self.app.job_manager.delete_old_jobs(nb_hours=OLD_JOBS_HOURS)
            except Exception as exc:  # database restarting, network blip: keep trying every tick, log once a minute
                if now - last_error_log >= 60:
                    last_error_log = now
                    log.error("scheduling tick failed (retrying every %.0fs, logged once a minute): %s", TICK, exc,
                              exc_info=not isinstance(exc, ListenerError))
            if now >= next_reload:
                next_reload = now + self.settings.reload_poll.total_seconds()
                stamp = self.poll_reload(stamp)
            await self._wait(TICK)
        return 0

    async def tick(self) -> int:
        """Defer what is due and refresh the job snapshot /healthz reads."""
        states = {st.source: st for st in await asyncio.to_thread(self.store.source_states)}
        due = queue.due_jobs(self.config, self.settings, states, datetime.now(UTC), self._emerging_every)
        created = await queue.defer_due(self.app, due, self._tried)
        jobs: dict[str, dict[str, Any]] = {}
        depth: dict[str, int] = {}
        for status in ("todo", "doing"):
            for job in await self.app.job_manager.list_jobs_async(status=status):
                depth[f"{job.queue}/{status}"] = depth.get(f"{job.queue}/{status}", 0) + 1
                if job.task_name == queue.TASK_FETCH:
                    entry = jobs.setdefault(str(job.task_kwargs.get("source")), {})
                    entry[status] = job.scheduled_at if status == "todo" else True
        self._jobs, self._queue_depth, self._last_tick = jobs, depth, time.monotonic()
        return created

    async def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.1, deadline - time.monotonic()))

    async def _stop_worker(self, code: int) -> int:
        self._stop.set()
        grace = self.settings.shutdown_grace.total_seconds()
        log.info("shutting down: no new jobs, waiting up to %.0fs for running ones", grace)
        worker = self._worker
        if worker is not None and not worker.done():
            self._cancel_worker()
            done, _ = await asyncio.wait({worker}, timeout=grace + 2)
            if not done:
                log.warning("stopped with jobs still running after %.0fs; their committed batches are kept and "
                            "another worker retries them once this one's heartbeat is stale", grace)
                for handler in logging.getLogger().handlers:
                    handler.flush()
                os._exit(code)  # threads stuck in I/O would block interpreter exit
        queue.install(None)
        self.http.close()
        log.info("daemon stopped cleanly")
        return code

    def _cancel_worker(self) -> None:
        """Once only: procrastinate stops fetching jobs and waits for running ones (they see `_stop`);
        a second cancel would cut that wait short."""
        if self._worker is not None and not self._worker_cancelled:
            self._worker_cancelled = True
            self._worker.cancel()

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            if self._stop.is_set():
                sys.stderr.write("second signal: exiting immediately\n")
                os._exit(1)
            log.info("received %s", signal.Signals(signum).name)
            self._stop.set()
            if self._loop is not None:  # stop taking jobs now, not at the loop's next tick
                self._loop.call_soon_threadsafe(self._cancel_worker)

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self._reloads.request()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, on_hup)

    # --- reload --------------------------------------------------------------------------------------

    def poll_reload(self, stamp: Stamp | None) -> Stamp | None:
        """Reload on SIGHUP or when the file's mtime/size changed since `stamp`; returns the new stamp."""
        return self._reloads.poll(self.config.path, stamp, self.reload)

    def reload(self, reason: str = "reload") -> bool:
        """Re-read the config; a broken one is refused and the running one stays. True when applied."""
        checked = read_reloaded_config(  # a bad cron or [alerts.emerging] fails here, not in the loop
            self.config.path, reason, self._port_override,
            lambda source, settings, now: queue.fetch_slot(source, None, settings, now),
            check_config=queue.emerging_every,
        )
        if checked is None:
            return False
        new, settings = checked.config, checked.settings
        emerging = queue.emerging_every(new)
        warn_restart_needed(self.settings, settings, (*RESTART_KEYS, "queue", "stalled_after"))
        REDACTOR.use_config(new)
        rt = self.runtime
        with rt.lock:
            rt.config, rt.settings, rt.pipeline = new, settings, Pipeline(new, self.store, self.http)
            self._emerging_every = emerging
        log.info("config reloaded (%s): %d source(s)", reason, sum(x.enabled for x in new.sources))
        return True

    # --- health --------------------------------------------------------------------------------------

    def health(self) -> Health:
        """(HTTP status, body): 503 when this process's loop or worker is dead or the database unreachable."""
        now = datetime.now(UTC)
        uptime = time.monotonic() - self.started
        worker_ok = self._worker is not None and not self._worker.done()
        loop_ok = time.monotonic() - self._last_tick < max(15.0, 5 * TICK)
        head = {"mode": "postgres", "worker": self.name, "uptime": round(uptime, 1),
                "scheduler": bool(worker_ok and loop_ok), "queue": dict(sorted(self._queue_depth.items()))}
        return health_report(
            self.store, self.runtime.enrich, self.metrics, head,
            lambda states: [self._source_health(source, states.get(source.name), now, uptime)
                            for source in self.config.sources if source.enabled],
            self._queue_depth.get("enrich/todo", 0),
        )

    def _source_health(
        self, source: SourceConfig, state: SourceState | None, now: datetime, uptime: float
    ) -> dict[str, Any]:
        """A failing source's back-off is the wait until its queued retry."""
        job = self._jobs.get(source.name, {})
        next_run = aware(job.get("todo"))
        failures = state.consecutive_failures if state else 0
        backoff = (next_run - now).total_seconds() if failures and next_run and next_run > now else None
        return source_health(
            source, state, now=now, uptime=uptime, next_run=next_run, running=bool(job.get("doing")),
            failures=failures, backoff=backoff, failing_after=self.settings.failing_after,
        )

    def metrics_text(self) -> str:
        return metrics_report(self.health(), self.metrics, self.runtime.enrich)
