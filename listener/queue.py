"""The job queue of the PostgreSQL scale-out mode: procrastinate tasks, their schedule slots, stalled-job recovery.

Any number of `listener daemon` processes share one PostgreSQL store. Each process defers the work
that is due (listener/daemon_pg.py) and runs jobs as a procrastinate worker:

- `fetch_source`: one per source and schedule slot. `defer_periodic_job` records (task, periodic_id,
  slot) uniquely, so N processes defer a slot once; `queueing_lock=fetch:<name>` drops a defer while
  one is already waiting; `lock=fetch:<name>` never lets two workers fetch one source at once. A
  failed source is retried by procrastinate after `period × 2^failures` (capped), the same back-off
  as the single-node daemon, counted from the failure streak stored by the pipeline.
- `enrich_window`: enrichment backfill in fixed `mention.seq` windows, planned once per
  `enrich_every` by `plan_enrichment`; lock and queueing lock per window keep workers apart.
- `write_digest`, `check_alerts`, `apply_retention`: once per slot for the whole cluster.

A worker killed mid-job leaves its job `doing` with a stale heartbeat: `recover_stalled` (every
process, at start and periodically) puts it back in the queue. The store commits each fetched batch
with its cursor, so the retried job resumes where the dead one stopped: nothing lost, nothing twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import procrastinate
from procrastinate import exceptions as pq_exc
from procrastinate.jobs import Job, Status

from listener.config import Config, SourceConfig
from listener.daemon_jobs import EnrichJob, write_digest
from listener.daemon_settings import DaemonSettings, backoff_delay, source_period
from listener.errors import ListenerError
from listener.health import Metrics, aware
from listener.http import HttpClient
from listener.pipeline import Pipeline, enrich_pending
from storage import SourceState, Store, jobqueue

if TYPE_CHECKING:
    from listener.alerts import Alert

log = logging.getLogger("listener.daemon")

FETCH, ENRICH, MAINTENANCE = "fetch", "enrich", "maintenance"
QUEUES = (FETCH, MAINTENANCE, ENRICH)
TASK_FETCH, TASK_ENRICH, TASK_PLAN = "listener.fetch_source", "listener.enrich_window", "listener.plan_enrichment"
TASK_DIGEST, TASK_ALERTS, TASK_RETENTION = "listener.write_digest", "listener.check_alerts", "listener.apply_retention"
TASK_EMERGING = "listener.check_emerging_alerts"
WINDOWS_PER_PLAN = 64
"""At most this many enrichment windows deferred per planning slot: the queue stays short, fetches first."""
FULL_PLAN_EVERY = 600.0
"""A planner scans only mentions newer than its last pass, and the whole store this often (a window
job that failed for good, or a purge, leaves older gaps that only a full pass finds)."""
DIGEST_GRACE = timedelta(minutes=10)
"""A digest slot missed by more than this (no daemon was running) is skipped, like a missed cron fire."""
ALERTS_EVERY, RETENTION_EVERY = 60, 6 * 3600


class Interrupted(ListenerError):
    """The job stopped early because its process is shutting down: back in the queue for another worker."""


class SourceFailed(ListenerError):
    """The source's run failed (recorded in storage); procrastinate retries it after the back-off."""

    def __init__(self, source: str, error: str | None, delay: timedelta) -> None:
        super().__init__(f"source {source} failed: {error}")
        self.delay = delay


@dataclass
class Runtime:
    """What this process's jobs work with; `PgDaemon` installs one before its worker starts."""

    config: Config
    settings: DaemonSettings
    store: Store
    http: HttpClient
    metrics: Metrics
    enrich: EnrichJob
    stop: threading.Event
    deliver: Callable[..., None]
    app: procrastinate.App | None = None

    def __post_init__(self) -> None:
        self.pipeline = Pipeline(self.config, self.store, self.http)
        self.lock = threading.Lock()
        self._stages_lock = threading.Lock()
        self.plan_floor: tuple[tuple[tuple[str, str], ...], int, float] | None = None
        """(stage versions, seq below which everything was enriched at the last plan here, when last full)."""

    def stages(self) -> list[Any] | None:
        """The enrichment stages, loaded once per process (jobs on several threads may ask at once)."""
        with self._stages_lock:
            return self.enrich.load()

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.config.sources if s.name == name and s.enabled), None)

    @property
    def window(self) -> int:
        return self.settings.enrich_batch * 4


