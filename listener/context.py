"""Where the CLI, daemon and API find their config and database (one rule for all three).

Config: `--config`, else `$LISTENER_CONFIG`, else `./listener.toml` (optional for read-only verbs).
Database: `--db`, else `$LISTENER_DB`, else the config's `[storage] url`/`database` (relative to the
config file), else `./listener.db`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from listener.config import DEFAULT_CONFIG_NAME, DEFAULT_DB, Config, load_config, parse_duration
from listener.errors import UsageError
from storage import Store


@dataclass
class Context:
    config_path: str | None = None
    db: str | None = None
    _config: Config | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)

    def config(self, required: bool = True) -> Config:
        if self._config is None:
            explicit = self.config_path or os.environ.get("LISTENER_CONFIG")
            path = Path(explicit or DEFAULT_CONFIG_NAME)
            if not explicit and not path.exists() and not required:
                self._config = Config(path=None)
            else:
                from connectors import validate_sources

                config = load_config(path)
                validate_sources(config)
                self._config = config
        return self._config

    def database_target(self) -> str:
        if self.db:
            return self.db
        env = os.environ.get("LISTENER_DB")
        if env:
            return env
        config = self.config(required=False)
        if config.storage_url:
            return config.storage_url
        if config.path is not None and not Path(config.database).is_absolute():
            return str(config.path.parent / config.database)
        return config.database or DEFAULT_DB

    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.database_target())
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def parse_when(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """'7d' / '24h' (that long ago) or an ISO date/datetime (UTC when no zone) → aware datetime."""
    if text is None:
        return None
    now = now or datetime.now(UTC)
    value = text.strip()
    if _ISO_DATE.match(value):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"{text!r} is not a date (use 2026-11-01, 2026-11-01T08:00 or a duration like 7d)"
            ) from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    try:
        return now - parse_duration(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def parse_period(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
