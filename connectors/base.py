"""The contract every connector meets (compare Singer SDK streams / dlt resources).

A connector is built from its `SourceConfig`, the shared `HttpClient` and the watch queries.
`fetch(cursor)` is a generator of `Batch`es: each batch carries the cursor that becomes valid
once *its* mentions are stored, so the pipeline commits both in one transaction and a crash
never moves the cursor past unsaved items. Parsing lives in pure `parse_*` functions that take
decoded payloads and return mentions; `fetch` only sequences requests through `HttpClient`.

The helpers below the class are the pieces several connectors need alike (payload reading, watch
queries turned into service queries, oldest-first batching, per-stream positions, bounded "seen
ids"). They live here once so a fix reaches every connector instead of one of its copies.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from listener.config import SourceConfig
from listener.errors import ConfigError, SourceError
from listener.http import HttpClient
from listener.matching import WatchQuery
from listener.types import Batch, Cursor, Mention, as_utc, utcnow


class Connector(ABC):
    kind: ClassVar[str]
    default_rate: ClassVar[float] = 1.0
    """Requests per second the service documents or tolerates; overridable per source with `rate`."""
    auth: ClassVar[str] = "none"
    """What credentials it needs, for `listener sources` and the README table."""
    params: ClassVar[dict[str, str]] = {}
    """Every `[[source]]` key this kind reads (beyond the common name/kind/every/… keys) → what it does.
    Construction refuses any other key, so a typo fails with its `source.<name>.<key>` instead of being ignored."""

    def __init__(self, source: SourceConfig, http: HttpClient, watches: Sequence[WatchQuery] = ()) -> None:
        self.check_params(source)
        self.source = source
        self.http = http
        self.watches = tuple(watches)
        for host in self.hosts():
            http.set_rate(host, source.rate or self.default_rate)

    @classmethod
    def check_params(cls, source: SourceConfig) -> None:
        """Raise ConfigError naming `source.<name>.<key>` for the first key this kind does not read."""
        unknown = sorted(set(source.params) - set(cls.params))
        if not unknown:
            return
        key = unknown[0]
        close = difflib.get_close_matches(key, list(cls.params), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        accepted = ", ".join(sorted(cls.params)) or "none"
        raise ConfigError(
            f"{cls.kind} sources have no key {key!r}; {hint}they accept: {accepted}", key=f"source.{source.name}.{key}"
        )

    def hosts(self) -> list[str]:
        """Hosts this source talks to, so their rate limits are registered before the first request."""
        base = self.source.param("base_url")
        if isinstance(base, str) and base:
            return [urlsplit(base).netloc]
        return sorted({urlsplit(u).netloc for u in self.urls()})

    def urls(self) -> list[str]:
        """`url` and/or `urls = [...]`: the pages or feeds of a source that reads a list of addresses."""
        single = self.source.param("url")
        many = self.source.param("urls") or []
        return [u for u in ([single] if single else []) + list(many) if isinstance(u, str) and u]

    def required_url(self, key: str, example: str) -> str:
        """An address the source cannot work without (e.g. the instance), trailing "/" dropped; SourceError if unset."""
        value = self.source.param(key)
        if not isinstance(value, str) or not value:
            raise SourceError(self.name, f"{self.kind} source needs `{key}` ({example})")
        return value.rstrip("/")

    def status(self) -> str:
        """One line for `listener sources` (e.g. 'degraded: no credentials, using public RSS')."""
        return "ok"

    def since(self, cursor: Cursor) -> datetime:
        """Oldest creation time worth asking for: the cursor minus look-back, or the backfill window on a first run."""
        if cursor.last_time is None:
            return utcnow() - self.source.backfill
        return cursor.last_time - max(self.source.lookback, timedelta(0))

    def stream_since(self, state: Mapping[str, Any]) -> datetime:
        """`since` for one of several streams that each keep a position `{"t": epoch of newest stored, …}`
        (see `take_new`): a stream added later starts from the backfill window, whatever the others reached."""
        stamp = state.get("t")
        return self.since(Cursor(last_time=None if stamp is None else datetime.fromtimestamp(float(stamp), UTC)))

    def queries(self) -> list[str]:
        """`queries = [...]` when set, else one service query per watch alternative (`alternative_queries`)."""
        return str_list(self.source.param("queries")) or alternative_queries(self.watches)

    @property
    def name(self) -> str:
        return self.source.name

    @abstractmethod
    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        """Yield batches of new mentions in an order where each batch's cursor is safe to commit."""


# -- reading payloads ---------------------------------------------------------------------------
def describe(payload: Any) -> str:
    """What came instead of the expected shape, for ParseError messages (keys, never values)."""
    if isinstance(payload, Mapping):
        return f"an object with keys {sorted(payload)[:8]}"
    return f"a JSON {type(payload).__name__}"