_runtime: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def current() -> Runtime:
    if _runtime is None:
        raise ListenerError("no listener runtime in this process (start it with `listener daemon`)")
    return _runtime


# --- tasks ------------------------------------------------------------------------------------------


def fetch_source(timestamp: int, source: str) -> dict[str, Any]:
    """Fetch one source through the pipeline (batch + cursor per transaction), as the SQLite daemon does."""
    rt = current()
    config = rt.source(source)
    if config is None:
        log.info("source %s is no longer configured; job dropped", source, extra={"source": source})
        return {"status": "not configured"}
    if rt.stop.is_set():
        raise Interrupted(f"fetch of {source} not started: shutting down")
    with rt.lock:
        pipeline = rt.pipeline  # a reload replaces it; this run keeps the one it started with
    run = pipeline.run_source(config, should_stop=rt.stop.is_set)
    state = next((s for s in rt.store.source_states() if s.source == source), None)
    failures = state.consecutive_failures if state else 0
    rt.metrics.record_fetch(source, run.status, run.new)
    log.info("source %s: %s, %d new of %d fetched", source, run.status, run.new, run.fetched,
             extra={"source": source, "status": run.status, "new": run.new, "fetched": run.fetched,
                    "duplicates": run.duplicates, "seconds": round(run.seconds, 3), "slot": timestamp})
    if rt.stop.is_set() and any(n.startswith("interrupted") for n in run.notes):
        raise Interrupted(f"fetch of {source} interrupted by shutdown after its last committed batch")
    if run.status == "failed":
        now = datetime.now(rt.settings.timezone)
        delay = backoff_delay(source_period(config, rt.settings.timezone, now), failures, rt.settings.max_backoff)
        flagged = " — flagged failing" if failures >= rt.settings.failing_after else ""
        log.warning("source %s failed %d time(s) in a row%s; next try in %.0fs: %s", source, failures, flagged,
                    delay.total_seconds(), run.error, extra={"source": source, "failures": failures})
        raise SourceFailed(source, run.error, delay)
    return {"status": run.status, "new": run.new, "fetched": run.fetched}


def enrich_window(start: int, end: int) -> int:
    """Enrich what is missing in seq [start, end); the window lock keeps other workers off it."""
    rt = current()
    stages = rt.stages()
    if stages is None:
        return 0
    done = enrich_pending(rt.store, stages, batch_size=rt.settings.enrich_batch, should_stop=rt.stop.is_set,
                          progress=rt.metrics.record_enriched, seq_range=(start, end))
    if rt.stop.is_set():
        raise Interrupted(f"enrichment of seq [{start}, {end}) interrupted by shutdown")
    if done:
        log.info("enriched %d mention(s) in seq [%d, %d)", done, start, end, extra={"enriched": done})
    return done


def plan_enrichment(timestamp: int) -> int:
    """Defer one `enrich_window` job per window with pending work (a window already queued is skipped)."""
    rt = current()
    stages = rt.stages()
    if stages is None:
        return 0
    pending = tuple((s.name, s.version) for s in stages)
    now = time.monotonic()
    floor, full_at = 0, now
    if rt.plan_floor is not None and rt.plan_floor[0] == pending and now - rt.plan_floor[2] < FULL_PLAN_EVERY:
        _, floor, full_at = rt.plan_floor  # mentions below it were all enriched: only newer ones are scanned
    starts, top = rt.store.pending_enrichment_windows(pending, size=rt.window, limit=WINDOWS_PER_PLAN,
                                                      from_seq=floor)
    rt.plan_floor = (pending, starts[0] if starts else top + 1, full_at)
    assert rt.app is not None, "Runtime.app is set by the daemon before its worker starts"
    task = rt.app.tasks[TASK_ENRICH]
    deferred = 0
    for start in starts:
        key = f"enrich:{start}"
        try:
            task.configure(lock=key, queueing_lock=key).defer(start=start, end=start + rt.window)
            deferred += 1
        except pq_exc.AlreadyEnqueued:
            continue
    if deferred:
        log.info("enrichment: %d window(s) of %d mentions deferred", deferred, rt.window)
    return deferred


def run_digest(timestamp: int) -> str:
    rt = current()
    return str(write_digest(rt.store, rt.config, rt.settings, rt.deliver))


