"""The `[daemon]` table, schedule building (triggers, jitter, back-off), config reload checks, the schema gate.

Kept apart from the daemon loop so every rule about *when* something runs is a pure function
that tests check without starting a scheduler, and so both daemons (APScheduler and the
PostgreSQL queue) refuse a broken config on reload the same way.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from enrich.base import ENRICH_BATCH
from listener.config import Config, SourceConfig, load_config, parse_duration
from listener.errors import ConfigError, StorageError
from storage import Store

log = logging.getLogger("listener.daemon")
"""The daemons' own logger: reload messages read the same whichever daemon logs them."""
STARTUP_SPREAD = 10.0
"""Seconds over which overdue sources are spread at start (the worker pool bounds concurrency anyway)."""
_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_KEYS = {
    "health_host", "health_port", "failing_after", "max_backoff", "digest_at", "digest_every", "digest_period",
    "digest_out", "enrich_every", "enrich_batch", "reload_poll", "workers", "shutdown_grace", "http_timeout",
    "http_retries", "jitter", "max_jitter", "queue", "stalled_after",
}
QUEUE_MODES = ("auto", "local")


@dataclass(frozen=True)
class DaemonSettings:
    """Everything the daemon reads from `[daemon]`; durations use the config's syntax (90s, 15m, 6h)."""

    timezone: tzinfo = UTC
    health_host: str = "127.0.0.1"
    health_port: int | None = 8787
    """None: no health server (`health_port = false`); 0: any free port (logged)."""
    failing_after: int = 3
    max_backoff: timedelta = timedelta(hours=6)
    digest_at: time | None = time(7, 0)
    """Local wall-clock time in `[listener] timezone`; None with no digest_every = no digest job."""
    digest_every: timedelta | None = None
    """Alternative to digest_at (tests, or several digests a day)."""
    digest_period: timedelta = timedelta(hours=24)
    digest_out: Path = Path("digests")
    enrich_every: timedelta = timedelta(seconds=5)
    enrich_batch: int = ENRICH_BATCH
    reload_poll: timedelta = timedelta(seconds=2)
    workers: int = 4
    shutdown_grace: timedelta = timedelta(seconds=8)
    http_timeout: timedelta = timedelta(seconds=20)
    http_retries: int = 4
    jitter: float = 0.1
    """Fraction of a source's interval added at random to each run, so 50 sources never fire together."""
    max_jitter: timedelta = timedelta(minutes=5)
    queue: str = "auto"
    """auto: a PostgreSQL store runs jobs through procrastinate (several daemons may share it; see
    docs/scale-out.md); local: APScheduler in this one process, whatever the store."""
    stalled_after: timedelta = timedelta(seconds=30)
    """Scale-out mode: a worker silent this long is dead and its jobs are retried (heartbeat every third)."""

    @property
    def digest_enabled(self) -> bool:
        return self.digest_every is not None or self.digest_at is not None


def _dur(table: dict[str, Any], key: str, default: timedelta | None, path: str) -> timedelta | None:
    if key not in table:
        return default
    try:
        return parse_duration(table[key])
    except ValueError as exc:
        raise ConfigError(str(exc), path=path, key=f"daemon.{key}") from None


def _int(table: dict[str, Any], key: str, default: int, path: str, *, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"must be a whole number from {low} to {high}", path=path, key=f"daemon.{key}")
    return value


