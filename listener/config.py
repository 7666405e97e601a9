"""One TOML file describes what to listen to. Errors name the file, the key and what is wrong.

Secrets never appear literally: any key that looks like a credential must be ``{ env = "NAME" }``.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from listener.errors import ConfigError
from listener.matching import WatchQuery
from listener.types import SOURCE_KINDS

DEFAULT_CONFIG_NAME = "listener.toml"
DEFAULT_DB = "listener.db"

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_SECRET_KEY = re.compile(r"(secret|token|password|passwd|api_key|apikey|client_secret|webhook)", re.IGNORECASE)
_SOURCE_COMMON = {"name", "kind", "every", "cron", "backfill", "lookback", "match", "rate", "enabled", "retain"}
_TOP_LEVEL = {"listener", "storage", "watch", "source", "topics", "digest", "alerts", "daemon", "api"}


def parse_duration(text: str) -> timedelta:
    """'15m', '7d', '1h30m', '90s', '2w' → timedelta. Raises ValueError with the offending text."""
    raw = str(text).strip()
    pos = 0
    total = 0.0
    for m in _DURATION.finditer(raw):
        if raw[pos : m.start()].strip():
            break
        total += float(m.group(1)) * _UNITS[m.group(2).lower()]
        pos = m.end()
    if not raw or pos != len(raw) or total <= 0:
        raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 15m, 24h, 7d, 2w)")
    return timedelta(seconds=total)


@dataclass(frozen=True)
class Secret:
    """A reference to an environment variable. `str()` never reveals the value."""

    env: str

    def get(self) -> str:
        value = os.environ.get(self.env)
        if value is None:
            raise ConfigError(f"environment variable {self.env} is not set")
        return value

    def get_or_none(self) -> str | None:
        return os.environ.get(self.env)

    def __str__(self) -> str:
        return f"${{{self.env}}}"


@dataclass(frozen=True)
class SourceConfig:
    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    every: timedelta = timedelta(minutes=15)
    cron: str | None = None
    backfill: timedelta = timedelta(days=7)
    lookback: timedelta = timedelta(0)
    match: str = "watch"
    """"watch": keep only mentions matching a watch query; "all": keep everything (a brand's own forum)."""
    rate: float | None = None
    """Requests per second to this source's host; None = the connector's documented default."""
    enabled: bool = True
    retain: timedelta | None = None
    """Delete this source's mentions older than this (data retention); None = keep (or [listener] retain)."""

    def param(self, key: str, default: Any = None) -> Any:
        value = self.params.get(key, default)
        return value.get() if isinstance(value, Secret) else value

    def secret(self, key: str) -> str | None:
        value = self.params.get(key)
        if isinstance(value, Secret):
            return value.get_or_none()
        return None if value is None else str(value)


@dataclass(frozen=True)
class Config:
    path: Path | None
    watches: tuple[WatchQuery, ...] = ()
    sources: tuple[SourceConfig, ...] = ()
    database: str = DEFAULT_DB
    storage_url: str | None = None
    contact: str | None = None
    timezone: str = "UTC"
    retain: timedelta | None = None
    """Global retention for mentions; a source's own `retain` wins."""
    sections: dict[str, Any] = field(default_factory=dict)
    """Raw tables for surfaces configured elsewhere (topics, digest, alerts, daemon, api)."""

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.sources) or "none configured"
        from listener.errors import UsageError

        raise UsageError(f"unknown source {name!r} (known: {known})")

    @property
    def competitors(self) -> tuple[WatchQuery, ...]:
        return tuple(w for w in self.watches if w.competitor)


def _resolve_secrets(value: Any, key: str, path: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {"env"}:
            if not isinstance(value["env"], str) or not value["env"]:
                raise ConfigError("env reference needs a variable name", path=path, key=key)
            return Secret(value["env"])
        return {k: _resolve_secrets(v, f"{key}.{k}", path) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_secrets(v, f"{key}[{i}]", path) for i, v in enumerate(value)]
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, str) and value and _SECRET_KEY.search(leaf):
        raise ConfigError('looks like a secret written literally; use { env = "VARIABLE" } instead', path=path, key=key)
    return value


def _duration(table: dict[str, Any], key: str, default: timedelta, *, path: str, where: str) -> timedelta:
    if key not in table:
        return default
    try:
        return parse_duration(table[key])
    except ValueError as exc:
        raise ConfigError(str(exc), path=path, key=f"{where}.{key}") from None


