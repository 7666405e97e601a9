"""Typed errors. Each says which file/key/source/URL is wrong so the CLI can print one clear line."""

from __future__ import annotations


class ListenerError(Exception):
    """Base for every error the CLI turns into a one-line message instead of a traceback."""

    exit_code = 1


class ConfigError(ListenerError):
    """The config file is missing, unreadable or invalid. Exit code 2 (usage/config)."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.message = message
        where = ": ".join(part for part in (path, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class UsageError(ListenerError):
    """Bad command-line input (unknown source, bad duration …). Exit code 2."""

    exit_code = 2


class SourceError(ListenerError):
    """A source failed. Names the source so one failure never hides among others."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.message = message
        super().__init__(f"source {source!r}: {message}")


class ParseError(SourceError):
    """The source answered something we cannot read (HTML instead of JSON, schema change …)."""


class FetchError(ListenerError):
    """An HTTP request failed for good (after retries) or was refused by policy."""

    def __init__(self, url: str, message: str, *, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{url}: {message}")


class RateLimited(FetchError):
    """The service kept answering 429 / asked us to back off longer than we are willing to wait."""

    def __init__(self, url: str, message: str, *, retry_after: float | None = None, status: int | None = 429) -> None:
        self.retry_after = retry_after
        super().__init__(url, message, status=status)


class StorageError(ListenerError):
    """The database cannot be opened or written (bad path, permissions, newer schema …)."""