def iso_time(value: Any) -> datetime | None:
    """An ISO-8601 string ("…Z", offsets, or naive = UTC) → aware UTC datetime; anything else → None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def str_or_none(value: Any) -> str | None:
    """A non-empty JSON string, else None: a field of another type is dropped, never passed on into a Mention."""
    return value if isinstance(value, str) and value else None


def list_of(value: Any) -> list[Any]:
    """A JSON array field, or [] when it is absent or of another type."""
    return value if isinstance(value, list) else []


def from_epoch(value: Any) -> datetime | None:
    """Unix seconds → aware UTC datetime; None for non-integers and times datetime cannot represent."""
    stamp = strict_int(value)
    if stamp is None:
        return None
    try:
        return datetime.fromtimestamp(stamp, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def strict_int(value: Any) -> int | None:
    """A JSON integer (not a bool, not a numeric string) or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def str_list(value: Any) -> list[str] | None:
    """A param that may be one string or a list of them → list of strings; None when not set."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


# -- watch queries → service queries ------------------------------------------------------------
def alternative_terms(watches: Iterable[WatchQuery]) -> list[tuple[str, ...]]:
    """The required words/phrases of every watch alternative (phrases quoted), de-duplicated in order.

    Search services AND the words of a query as local matching does, so one service query per
    alternative finds what matching keeps; exclusions are left to local matching."""
    return list(
        dict.fromkeys(
            tuple(f'"{p}"' if " " in p else p for p in alt.required)
            for w in watches
            for e in w.expressions
            for alt in e.alternatives
        )
    )


def alternative_queries(watches: Iterable[WatchQuery]) -> list[str]:
    """One query string per watch alternative: words AND-ed by juxtaposition, phrases kept quoted."""
    return list(dict.fromkeys(" ".join(terms) for terms in alternative_terms(watches)))


# -- batching and cursors ------------------------------------------------------------------------
def chunk_by_time(mentions: Iterable[Mention], size: int) -> Iterator[list[Mention]]:
    """Oldest-first chunks of about `size`, never splitting equal timestamps (cursor filters are strict)."""
    ordered = sorted(mentions, key=lambda m: (m.created_at, m.native_id))
    chunk: list[Mention] = []
    for m in ordered:
        if len(chunk) >= size and m.created_at > chunk[-1].created_at:
            yield chunk
            chunk = []
        chunk.append(m)
    if chunk:
        yield chunk


def time_batches(
    mentions: Iterable[Mention], cursor: Cursor, size: int, notes: Sequence[str], *, empty: bool = True
) -> Iterator[Batch]:
    """Batches of `chunk_by_time`, each cursor's last_time its chunk's newest; the notes ride on the first.

    With nothing to yield, one empty batch carries the notes (always when `empty`, else only if there are notes)."""
    first = True
    for chunk in chunk_by_time(mentions, size):
        cursor = cursor.advanced(last_time=newest_time(cursor.last_time, chunk))
        yield Batch(chunk, cursor, notes=tuple(notes) if first else ())
        first = False
    if first and (empty or notes):
        yield Batch([], cursor, notes=tuple(notes))


def newest_time(last: datetime | None, mentions: Iterable[Mention]) -> datetime | None:
    """The later of `last` and the newest mention: a cursor's last_time never goes back."""
    times = [m.created_at for m in mentions]
    return max([*times, last] if last is not None else times, default=None)


def moved(cursor: Cursor, mentions: Iterable[Mention], **extra: Any) -> Cursor:
    """`cursor` advanced past `mentions` (see `newest_time`), with `extra` merged into its extra."""
    return cursor.advanced(last_time=newest_time(cursor.last_time, mentions), extra={**cursor.extra, **extra})


def take_new(mentions: Iterable[Mention], state: Mapping[str, Any], since: datetime, lookback: bool) -> list[Mention]:
    """Items past a stream's position, oldest first. `state` = {"t": epoch of newest stored, "ids": [ids at t]}."""
    last = state.get("t")
    at_last = set(state.get("ids", []))
    fresh = []
    for m in mentions:
        ts = m.created_at.timestamp()
        if last is None or lookback:
            keep = m.created_at >= since
        else:
            keep = ts > last or (ts == last and m.native_id not in at_last)
        if keep:
            fresh.append(m)
    return sorted(fresh, key=lambda m: (m.created_at, m.native_id))


def advance_stream(state: Mapping[str, Any], chunk: Sequence[Mention]) -> dict[str, Any]:
    """A stream's position once the oldest-first `chunk` is stored (ids at one second accumulate)."""
    newest = chunk[-1].created_at.timestamp()
    ids = [m.native_id for m in chunk if m.created_at.timestamp() == newest]
    if state.get("t") == newest:
        ids = sorted(set(state.get("ids", [])) | set(ids))
    return {"t": newest, "ids": ids}


def unseen(mentions: Iterable[Mention], seen: Sequence[str], limit: int) -> tuple[list[Mention], list[str]]:
    """(mentions whose id is not in `seen`, `seen` plus their ids capped to the newest `limit`).

    For pages that show a window of items in no reliable order (review pages, store pages): ids, not
    dates, tell what is new, and the cap keeps the cursor small."""
    known = set(seen)
    new = [m for m in mentions if m.native_id not in known]
    return new, (list(seen) + [m.native_id for m in new])[-limit:]