def load_settings(config: Config) -> DaemonSettings:
    """Validate `[daemon]` and `[listener] timezone`; every error names the key."""
    path = str(config.path) if config.path else "<config>"
    table = config.sections.get("daemon", {})
    if not isinstance(table, dict):
        raise ConfigError("must be a table", path=path, key="daemon")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}; expected some of {sorted(_KEYS)}",
                          path=path, key="daemon")
    try:
        tz: tzinfo = ZoneInfo(config.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {config.timezone!r} (use an IANA name like Europe/Paris)",
                          path=path, key="listener.timezone") from None
    port_raw = table.get("health_port", 8787)
    port = None if port_raw is False else _int(table, "health_port", 8787, path, low=0, high=65535)
    digest_at: time | None = time(7, 0)
    raw_at = table.get("digest_at", "07:00")
    if raw_at is False:
        digest_at = None
    else:
        try:
            digest_at = time.fromisoformat(str(raw_at))
        except ValueError:
            raise ConfigError(f"{raw_at!r} is not a time of day (use e.g. \"07:00\", or false for no digest)",
                              path=path, key="daemon.digest_at") from None
    digest_every = _dur(table, "digest_every", None, path)
    jitter = table.get("jitter", 0.1)
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 0.5:
        raise ConfigError("must be a fraction of the interval from 0 to 0.5", path=path, key="daemon.jitter")
    out = Path(str(table.get("digest_out", "digests"))).expanduser()
    if not out.is_absolute() and config.path is not None:
        out = config.path.parent / out
    defaults = DaemonSettings()
    queue = table.get("queue", "auto")
    if queue not in QUEUE_MODES:
        raise ConfigError(f"must be one of {', '.join(QUEUE_MODES)}", path=path, key="daemon.queue")
    stalled = _dur(table, "stalled_after", defaults.stalled_after, path) or defaults.stalled_after
    if stalled < timedelta(seconds=3):
        raise ConfigError("must be at least 3s (workers send a heartbeat every third of it)", path=path,
                          key="daemon.stalled_after")
    return DaemonSettings(
        timezone=tz,
        health_host=str(table.get("health_host", "127.0.0.1")),
        health_port=port,
        failing_after=_int(table, "failing_after", 3, path, low=1, high=1000),
        max_backoff=_dur(table, "max_backoff", defaults.max_backoff, path) or defaults.max_backoff,
        digest_at=digest_at,
        digest_every=digest_every,
        digest_period=_dur(table, "digest_period", digest_every or defaults.digest_period, path)
        or defaults.digest_period,
        digest_out=out,
        enrich_every=_dur(table, "enrich_every", defaults.enrich_every, path) or defaults.enrich_every,
        enrich_batch=_int(table, "enrich_batch", defaults.enrich_batch, path, low=1, high=4096),
        reload_poll=_dur(table, "reload_poll", defaults.reload_poll, path) or defaults.reload_poll,
        workers=_int(table, "workers", 4, path, low=1, high=64),
        shutdown_grace=_dur(table, "shutdown_grace", defaults.shutdown_grace, path) or defaults.shutdown_grace,
        http_timeout=_dur(table, "http_timeout", defaults.http_timeout, path) or defaults.http_timeout,
        http_retries=_int(table, "http_retries", 4, path, low=0, high=10),
        jitter=float(jitter),
        max_jitter=_dur(table, "max_jitter", defaults.max_jitter, path) or defaults.max_jitter,
        queue=str(queue),
        stalled_after=stalled,
    )


def human(span: timedelta) -> str:
    """timedelta → the config's own syntax (90s → '1m30s'), for health output."""
    seconds = span.total_seconds()
    if seconds < 60 and not seconds.is_integer():
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


# --- schedules ------------------------------------------------------------------------------------


def _day(token: str, *, allow_seven: bool) -> int:
    t = token.strip().lower()
    if t[:3] in _DOW:
        return _DOW.index(t[:3])
    if t.isdigit() and 0 <= int(t) <= (7 if allow_seven else 6):
        return int(t)
    raise ValueError(f"bad day of week {token!r}")