def run_alerts(timestamp: int) -> int:
    """Spike checks once per minute for the whole cluster (the single-node daemon checks after fetches)."""
    from listener.alerts import check_alerts

    rt = current()
    return _log_alerts(check_alerts(rt.store, rt.config))


def run_emerging_alerts(timestamp: int) -> int:
    """'New topic growing fast' alerts, at `[alerts.emerging] every`, once for the whole cluster."""
    from listener.alerts_emerging import check_emerging_alerts

    rt = current()
    return _log_alerts(check_emerging_alerts(rt.store, rt.config))


def _log_alerts(alerts: Sequence[Alert]) -> int:
    for alert in alerts:
        log.warning("alert: %s", alert.headline, extra={"alert": alert.id, "watch": alert.watch})
    return len(alerts)


def run_retention(timestamp: int) -> int:
    from listener.retention import apply_retention

    rt = current()
    deleted = apply_retention(rt.store, rt.config)
    for source, count in deleted.items():
        log.info("retention: deleted %d mention(s) of %s", count, source, extra={"source": source})
    return sum(deleted.values())


class BackoffRetry(procrastinate.BaseRetryStrategy):
    """Shutdown → back in the queue now; failed source → its stored back-off; anything else → exponential."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> procrastinate.RetryDecision | None:
        if isinstance(exception, Interrupted):  # soon, by a worker that is not stopping
            return procrastinate.RetryDecision(retry_at=datetime.now(UTC) + timedelta(seconds=1))
        if isinstance(exception, SourceFailed):
            return procrastinate.RetryDecision(retry_at=datetime.now(UTC) + exception.delay)
        if not isinstance(exception, Exception) or job.attempts >= 12:
            return None
        cap = _runtime.settings.max_backoff.total_seconds() if _runtime else 6 * 3600.0
        delay = timedelta(seconds=min(cap, 5.0 * 2**job.attempts))
        return procrastinate.RetryDecision(retry_at=datetime.now(UTC) + delay)


def make_app(store: Store, **pool: Any) -> procrastinate.App:
    """A procrastinate App on the store's database with the listener's tasks registered."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=jobqueue.conninfo(store), **pool))
    retry = BackoffRetry()
    app.task(name=TASK_FETCH, queue=FETCH, priority=10, retry=retry)(fetch_source)
    app.task(name=TASK_ENRICH, queue=ENRICH, priority=0, retry=retry)(enrich_window)
    app.task(name=TASK_PLAN, queue=MAINTENANCE, priority=5)(plan_enrichment)
    app.task(name=TASK_DIGEST, queue=MAINTENANCE, priority=5, retry=retry)(run_digest)
    app.task(name=TASK_ALERTS, queue=MAINTENANCE, priority=5)(run_alerts)
    app.task(name=TASK_RETENTION, queue=MAINTENANCE, priority=5)(run_retention)
    app.task(name=TASK_EMERGING, queue=MAINTENANCE, priority=5)(run_emerging_alerts)
    return app


# --- schedule slots ---------------------------------------------------------------------------------


def interval_slot(now: float, period: float, offset: float = 0.0) -> int:
    """Start (unix seconds) of the `period`-long slot holding `now`; `offset` shifts the grid."""
    step = max(1, round(period))
    return int(math.floor((now - offset) / step) * step + offset)


def cron_slot(expr: str, settings: DaemonSettings, now: datetime) -> int:
    """The latest fire time of a crontab expression at or before `now`, in the configured zone."""
    from croniter import croniter

    local = now.astimezone(settings.timezone)
    return int(croniter(expr, local + timedelta(seconds=1)).get_prev(float))


def source_offset(name: str, period: float) -> int:
    """Stable per-source shift of the slot grid (crc32, the same in every process), so sources spread out."""
    return zlib.crc32(name.encode()) % max(1, round(period))


def fetch_slot(source: SourceConfig, state: SourceState | None, settings: DaemonSettings, now: datetime) -> int | None:
    """The slot a fetch is due for, or None: already run in this slot, or still backing off after failures."""
    if source.cron:
        slot = cron_slot(source.cron, settings, now)
    else:
        period = source.every.total_seconds()
        slot = interval_slot(now.timestamp(), period, source_offset(source.name, period))
    last_run = aware(state.last_run_at) if state else None
    if last_run is not None and last_run.timestamp() >= slot:
        return None
    if state is not None and last_run is not None and state.consecutive_failures > 0:
        delay = backoff_delay(source_period(source, settings.timezone, now), state.consecutive_failures,
                              settings.max_backoff)
        if now < last_run + delay:
            return None
    return slot


