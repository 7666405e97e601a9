"""The daemon's non-fetch work (enrichment, digest), its extension hooks, and `listener daemon --once`.

Hooks are plain functions so the alerts and delivery work can fill them without touching the
scheduler: `after_fetch` runs after every source run, `deliver_digest` after each digest file is
written. The daemon logs and ignores any exception they raise.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from listener.config import Config
from listener.daemon_settings import DaemonSettings
from listener.digest import Digest, build_digest, render_markdown
from listener.health import Metrics
from listener.pipeline import Pipeline, SourceRun, default_stages, enrich_pending, make_http
from storage import Store

log = logging.getLogger("listener.daemon")


class AlertCheck:
    """Spike checks after fetches, at most once per `min_interval` (emerging topics: `[alerts.emerging] every`);
    a skipped check stays pending.

    Each check reads the baseline window from the store, so running it after every busy fetch costs
    memory and I/O for nothing; the daemon's periodic `alerts` job runs what is still pending.
    """

    def __init__(self, min_interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._last_emerging: float | None = None
        self.pending = False

    def mark(self) -> None:
        self.pending = True

    def run_if_due(self, store: Store, config: Config) -> int:
        with self._lock:
            now = self._clock()
            if not self.pending or (self._last is not None and now - self._last < self.min_interval):
                return 0
            self.pending = False
            self._last = now
        from listener.alerts import check_alerts
        from listener.alerts_emerging import EmergingAlertSettings, check_emerging_alerts

        alerts = check_alerts(store, config)
        every = EmergingAlertSettings.from_config(config).every.total_seconds()  # clustering costs more: own pace
        if self._last_emerging is None or now - self._last_emerging >= every:
            self._last_emerging = now
            alerts += check_emerging_alerts(store, config)
        for alert in alerts:
            log.warning("alert: %s", alert.headline, extra={"alert": alert.id, "watch": alert.watch})
        return len(alerts)


ALERTS = AlertCheck()


def after_fetch(run: SourceRun, config: Config, store: Store) -> None:
    """Hook called after each source run: spike and emerging-topic alerts when the run stored something new.

    Runs on the fetch worker and is throttled (`AlertCheck`); alert delivery failures are logged by
    listener.alerts, anything raised here is logged and ignored by the daemon.
    """
    if run.new:
        ALERTS.mark()
    ALERTS.run_if_due(store, config)


def deliver_digest(digest: Digest, config: Config, *, store: Store | None = None) -> None:
    """Hook called after the digest file is written: send it to the `[[digest]]` targets (listener.delivery).

    Raising is safe: the daemon logs the error and the file stays on disk.
    """
    from listener.delivery import deliver_digest as send

    for result in send(digest, config, store=store):
        if result.ok:
            log.info("digest delivered to %s", result.target, extra={"target": result.target})
        else:
            log.error("digest delivery to %s failed: %s", result.target, result.detail, extra={"target": result.target})


class EnrichJob:
    """Enrich what is new, every few seconds; a model that cannot load is reported once, not every tick."""

    MODEL_RETRY = 300.0
    FULL_CHECK = 60.0
    """Re-count pending work this often even when no fetch of ours added any (a CLI fetch may have)."""

    def __init__(self, store: Store, metrics: Metrics, stages_factory: Callable[[], list[Any]],
                 stop: threading.Event, batch_size: int = 256) -> None:
        self.store = store
        self.metrics = metrics
        self.stages_factory = stages_factory
        self.stop = stop
        self.batch_size = batch_size
        self.stages: list[Any] | None = None
        self.error: str | None = None
        self.queue_depth: int | None = None
        self._retry_at = 0.0
        self._dirty = True
        self._last_count = 0.0
        self._last_error_log = 0.0

    @property
    def loaded(self) -> bool:
        return self.stages is not None

    def mark_dirty(self) -> None:
        self._dirty = True

    def load(self) -> list[Any] | None:
        if self.stages is not None:
            return self.stages
        if time.monotonic() < self._retry_at:
            return None
        try:
            stages = self.stages_factory()
            versions = [f"{s.name}={s.version}" for s in stages]  # `version` forces the model to load
        except Exception as exc:
            if self.error is None:
                log.error("enrichment model cannot load (%s: %s); fetching continues without enrichment, retrying "
                          "quietly every %.0f min", exc.__class__.__name__, exc, self.MODEL_RETRY / 60)
            self.error = f"{exc.__class__.__name__}: {exc}"
            self._retry_at = time.monotonic() + self.MODEL_RETRY
            return None
        log.info("enrichment model loaded: %s", ", ".join(versions), extra={"model": versions})
        self.stages, self.error = stages, None
        return stages

    def pending(self, stages: Sequence[Any]) -> int:
        return self.store.count_unenriched_any([(s.name, s.version) for s in stages])

    def run(self) -> int:
        if self.stop.is_set():
            return 0
        stages = self.load()
        if stages is None:
            return 0
        now = time.monotonic()
        if not self._dirty and now - self._last_count < self.FULL_CHECK:
            return 0
        self._dirty, self._last_count = False, now
        try:
            self.queue_depth = self.pending(stages)
            if not self.queue_depth:
                return 0
            started = time.monotonic()
            done = enrich_pending(self.store, stages, batch_size=self.batch_size, should_stop=self.stop.is_set,
                                  progress=self._progress)
            if self.stop.is_set():  # shutting down: no recount over the whole store
                return done
            self.queue_depth = self.pending(stages)
        except Exception as exc:
            self._dirty = True
            if time.monotonic() - self._last_error_log > 300:
                self._last_error_log = time.monotonic()
                log.error("enrichment failed (retrying every tick, logged every 5 min): %s", exc,
                          exc_info=not isinstance(exc, OSError))
            return 0
        log.info("enriched %d mention(s) in %.1fs, %d pending", done, time.monotonic() - started, self.queue_depth,
                 extra={"enriched": done, "pending": self.queue_depth})
        return done

    def _progress(self, count: int) -> None:
        self.metrics.record_enriched(count)
        if self.queue_depth is not None:
            self.queue_depth = max(0, self.queue_depth - count)


def digest_path(settings: DaemonSettings, now: datetime) -> Path:
    """`digests/2026-11-25.md` for a daily digest; with a sub-daily `digest_every` the time is added."""
    local = now.astimezone(settings.timezone)
    daily = settings.digest_every is None or settings.digest_every >= timedelta(days=1)
    return settings.digest_out / (f"{local:%Y-%m-%d}.md" if daily else f"{local:%Y-%m-%dT%H%M%S}.md")


def write_digest(store: Store, config: Config, settings: DaemonSettings,
                 deliver: Callable[..., None] = deliver_digest) -> Path:
    """Build the digest of the last `digest_period`, write it atomically, then hand it to delivery."""
    digest = build_digest(store, config, period=settings.digest_period)
    path = digest_path(settings, digest.until)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_markdown(digest), encoding="utf-8")
    os.replace(tmp, path)
    log.info("digest written to %s: %d mention(s)", path, digest.total, extra={"path": str(path)})
    try:
        deliver(digest, config, store=store)
    except Exception as exc:
        log.error("digest delivery failed (the file %s is written): %s", path, exc, exc_info=True)
    return path


def run_once(config: Config, store: Store, settings: DaemonSettings,
             hook: Callable[[SourceRun, Config, Store], None] = after_fetch,
             stages_factory: Callable[[], list[Any]] | None = None) -> int:
    """`listener daemon --once`: every enabled source once, then enrich; exit 1 if a source failed (for cron)."""
    http = make_http(config, store, timeout=settings.http_timeout.total_seconds(), retries=settings.http_retries)
    pipeline = Pipeline(config, store, http)
    failed = 0
    try:
        for source in (s for s in config.sources if s.enabled):
            run = pipeline.run_source(source)
            failed += run.status == "failed"
            log.info("source %s: %s, %d new of %d fetched", source.name, run.status, run.new, run.fetched,
                     extra={"source": source.name, "status": run.status, "new": run.new, "error": run.error})
            try:
                hook(run, config, store)
            except Exception:
                log.exception("after_fetch hook failed for source %s (ignored)", source.name)
    finally:
        http.close()
    factory = stages_factory or (lambda: default_stages(config, store))
    EnrichJob(store, Metrics(), factory, threading.Event(), settings.enrich_batch).run()
    return 1 if failed else 0