def _parse_source(i: int, raw: Any, path: str) -> SourceConfig:
    where = f"source[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError("must be a table ([[source]])", path=path, key=where)
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError("needs a name of letters, digits, '-', '_' or '.'", path=path, key=f"{where}.name")
    where = f"source.{name}"
    kind = raw.get("kind")
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"kind {kind!r} is not one of: {', '.join(SOURCE_KINDS)}", path=path, key=f"{where}.kind")
    match = raw.get("match", "watch")
    if match not in ("watch", "all"):
        raise ConfigError('match must be "watch" or "all"', path=path, key=f"{where}.match")
    rate = raw.get("rate")
    if rate is not None and (not isinstance(rate, int | float) or rate <= 0):
        raise ConfigError("rate must be a positive number of requests per second", path=path, key=f"{where}.rate")
    cron = raw.get("cron")
    if cron is not None and (not isinstance(cron, str) or len(cron.split()) != 5):
        raise ConfigError("cron must have 5 fields, e.g. '0 7 * * *'", path=path, key=f"{where}.cron")
    params = {k: v for k, v in raw.items() if k not in _SOURCE_COMMON}
    params = _resolve_secrets(params, where, path)
    return SourceConfig(
        name=name,
        kind=kind,
        params=params,
        every=_duration(raw, "every", timedelta(minutes=15), path=path, where=where),
        cron=cron,
        backfill=_duration(raw, "backfill", timedelta(days=7), path=path, where=where),
        lookback=_duration(raw, "lookback", timedelta(0), path=path, where=where)
        if "lookback" in raw
        else timedelta(0),
        match=match,
        rate=float(rate) if rate is not None else None,
        enabled=bool(raw.get("enabled", True)),
        retain=_duration(raw, "retain", timedelta(0), path=path, where=where) or None,
    )


def _parse_watch(i: int, raw: Any, path: str) -> WatchQuery:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ConfigError("needs a name", path=path, key=f"watch[{i}].name")
    name = raw["name"]
    terms = raw.get("terms")
    if isinstance(terms, str):
        terms = [terms]
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise ConfigError("terms must be a string or a list of strings", path=path, key=f"watch.{name}.terms")
    unknown = set(raw) - {"name", "terms", "competitor"}
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}", path=path, key=f"watch.{name}")
    return WatchQuery.build(name, terms, bool(raw.get("competitor", False)), path=path)


def parse_config(data: dict[str, Any], path: str = "<config>") -> Config:
    unknown = set(data) - _TOP_LEVEL
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; expected {sorted(_TOP_LEVEL)}", path=path)
    watches_raw = data.get("watch", [])
    sources_raw = data.get("source", [])
    if not isinstance(watches_raw, list) or not isinstance(sources_raw, list):
        raise ConfigError("use [[watch]] and [[source]] (arrays of tables)", path=path)
    watches = tuple(_parse_watch(i, w, path) for i, w in enumerate(watches_raw))
    sources = tuple(_parse_source(i, s, path) for i, s in enumerate(sources_raw))
    for label, names in (("watch", [w.name for w in watches]), ("source", [s.name for s in sources])):
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"duplicate {label} name(s): {', '.join(dupes)}", path=path, key=label)
    general = data.get("listener", {})
    storage = data.get("storage", {})
    if not isinstance(general, dict) or not isinstance(storage, dict):
        raise ConfigError("[listener] and [storage] must be tables", path=path)
    sections = {
        k: _resolve_secrets(v, k, path) for k, v in data.items() if k not in {"watch", "source", "listener", "storage"}
    }
    storage_url = storage.get("url")
    if storage_url is not None and not isinstance(storage_url, str):
        raise ConfigError("must be a string URL", path=path, key="storage.url")
    return Config(
        path=Path(path) if path != "<config>" else None,
        watches=watches,
        sources=sources,
        database=str(storage.get("database", DEFAULT_DB)),
        storage_url=storage_url,
        contact=general.get("contact"),
        timezone=str(general.get("timezone", "UTC")),
        retain=_duration(general, "retain", timedelta(0), path=path, where="listener") or None,
        sections=sections,
    )


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found (create one with `listener init`)", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(p)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=str(p)) from None
    return parse_config(data, str(p))
