"""Logging for long-running processes: plain text for a terminal, one JSON object per line for journald/Loki.

Secrets must never reach a log: a filter masks the resolved value of every `Secret` in the config (shown
as ``${ENV}`` instead), Authorization/Bearer values and credential-looking query parameters, whatever
logger produced the line (ours, httpx, apscheduler …).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from listener.config import Config, Secret

LOG_FORMATS = ("text", "json")
# Attributes every LogRecord has; anything else came from `extra=` and is emitted as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_AUTH = re.compile(r"(?i)(authorization|proxy-authorization)(['\"]?\s*[:=]\s*['\"]?)([^'\"\s,}]+(?: [^'\"\s,}]+)?)")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}")
_QUERY = re.compile(r"(?i)([?&](?:api_?key|key|token|access_token|client_secret|secret|password|sig)=)[^&\s'\"]+")


def _secrets_in(value: Any) -> Iterable[Secret]:
    if isinstance(value, Secret):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secrets_in(item)


class RedactingFilter(logging.Filter):
    """Rewrites the rendered message so no secret value or credential header survives."""

    def __init__(self) -> None:
        super().__init__()
        self._values: list[tuple[str, str]] = []

    def use_config(self, config: Config) -> None:
        """Learn the secret values of a (re)loaded config; values shorter than 4 chars are too common to mask."""
        found: dict[str, str] = {}
        for source in config.sources:
            for secret in _secrets_in(source.params):
                value = secret.get_or_none()
                if value and len(value) >= 4:
                    found[value] = str(secret)
        for secret in _secrets_in(config.sections):
            value = secret.get_or_none()
            if value and len(value) >= 4:
                found[value] = str(secret)
        # Longest first, so a secret containing another is masked whole.
        self._values = sorted(found.items(), key=lambda kv: -len(kv[0]))

    def redact(self, text: str) -> str:
        for value, shown in self._values:
            if value in text:
                text = text.replace(value, shown)
        text = _AUTH.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} ***", text)
        return _QUERY.sub(lambda m: f"{m.group(1)}***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    """ts, level, logger, msg, then any `extra=` fields (source, run, …), then exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in data and not key.startswith("_"):
                data[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Human lines with the `extra=` fields appended as key=value, so text logs carry the same facts."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={v}" for k, v in vars(record).items()
                  if k not in _STANDARD and not k.startswith("_") and v is not None]
        if not extras:
            return line
        head, sep, tail = line.partition("\n")
        return f"{head} [{' '.join(extras)}]{sep}{tail}"


REDACTOR = RedactingFilter()


def configure(fmt: str = "text", *, level: int = logging.INFO, stream: TextIO | None = None) -> RedactingFilter:
    """Replace the root handlers (the CLI's basicConfig included) with one redacting handler."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(REDACTOR)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Request lines carry URLs (query keys); scheduler chatter (skipped/missed runs) is counted in /metrics.
    for noisy in ("httpx", "httpcore", "apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING if noisy != "apscheduler" else logging.ERROR)
    return REDACTOR
