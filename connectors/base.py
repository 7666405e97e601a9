"""The contract every connector meets (compare Singer SDK streams / dlt resources).

A connector is built from its `SourceConfig`, the shared `HttpClient` and the watch queries.
`fetch(cursor)` is a generator of `Batch`es: each batch carries the cursor that becomes valid
once *its* mentions are stored, so the pipeline commits both in one transaction and a crash
never moves the cursor past unsaved items. Parsing lives in pure `parse_*` functions that take
decoded payloads and return mentions; `fetch` only sequences requests through `HttpClient`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import ClassVar
from urllib.parse import urlsplit

from listener.config import SourceConfig
from listener.http import HttpClient
from listener.matching import WatchQuery
from listener.types import Batch, Cursor, utcnow


class Connector(ABC):
    kind: ClassVar[str]
    default_rate: ClassVar[float] = 1.0
    """Requests per second the service documents or tolerates; overridable per source with `rate`."""
    auth: ClassVar[str] = "none"
    """What credentials it needs, for `listener sources` and the README table."""

    def __init__(self, source: SourceConfig, http: HttpClient, watches: Sequence[WatchQuery] = ()) -> None:
        self.source = source
        self.http = http
        self.watches = tuple(watches)
        for host in self.hosts():
            http.set_rate(host, source.rate or self.default_rate)

    def hosts(self) -> list[str]:
        """Hosts this source talks to, so their rate limits are registered before the first request."""
        base = self.source.params.get("base_url") or self.source.params.get("url")
        if isinstance(base, str) and base:
            return [urlsplit(base).netloc]
        urls = self.source.params.get("urls")
        if isinstance(urls, list):
            return sorted({urlsplit(u).netloc for u in urls if isinstance(u, str)})
        return []

    def status(self) -> str:
        """One line for `listener sources` (e.g. 'degraded: no credentials, using public RSS')."""
        return "ok"

    def since(self, cursor: Cursor) -> datetime:
        """Oldest creation time worth asking for: the cursor minus look-back, or the backfill window on a first run."""
        if cursor.last_time is None:
            return utcnow() - self.source.backfill
        return cursor.last_time - max(self.source.lookback, timedelta(0))

    @property
    def name(self) -> str:
        return self.source.name

    @abstractmethod
    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        """Yield batches of new mentions in an order where each batch's cursor is safe to commit."""
