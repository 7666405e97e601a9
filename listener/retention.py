"""Retention: delete mentions older than the configured `retain` period (data minimisation).

    [listener]
    retain = "365d"          # every source, unless it says otherwise

    [[source]]
    name = "reviews"
    retain = "730d"          # this source keeps two years

A mention's age is its `created_at`. Deleting goes through `Store.purge`, so enrichments, watch
rows and full-text index entries go with it. Sources that have stored mentions but are no longer
in the config fall under the global period. With no `retain` anywhere nothing is deleted.
The periods are validated by the config loader (`source.<name>.retain` / `listener.retain`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from listener.config import Config
from listener.types import utcnow
from storage import Store


@dataclass(frozen=True)
class RetentionPolicy:
    default: timedelta | None = None
    """`[listener] retain`: applies to every source without its own period."""
    per_source: dict[str, timedelta] = field(default_factory=dict)

    def period(self, source: str) -> timedelta | None:
        return self.per_source.get(source, self.default)

    @property
    def empty(self) -> bool:
        return self.default is None and not self.per_source


def retention_policy(config: Config) -> RetentionPolicy:
    """The `retain` periods of a config (global and per source)."""
    per_source = {source.name: source.retain for source in config.sources if source.retain is not None}
    return RetentionPolicy(default=config.retain, per_source=per_source)


def describe_period(period: timedelta) -> str:
    """'365d', '36h', '90m' — the shortest exact spelling."""
    seconds = int(period.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def apply_retention(store: Store, config: Config | RetentionPolicy, *, now: datetime | None = None) -> dict[str, int]:
    """Purge what is older than each source's period; returns deleted mentions per source (only non-zero)."""
    policy = config if isinstance(config, RetentionPolicy) else retention_policy(config)
    if policy.empty:
        return {}
    current = now or utcnow()
    names = {state.source for state in store.source_states()} | set(policy.per_source)
    deleted: dict[str, int] = {}
    for name in sorted(names):
        period = policy.period(name)
        if period is None:
            continue
        try:
            cutoff = current - period
        except OverflowError:  # a period longer than the calendar: nothing can be that old
            continue
        count = store.purge(source=name, before=cutoff)
        if count:
            deleted[name] = count
    return deleted