def crontab_day_of_week(field: str) -> str:
    """Crontab numbers Sunday 0 (or 7); APScheduler 3 numbers Monday 0. Convert to unambiguous names."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            lo, hi = 0, 6
        elif "-" in span:
            a, b = span.split("-", 1)
            lo, hi = _day(a, allow_seven=False), _day(b, allow_seven=True)
        else:
            lo = _day(span, allow_seven=True)
            hi = 6 if step_text else lo
        if step < 1 or hi < lo:
            raise ValueError(f"bad day-of-week range {part!r}")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DOW[d] for d in sorted(days))


def jitter_seconds(every: timedelta, settings: DaemonSettings) -> float:
    return min(every.total_seconds() * settings.jitter, settings.max_jitter.total_seconds())


def cron_trigger(expr: str, tz: tzinfo, jitter: float | None = None) -> CronTrigger:
    minute, hour, day, month, dow = expr.split()
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=crontab_day_of_week(dow),
                       timezone=tz, jitter=jitter or None)


def source_period(source: SourceConfig, tz: tzinfo, now: datetime) -> timedelta:
    """The normal gap between runs: `every`, or the distance between the next two cron fires."""
    if not source.cron:
        return source.every
    trigger = cron_trigger(source.cron, tz)
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
    return (second - first) if first and second else timedelta(days=1)


def source_trigger(source: SourceConfig, settings: DaemonSettings, start: datetime) -> BaseTrigger:
    """`cron` → CronTrigger in the configured zone; `every` → IntervalTrigger first firing at `start`."""
    tz = settings.timezone
    if source.cron:
        try:
            return cron_trigger(source.cron, tz, jitter_seconds(source_period(source, tz, start), settings))
        except ValueError as exc:
            raise ConfigError(f"cron {source.cron!r}: {exc}", key=f"source.{source.name}.cron") from None
    return IntervalTrigger(seconds=source.every.total_seconds(), start_date=start, timezone=tz,
                           jitter=jitter_seconds(source.every, settings) or None)


def backoff_delay(period: timedelta, failures: int, cap: timedelta) -> timedelta:
    """period × 2^failures, capped (but never sooner than the normal schedule would run)."""
    limit = max(cap, period)
    if failures <= 0:
        return period
    return min(period * (2 ** min(failures, 30)), limit)


def first_run(
    period: timedelta, *, now: datetime, last_run: datetime | None, last_ok: datetime | None,
    failures: int, interrupted: bool, settings: DaemonSettings,
) -> datetime:
    """When a source should first run after (re)start, so downtime costs one coalesced run, not a burst.

    Never run / last run interrupted (kill -9) / overdue → soon (spread by jitter); failing → its
    back-off from the last attempt; otherwise the normal schedule from the last run.
    """
    spread = min(jitter_seconds(period, settings), STARTUP_SPREAD)  # a fresh install should not wait minutes
    soon = now + timedelta(seconds=random.uniform(0, spread))
    if last_run is None or interrupted:
        return soon
    if failures > 0:
        due = last_run + backoff_delay(period, failures, settings.max_backoff)
    else:
        due = (last_ok or last_run) + period
    return max(due, soon)


# --- reload ---------------------------------------------------------------------------------------

RESTART_KEYS = ("health_host", "health_port", "workers", "http_timeout", "http_retries", "timezone")
"""`[daemon]` keys read once at start: a reload that changes one warns that it needs a restart."""
Stamp = tuple[int, int]
SourceCheck = Callable[[SourceConfig, DaemonSettings, datetime], object]


def settings_for(config: Config, health_port: int | None) -> DaemonSettings:
    """The `[daemon]` settings of `config`, with `--health-port` (when given) winning over the file."""
    settings = load_settings(config)
    return settings if health_port is None else replace(settings, health_port=health_port)


def config_stamp(path: Path | None) -> Stamp | None:
    """(mtime, size) of the config file, what a reload poll compares; None when there is none or it is unreadable."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class ReloadWatch:
    """When a daemon re-reads its config: after SIGHUP, or once the file's stamp differs from the last poll.

    The signal handler only calls `request()`; the reload itself runs from the daemon's own loop.
    """

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True

    def poll(self, path: Path | None, stamp: Stamp | None, reload: Callable[[str], object]) -> Stamp | None:
        """Call `reload(reason)` when due; returns the stamp to pass to the next poll."""
        current = config_stamp(path)
        if self.requested or current != stamp:
            reason = "SIGHUP" if self.requested else "config file changed"
            self.requested = False
            reload(reason)
        return current


@dataclass(frozen=True)
class CheckedConfig:
    """A re-read config that passed every check, ready to replace the running one."""

    config: Config
    settings: DaemonSettings
    now: datetime
    """When the sources were checked, in the configured zone: the daemon reschedules from this moment."""


def read_reloaded_config(
    path: Path | None, reason: str, health_port: int | None, check_source: SourceCheck,
    check_config: Callable[[Config], object] | None = None,
) -> CheckedConfig | None:
    """Load and check the config at `path`; None (logged as an error) when it is refused or there is no file.

    A broken config never replaces the running one: `check_config`, a known connector for every enabled
    source and `check_source` (its schedule) must all pass, so nothing fails later inside the daemon's loop.
    """
    if path is None:
        return None
    try:
        from connectors import connector_class

        new = load_config(path)
        settings = settings_for(new, health_port)
        if check_config is not None:
            check_config(new)
        now = datetime.now(settings.timezone)
        for source in new.sources:
            if source.enabled:
                connector_class(source.kind)
                check_source(source, settings, now)
    except Exception as exc:
        log.error("config reload refused (%s): %s — still running the previous config", reason, exc,
                  extra={"config": str(path)})
        return None
    return CheckedConfig(new, settings, now)


def warn_restart_needed(old: DaemonSettings, new: DaemonSettings, keys: tuple[str, ...] = RESTART_KEYS) -> None:
    """A reload keeps these settings as they were at start; say so for each one the new config changes."""
    for key in keys:
        if getattr(new, key) != getattr(old, key):
            log.warning("config reload: [daemon] %s changed; that needs a restart", key)


# --- schema gate ----------------------------------------------------------------------------------


def open_current_store(target: str) -> Store:
    """Open without migrating; a schema behind this release stops the daemon with the fix to apply."""
    from storage.db import head_revision

    store = Store.open(target, upgrade=False)
    try:
        revision, head = store.schema_revision(), head_revision()
    except BaseException:
        store.close()
        raise
    if revision != head:
        where = store.display_url
        store.close()
        raise StorageError(
            f"database {where} is at schema revision {revision or 'none (empty database)'}, this listener needs "
            f"{head}: run `listener db upgrade` first, then start the daemon again"
        )
    return store
