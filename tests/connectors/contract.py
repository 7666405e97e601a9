"""The shared connector contract: one call proves a connector is safe to schedule.

Usage (from any ``tests/connectors/test_contract_<kind>.py``)::

    from tests.connectors.contract import check_contract, fresh, json_file, make_source

    def test_contract(replay_server, http, corpora):
        replay_server.routes["/api/v1/search_by_date"] = json_file(corpora / "hackernews/algolia/x.json")
        source = make_source("hn", "hackernews", base_url=replay_server.url)
        check_contract(fresh(HackerNewsConnector, source, http, watches), replay_server, expect_min=10)

`make_connector` must build a *fresh* connector each call, pointed at `server.url`, with
``lookback = 0`` and a backfill long enough to reach the capture's dates (`make_source` does both).
Routes should serve real captures; handlers may emulate the service's own paging/filtering
(query params) so a second page really is a second page.

What is asserted (each failure message says which rule broke):

1. every mention has non-empty source/native_id, `source`/`kind` of the connector, a tz-aware UTC
   `created_at`, a text or a title; ids are stable across runs and unique within a run; each
   batch's cursor survives a JSON round-trip and its `last_time` never goes backwards nor beyond
   the newest mention yielded so far;
2. incremental: fetching again from the final cursor yields no mention already yielded with the
   same title and text;
3. crash safety: for every batch k, stopping after batch k and restarting from its cursor loses
   nothing compared with one full run;
4. politeness lives in HttpClient: every request carries the client's User-Agent and the
   connector never calls `time.sleep`;
5. each route the connector used, answering HTML instead of JSON (when `json_api`) or 403, makes
   fetch raise a `ListenerError` whose message names what came instead ("HTML", "403").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from connectors.base import Connector
from listener.config import SourceConfig
from listener.errors import ListenerError
from listener.http import HttpClient
from listener.matching import WatchQuery
from listener.types import Batch, Cursor, Mention
from tests.support.server import ReplayServer, Reply, Seen

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    b"<body><p>Checking your browser before accessing the site.</p></body></html>"
)
LONG_BACKFILL = timedelta(days=365 * 30)
"""Captures are years old; a 30-year backfill lets a first run reach them."""


def make_source(name: str, kind: str, *, backfill: timedelta = LONG_BACKFILL, match: str = "watch",
                **params: Any) -> SourceConfig:
    """A SourceConfig for tests: no look-back (so incremental runs can be checked exactly)."""
    return SourceConfig(name=name, kind=kind, params=params, backfill=backfill, lookback=timedelta(0), match=match)


def fresh(cls: type[Connector], source: SourceConfig, http: HttpClient,
          watches: Sequence[WatchQuery] = ()) -> Callable[[], Connector]:
    """The `make_connector` of `check_contract`: a new `cls` over the same source, client and watches per call."""
    return lambda: cls(source, http, watches)


def json_file(path: Path, *, status: int = 200, headers: dict[str, str] | None = None, gzip: bool = False) -> Reply:
    """Serve a capture file as the service does (``application/json; charset=utf-8``)."""
    return Reply(status, path.read_bytes(), headers=dict(headers or {}),
                 content_type="application/json; charset=utf-8", gzip=gzip)


def json_reply(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None, gzip: bool = False) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=dict(headers or {}),
                 content_type="application/json; charset=utf-8", gzip=gzip)


def html_reply(body: bytes | Path, *, status: int = 200, etag: str | None = None) -> Reply:
    """Serve an HTML page (a capture file or bytes) as a web server does."""
    data = body.read_bytes() if isinstance(body, Path) else body
    return Reply(status, data, content_type="text/html; charset=utf-8", etag=etag)


def robots_txt(rules: str) -> Reply:
    return Reply(200, rules.encode(), content_type="text/plain")


def query_value(seen: Seen, key: str, default: str | None = None) -> str | None:
    values = seen.query.get(key)
    return values[0] if values else default


def run(connector: Connector, cursor: Cursor | None = None) -> tuple[list[Batch], list[Mention]]:
    """Drain a fetch; returns the batches and the mentions in yield order.

    Also checks that no batch's cursor changes after it was yielded (storage may persist it later).
    """
    batches: list[Batch] = []
    frozen: list[str] = []
    for batch in connector.fetch(cursor or Cursor()):
        batches.append(batch)
        frozen.append(batch.cursor.to_json() if isinstance(batch.cursor, Cursor) else "")
    for i, (batch, snapshot) in enumerate(zip(batches, frozen, strict=True)):
        if isinstance(batch.cursor, Cursor):
            assert batch.cursor.to_json() == snapshot, f"batch {i}'s cursor was mutated after it was yielded"
    return batches, [m for b in batches for m in b.mentions]


def _content(m: Mention) -> tuple[str | None, str]:
    return (m.title, m.text)


def _check_mentions(connector: Connector, batches: list[Batch], start: Cursor) -> None:
    seen_ids: set[str] = set()
    newest = start.last_time
    previous = start.last_time
    for i, batch in enumerate(batches):
        assert isinstance(batch, Batch), f"fetch yielded {type(batch).__name__}, not a Batch"
        assert isinstance(batch.cursor, Cursor), f"batch {i}: cursor is {type(batch.cursor).__name__}"
        assert Cursor.from_json(batch.cursor.to_json()) == batch.cursor, f"batch {i}: cursor does not survive JSON"
        for m in batch.mentions:
            label = f"batch {i} mention {m.native_id!r}"
            assert m.source == connector.name, f"{label}: source {m.source!r} != {connector.name!r}"
            assert m.kind == connector.kind, f"{label}: kind {m.kind!r} != {connector.kind!r}"
            assert m.native_id.strip(), f"{label}: blank native_id"
            assert m.created_at.tzinfo is not None and m.created_at.utcoffset() == timedelta(0), (
                f"{label}: created_at {m.created_at!r} is not UTC")
            assert (m.text or "").strip() or (m.title or "").strip(), f"{label}: neither text nor title"
            assert m.id not in seen_ids, f"{label}: yielded twice in one run"
            seen_ids.add(m.id)
            newest = m.created_at if newest is None or m.created_at > newest else newest
        last = batch.cursor.last_time
        if last is not None:
            assert last.tzinfo is not None, f"batch {i}: cursor.last_time is naive"
            assert previous is None or last >= previous, f"batch {i}: cursor went back from {previous} to {last}"
            assert newest is not None and last <= newest, (
                f"batch {i}: cursor.last_time {last} is past the newest mention yielded so far ({newest})")
            previous = last


def _check_incremental(make_connector: Callable[[], Connector], final: Cursor, first: list[Mention]) -> None:
    before = {m.id: _content(m) for m in first}
    _, again = run(make_connector(), Cursor.from_json(final.to_json()))
    repeated = [m.native_id for m in again if before.get(m.id) == _content(m)]
    assert not repeated, f"incremental run re-yielded unchanged mentions: {repeated[:5]}"


def _check_crash_safety(make_connector: Callable[[], Connector], full: list[Mention], n_batches: int) -> None:
    wanted = {m.id for m in full}
    for k in range(min(n_batches, 12)):
        got: set[str] = set()
        gen = make_connector().fetch(Cursor())
        cursor = Cursor()
        for _ in range(k + 1):
            batch = next(gen, None)
            if batch is None:
                break
            got |= {m.id for m in batch.mentions}
            cursor = batch.cursor
        close = getattr(gen, "close", None)
        if close is not None:
            close()
        _, rest = run(make_connector(), Cursor.from_json(cursor.to_json()))
        got |= {m.id for m in rest}
        lost = wanted - got
        lost_native = sorted(m.native_id for m in full if m.id in lost)
        assert not lost, f"stopping after batch {k} and restarting from its cursor lost {lost_native[:5]}"


def _check_breakage(make_connector: Callable[[], Connector], server: ReplayServer, routes: Iterable[str],
                    json_api: bool) -> None:
    breakages: list[tuple[str, Reply]] = [("403", Reply(403, b"Forbidden", content_type="text/plain"))]
    if json_api:
        breakages.insert(0, ("HTML", Reply(200, HTML_PAGE, content_type="text/html; charset=utf-8")))
    for path in routes:
        original = server.routes[path]
        try:
            for word, reply in breakages:
                server.routes[path] = reply
                with pytest.raises(ListenerError) as info:
                    run(make_connector())
                assert word in str(info.value), (
                    f"{path} answering {word}: error {str(info.value)!r} does not say what came instead")
        finally:
            server.routes[path] = original


def check_contract(make_connector: Callable[[], Connector], server: ReplayServer, *, expect_min: int,
                   json_api: bool = True) -> list[Mention]:
    """Run every contract rule against `server`; returns the mentions of one full run for further checks."""
    probe = make_connector()
    user_agent = probe.http.user_agent
    start = len(server.requests)
    with mock.patch("time.sleep", side_effect=AssertionError("connector called time.sleep; HttpClient paces requests")):
        batches, full = run(probe)
        assert len(full) >= expect_min, f"expected at least {expect_min} mentions, got {len(full)}"
        _check_mentions(probe, batches, Cursor())
        assert all(m.created_at.tzinfo is UTC or m.created_at.utcoffset() == timedelta(0) for m in full)

        _, again = run(make_connector())
        ids_then = {m.native_id: m.id for m in full}
        ids_now = {m.native_id: m.id for m in again}
        assert ids_then == ids_now, "two full runs over the same capture gave different mentions/ids"

        final = batches[-1].cursor if batches else Cursor()
        _check_incremental(make_connector, final, full)
        _check_crash_safety(make_connector, full, len(batches))

    used = list(server.requests[start:])
    assert used, "the connector made no request to the replay server"
    agents = {r.headers.get("user-agent") for r in used}
    assert agents == {user_agent}, f"requests carried User-Agent(s) {agents}, not the HttpClient's {user_agent!r}"
    paths = sorted({r.path for r in used if r.path in server.routes})
    _check_breakage(make_connector, server, paths, json_api)
    return full
