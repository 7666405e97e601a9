"""The background daemon: every source on its own schedule, continuous enrichment, the daily digest.

One process, one SQLite file (or PostgreSQL). APScheduler 3 runs source jobs in a thread pool with
`max_instances=1` (a source never overlaps itself) and `coalesce=True` (missed runs collapse into one).
A failing source backs off exponentially and returns to its schedule by itself on success. Shutdown
stops taking work and lets the current batch commit: the pipeline saves each batch with its cursor
in one transaction, so abandoning a run between batches (or a kill -9) loses nothing.
See listener/daemon_settings.py for the `[daemon]` table and listener/daemon_jobs.py for the jobs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from listener.config import Config, SourceConfig
from listener.daemon_health import Health, bind_health_server, health_address, health_report, metrics_report
from listener.daemon_jobs import ALERTS, EnrichJob, after_fetch, deliver_digest, write_digest
from listener.daemon_settings import (
    ReloadWatch,
    Stamp,
    backoff_delay,
    config_stamp,
    cron_trigger,
    first_run,
    read_reloaded_config,
    settings_for,
    source_period,
    source_trigger,
    warn_restart_needed,
)
from listener.errors import ListenerError
from listener.health import HealthServer, Metrics, aware, source_health
from listener.logging_setup import REDACTOR
from listener.pipeline import Pipeline, SourceRun, default_stages, make_http
from storage import SourceState, Store

log = logging.getLogger("listener.daemon")
SIGNAL_TICK = 1.0  # seconds: the longest the main loop sleeps before it runs a pending signal handler

AfterFetch = Callable[[SourceRun, Config, Store], None]


class ShutdownRequested(ListenerError):
    """Raised between batches / inside HTTP waits once shutdown began; committed batches stay committed."""


class Daemon:
    """Owns the scheduler, the health server and the live config. `serve()` is the blocking entry."""

    def __init__(
        self, config: Config, store: Store, *, health_port: int | None = None,
        after_fetch: AfterFetch = after_fetch, deliver: Callable[..., None] = deliver_digest,
        stages_factory: Callable[[], list[Any]] | None = None,
    ) -> None:
        self._port_override = health_port
        self.settings = settings_for(config, health_port)
        self.config = config
        self.store = store
        self._after_fetch = after_fetch
        self._deliver = deliver
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reloads = ReloadWatch()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running: set[str] = set()
        self._failures: dict[str, int] = {}
        self._backoff: dict[str, float] = {}
        self.metrics = Metrics()
        REDACTOR.use_config(config)
        self.http = make_http(config, store, timeout=self.settings.http_timeout.total_seconds(),
                              retries=self.settings.http_retries, sleep=self._sleep)
        self.pipeline = Pipeline(config, store, self.http)
        # The stages see the config current when the model loads (topics, watches); tests inject their own.
        factory = stages_factory or (lambda: default_stages(self.config, store))
        self.enrich = EnrichJob(store, self.metrics, factory, self._stop, self.settings.enrich_batch)
        self.scheduler = BackgroundScheduler(
            timezone=self.settings.timezone,
            executors={"default": ThreadPoolExecutor(self.settings.workers), "background": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self.scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self.health_server: HealthServer | None = None
        self.started = time.monotonic()

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        states = {s.source: s for s in self.store.source_states()}
        now = datetime.now(self.settings.timezone)
        for source in self.config.sources:
            if source.enabled:
                self._schedule_source(source, states.get(source.name), now)
        self._schedule_background(now)
        # bound before starting anything, so a taken port fails fast and clearly
        self.health_server = bind_health_server(self.settings, self.health, self.metrics_text)
        self.scheduler.start()
        if self.health_server is not None:
            self.health_server.start()
        where = health_address(self.health_server)
        log.info("daemon started: %d source(s), database %s, health %s", len(self.enabled_sources()),
                 self.store.display_url, where, extra={"health": where})

    def stop(self) -> bool:
        """Stop scheduling, give running jobs `shutdown_grace` to finish. False: some had to be abandoned."""
        self._stop.set()
        self._wake.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + self.settings.shutdown_grace.total_seconds()
        with self._idle:
            while self._running and time.monotonic() < deadline:
                self._idle.wait(min(0.2, max(0.01, deadline - time.monotonic())))
            left = sorted(self._running)
        if self.health_server is not None:
            self.health_server.stop()
        if left:
            log.warning("stopped with %s still running after %.0fs; their committed batches are kept and the rest "
                        "is fetched (or enriched) on the next start", ", ".join(left),
                        self.settings.shutdown_grace.total_seconds())
            return False
        self.http.close()
        log.info("daemon stopped cleanly")
        return True

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; SIGHUP or an edited config file reloads the sources."""
        self._install_signals()
        self.start()
        stamp = self._config_stamp()
        next_poll = time.monotonic() + self.settings.reload_poll.total_seconds()
        while not self._stop.is_set():
            # Short waits: the kernel may hand SIGHUP/SIGTERM to any thread (onnxruntime's, the enrichment
            # threads'), and then nothing interrupts this wait; Python runs the handler, which sets the flags,
            # only once the main thread wakes. With 1 s slices a signal takes effect within a second.
            self._wake.wait(min(SIGNAL_TICK, max(0.0, next_poll - time.monotonic())))
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._reloads.requested or time.monotonic() >= next_poll:
                stamp = self.poll_reload(stamp)
                next_poll = time.monotonic() + self.settings.reload_poll.total_seconds()
        log.info("shutting down: no new runs, waiting up to %.0fs for running ones",
                 self.settings.shutdown_grace.total_seconds())
        if not self.stop():
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(0)  # worker threads stuck in I/O would block interpreter exit past the 10 s budget
        return 0

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            if self._stop.is_set():
                sys.stderr.write("second signal: exiting immediately\n")
                os._exit(1)
            log.info("received %s", signal.Signals(signum).name)
            self._stop.set()
            self._wake.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self._reloads.request()
            self._wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, on_hup)

    # --- scheduling ----------------------------------------------------------------------------------

    def enabled_sources(self) -> dict[str, SourceConfig]:
        return {s.name: s for s in self.config.sources if s.enabled}

    def _schedule_source(self, source: SourceConfig, state: SourceState | None, now: datetime) -> None:
        tz = self.settings.timezone
        period = source_period(source, tz, now)
        failures = state.consecutive_failures if state else 0
        last_run = aware(state.last_run_at) if state else None
        interrupted = bool(state and state.last_run and state.last_run.status == "running")
        first = first_run(period, now=now, last_run=last_run, last_ok=aware(state.last_success_at) if state else None,
                          failures=failures, interrupted=interrupted, settings=self.settings)
        if source.cron and not (last_run is None or interrupted or failures):
            upcoming = cron_trigger(source.cron, tz).get_next_fire_time(None, last_run)
            missed = upcoming is not None and upcoming <= now
            first = first if missed else None  # type: ignore[assignment]
        self._failures[source.name] = failures
        self._backoff.pop(source.name, None)
        trigger = source_trigger(source, self.settings, first or now)
        options: dict[str, Any] = {"next_run_time": first} if first is not None else {}
        self.scheduler.add_job(
            self._run_source_job, trigger, args=[source.name], id=f"source:{source.name}", name=source.name,
            misfire_grace_time=int(max(period.total_seconds(), 60)), replace_existing=True, **options,
        )

    def _schedule_background(self, now: datetime) -> None:
        s = self.settings
        # Background jobs are tracked too: a SIGTERM during an enrichment batch or an alert check waits for it
        # within shutdown_grace, and past that the process exits without it (its transaction is not committed).
        self.scheduler.add_job(self._tracked, IntervalTrigger(seconds=s.enrich_every.total_seconds()),
                               args=["job:enrich", self.enrich.run], id="enrich", name="enrich", executor="background",
                               replace_existing=True, next_run_time=now + timedelta(seconds=1), misfire_grace_time=60)
        self.scheduler.add_job(self._tracked, IntervalTrigger(seconds=ALERTS.min_interval), args=["job:alerts",
                               self._alerts_job], id="alerts", name="alerts", executor="background",
                               replace_existing=True, misfire_grace_time=60)
        self.scheduler.add_job(self._tracked, IntervalTrigger(hours=6), args=["job:retention", self._retention_job],
                               id="retention", name="retention", executor="background", replace_existing=True,
                               next_run_time=now + timedelta(seconds=30), misfire_grace_time=3600)
        if self.scheduler.get_job("digest"):
            self.scheduler.remove_job("digest")
        if s.digest_every is not None:
            trigger: Any = IntervalTrigger(seconds=s.digest_every.total_seconds(), timezone=s.timezone)
        elif s.digest_at is not None:
            trigger = cron_trigger(f"{s.digest_at.minute} {s.digest_at.hour} * * *", s.timezone)
        else:
            return
        self.scheduler.add_job(self._tracked, trigger, args=["job:digest", self._digest_job], id="digest",
                               name="digest", executor="background", misfire_grace_time=3600, replace_existing=True)

    def _on_skipped(self, event: JobSubmissionEvent) -> None:
        self.metrics.record_skipped(str(event.job_id))
        log.debug("skipped a run of %s (still running or missed)", event.job_id)

    # --- jobs ----------------------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        """The HTTP client's waits (rate limit, retry back-off) end early, and abort the run, on shutdown."""
        if self._stop.wait(seconds):
            raise ShutdownRequested("daemon shutting down")

    def _run_source_job(self, name: str) -> None:
        source = self.enabled_sources().get(name)
        if source is not None and not self._stop.is_set():
            self._tracked(name, lambda: self._run_source(source))

    def _tracked(self, name: str, job: Callable[[], object]) -> None:
        """Run `job` as one of the jobs `stop()` waits for (sources, and background jobs as "job:<name>")."""
        with self._lock:
            self._running.add(name)
        try:
            job()
        finally:
            with self._idle:
                self._running.discard(name)
                self._idle.notify_all()

    def _run_source(self, source: SourceConfig) -> None:
        name, pipeline, config = source.name, self.pipeline, self.config
        previous = self._failures.get(name, 0)
        run_id: int | None = None
        try:
            run = pipeline.run_source(source, should_stop=self._stop.is_set)
            state = next((s for s in self.store.source_states() if s.source == name), None)
            failures = state.consecutive_failures if state else (previous + 1 if run.status == "failed" else 0)
            run_id = state.last_run.id if state and state.last_run else None
        except ListenerError as exc:  # the run could not even be recorded (database locked/unreachable)
            run = SourceRun(name, status="failed", error=str(exc))
            failures = previous + 1
        self.metrics.record_fetch(name, run.status, run.new)
        self._failures[name] = failures
        fields = {"source": name, "run": run_id, "status": run.status, "new": run.new, "fetched": run.fetched,
                  "duplicates": run.duplicates, "seconds": round(run.seconds, 3)}
        if run.status == "failed":
            fields["error"] = run.error
        log.info("source %s: %s, %d new of %d fetched", name, run.status, run.new, run.fetched, extra=fields)
        if run.status == "failed" and not self._stop.is_set():
            self._back_off(source, failures, run.error)
        elif previous and run.status != "failed":
            self._backoff.pop(name, None)
            log.info("source %s recovered after %d failed run(s); back on its schedule", name, previous,
                     extra={"source": name, "run": run_id})
        if run.new:
            self.enrich.mark_dirty()
        try:
            self._after_fetch(run, config, self.store)
        except Exception:
            log.exception("after_fetch hook failed for source %s (ignored)", name, extra={"source": name})

    def _back_off(self, source: SourceConfig, failures: int, error: str | None) -> None:
        now = datetime.now(self.settings.timezone)
        delay = backoff_delay(source_period(source, self.settings.timezone, now), failures, self.settings.max_backoff)
        self._backoff[source.name] = delay.total_seconds()
        try:
            self.scheduler.modify_job(f"source:{source.name}", next_run_time=now + delay)
        except JobLookupError:
            return  # removed by a reload meanwhile
        flagged = " — flagged failing" if failures >= self.settings.failing_after else ""
        log.warning("source %s failed %d time(s) in a row%s; next try in %.0fs: %s", source.name, failures, flagged,
                    delay.total_seconds(), error, extra={"source": source.name, "failures": failures})

    def _alerts_job(self) -> None:
        """Catch-up for spike checks that `after_fetch` skipped because one ran less than a minute ago."""
        if self._stop.is_set():
            return
        try:
            ALERTS.run_if_due(self.store, self.config)
        except Exception:
            log.exception("alert check failed (ignored)")

    def _retention_job(self) -> None:
        """Data retention: purge mentions older than `retain` (per source or [listener] retain)."""
        if self._stop.is_set():
            return
        from listener.retention import apply_retention

        try:
            deleted = apply_retention(self.store, self.config)
        except Exception:
            log.exception("retention failed (ignored; next try in 6h)")
            return
        for source, count in deleted.items():
            log.info("retention: deleted %d mention(s) of %s", count, source, extra={"source": source})

    def _digest_job(self) -> None:
        if self._stop.is_set():
            return
        try:
            write_digest(self.store, self.config, self.settings, self._deliver)
        except Exception as exc:
            log.error("digest failed: %s", exc, exc_info=not isinstance(exc, ListenerError))

    # --- reload --------------------------------------------------------------------------------------

    def poll_reload(self, stamp: Stamp | None) -> Stamp | None:
        """Reload on SIGHUP or when the file's mtime/size changed since `stamp`; returns the new stamp."""
        return self._reloads.poll(self.config.path, stamp, self.reload)

    def _config_stamp(self) -> Stamp | None:
        return config_stamp(self.config.path)

    def reload(self, reason: str = "reload") -> bool:
        """Re-read the config; a broken one is refused and the running one stays. True when applied."""
        checked = read_reloaded_config(self.config.path, reason, self._port_override, source_trigger)
        if checked is None:
            return False
        new, settings, now = checked.config, checked.settings, checked.now
        old, old_settings = self.config, self.settings
        for key in ("database", "storage_url"):
            if getattr(new, key) != getattr(old, key):
                log.warning("config reload: [storage] %s changed; that needs a restart (still using %s)", key,
                            self.store.display_url)
        warn_restart_needed(old_settings, settings)
        REDACTOR.use_config(new)
        with self._lock:
            self.config, self.settings = new, settings
            self.pipeline = Pipeline(new, self.store, self.http)
        before, after = {s.name: s for s in old.sources if s.enabled}, self.enabled_sources()
        states = {s.source: s for s in self.store.source_states()}
        for name in before.keys() - after.keys():
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(f"source:{name}")
        changed = [n for n in after if n not in before or
                   (before[n].every, before[n].cron) != (after[n].every, after[n].cron)]
        for name in changed:
            self._schedule_source(after[name], states.get(name), now)
        if (settings.digest_at, settings.digest_every, settings.enrich_every) != (
                old_settings.digest_at, old_settings.digest_every, old_settings.enrich_every):
            self._schedule_background(now)
        added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
        log.info("config reloaded (%s): %d source(s); added %s; removed %s; rescheduled %s", reason, len(after),
                 added or "none", removed or "none", sorted(set(changed) - set(added)) or "none")
        return True

    # --- health --------------------------------------------------------------------------------------

    def health(self) -> Health:
        """(HTTP status, body): 503 when the scheduler is dead or the database unreachable."""
        now = datetime.now(UTC)
        uptime = time.monotonic() - self.started
        thread = getattr(self.scheduler, "_thread", None)
        scheduler_ok = bool(self.scheduler.running and thread is not None and thread.is_alive())
        return health_report(
            self.store, self.enrich, self.metrics, {"uptime": round(uptime, 1), "scheduler": scheduler_ok},
            lambda states: [self._source_health(s, states.get(s.name), now, uptime)
                            for s in self.enabled_sources().values()],
            self.enrich.queue_depth,
        )

    def _source_health(
        self, source: SourceConfig, state: SourceState | None, now: datetime, uptime: float
    ) -> dict[str, Any]:
        job = self.scheduler.get_job(f"source:{source.name}") if self.scheduler.running else None
        return source_health(
            source, state, now=now, uptime=uptime, next_run=getattr(job, "next_run_time", None),
            running=source.name in self._running, failures=self._failures.get(source.name, 0),
            backoff=self._backoff.get(source.name), failing_after=self.settings.failing_after,
        )

    def metrics_text(self) -> str:
        return metrics_report(self.health(), self.metrics, self.enrich)