def digest_slot(settings: DaemonSettings, now: datetime) -> int | None:
    if settings.digest_every is not None:
        return interval_slot(now.timestamp(), settings.digest_every.total_seconds())
    if settings.digest_at is None:
        return None
    slot = cron_slot(f"{settings.digest_at.minute} {settings.digest_at.hour} * * *", settings, now)
    return slot if now.timestamp() - slot <= DIGEST_GRACE.total_seconds() else None


@dataclass(frozen=True)
class Due:
    task: str
    periodic_id: str
    slot: int
    kwargs: dict[str, Any]
    lock: str | None = None


def emerging_every(config: Config) -> float:
    """`[alerts.emerging] every` in seconds (a bad value is a ConfigError: checked at start and reload)."""
    from listener.alerts_emerging import EmergingAlertSettings

    return EmergingAlertSettings.from_config(config).every.total_seconds()


def due_jobs(config: Config, settings: DaemonSettings, states: dict[str, SourceState], now: datetime,
             emerging_every: float | None = None) -> list[Due]:
    """Everything due at `now`: the same answer in every process, so the queue de-duplicates it."""
    due: list[Due] = []
    for source in (s for s in config.sources if s.enabled):
        slot = fetch_slot(source, states.get(source.name), settings, now)
        if slot is not None:
            due.append(Due(TASK_FETCH, f"fetch:{source.name}", slot, {"source": source.name}, f"fetch:{source.name}"))
    t = now.timestamp()
    due.append(Due(TASK_PLAN, "plan", interval_slot(t, settings.enrich_every.total_seconds()), {}, "plan"))
    due.append(Due(TASK_ALERTS, "alerts", interval_slot(t, ALERTS_EVERY), {}, "alerts"))
    if emerging_every is not None:
        due.append(Due(TASK_EMERGING, "emerging", interval_slot(t, emerging_every), {}, "emerging"))
    due.append(Due(TASK_RETENTION, "retention", interval_slot(t, RETENTION_EVERY), {}, "retention"))
    digest = digest_slot(settings, now)
    if digest is not None:
        due.append(Due(TASK_DIGEST, "digest", digest, {}, "digest"))
    return due


async def defer_due(app: procrastinate.App, due: list[Due], tried: dict[str, int] | None = None) -> int:
    """Defer each slot once for the whole cluster; returns how many this process created.

    `tried` (periodic id → slot) remembers what this process already offered, so a tick asks the
    database only about new slots.
    """
    created = 0
    for item in due:
        if tried is not None and tried.get(item.periodic_id) == item.slot:
            continue
        task = app.tasks[item.task]
        job = task.configure(lock=item.lock, queueing_lock=item.lock,
                             task_kwargs={**item.kwargs, "timestamp": item.slot}).job
        try:
            job_id = await app.job_manager.defer_periodic_job(job, periodic_id=item.periodic_id,
                                                              defer_timestamp=item.slot)
            created += job_id is not None
        except pq_exc.AlreadyEnqueued:
            pass  # one is already waiting: this slot folds into it
        if tried is not None:  # only once the database answered: a failed offer is made again next tick
            tried[item.periodic_id] = item.slot
    return created


async def recover_stalled(app: procrastinate.App, stalled_after: float) -> int:
    """Put jobs of workers that stopped heart-beating (SIGKILL, lost machine) back in the queue."""
    await app.job_manager.prune_stalled_workers(stalled_after)
    retried = 0
    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
        assert job.id is not None
        try:
            await app.job_manager.retry_job_by_id_async(job.id, retry_at=datetime.now(UTC))
            retried += 1
            log.warning("job %s of a dead worker put back in the queue", job.call_string,
                        extra={"job": job.id, "task": job.task_name})
        except pq_exc.UniqueViolation:
            # A newer job with the same queueing lock is already waiting and will redo this work.
            await app.job_manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=False)
            log.warning("job %s of a dead worker superseded by a queued one", job.call_string,
                        extra={"job": job.id, "task": job.task_name})
        except pq_exc.ConnectorException:
            continue  # another process recovered it first
    return retried
