"""Scale-out: three `listener daemon` workers on one PostgreSQL store, 50 growing sources, one SIGKILLed
mid-job. The store they end with equals what one process fetching each source stores: same mention
ids and content, each once, every source's counters right, no two runs of a source overlapping, every
mention enriched, `db check` clean — and the dead worker's job was put back in the queue by the others.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from listener.config import load_config
from listener.pipeline import Pipeline, make_http
from storage import Store, jobqueue
from tests.reliability.multiworker_kit import HnService, spawn, write_config
from tests.support.postgres import PgCluster
from tests.support.server import ReplayServer

pytestmark = pytest.mark.postgres
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def worker_id(log: Path) -> int | None:
    """The procrastinate worker id a daemon logged (JSON lines) once its worker registered."""
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and '"worker_id": ' in line:
            found = json.loads(line).get("worker", {}).get("worker_id")
            if found:
                return int(found)
    return None


def scalar(store: Store, sql: str, **params: Any) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


@pytest.fixture
def daemons() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_three_daemons_and_a_sigkill_store_exactly_what_one_process_stores(
    pg_cluster: PgCluster, replay_server: ReplayServer, tmp_path: Path, daemons: list[subprocess.Popen[bytes]]
) -> None:
    url = pg_cluster.new_database()
    service = HnService(replay_server, sources=50, total=60, start=10, step=10, every=1.5)
    config_path = write_config(tmp_path / "listener.toml", url, service.source_toml(every="2s"))
    with Store.open(url) as setup:
        assert jobqueue.apply_schema(setup)
    logs = [tmp_path / f"daemon{i}.log" for i in range(3)]
    daemons.extend(spawn(config_path, log) for log in logs)
    store = Store.open(url, upgrade=False)
    try:
        victim = wait_for("the first daemon's worker to register", lambda: worker_id(logs[0]), 30)
        # a fetch job of the victim whose run has started (the lock guarantees that run is the victim's)
        running = "SELECT j.id FROM procrastinate_jobs j JOIN run r ON r.source = j.args->>'source' " \
                  "AND r.status = 'running' WHERE j.status = 'doing' AND j.worker_id = :w LIMIT 1"
        job = wait_for("a fetch run in progress on the first daemon", lambda: scalar(store, running, w=victim), 30)
        source = scalar(store, "SELECT args->>'source' FROM procrastinate_jobs WHERE id = :j", j=job)
        os.kill(daemons[0].pid, signal.SIGKILL)
        assert daemons[0].wait(10) == -signal.SIGKILL
        assert scalar(store, "SELECT status FROM procrastinate_jobs WHERE id = :j", j=job) == "doing"

        expected = service.expected_ids()
        stored = "SELECT count(*) FROM mention"
        wait_for("every served hit to be stored", lambda: scalar(store, stored) == len(expected) or None, 40)
        unenriched = "SELECT count(*) FROM mention m WHERE NOT EXISTS (SELECT 1 FROM enrichment e " \
                     "WHERE e.mention_id = m.id AND e.stage = 'wordcount')"
        wait_for("every mention to be enriched", lambda: scalar(store, unenriched) == 0 or None, 20)
        wait_for("the killed job to be redone or superseded",
                 lambda: scalar(store, "SELECT status FROM procrastinate_jobs WHERE id = :j", j=job) != "doing"
                 or None, 10)
        for p in daemons[1:]:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(20) for p in daemons[1:]] == [0, 0]

        multi = rows(store, "SELECT id, source, text, created_at FROM mention ORDER BY id")
        states = dict(rows(store, "SELECT source, total_mentions FROM source_state"))
        runs = rows(store, "SELECT source, started_at, finished_at, status, error FROM run "
                           "ORDER BY source, started_at, id")
        pids = rows(store, "SELECT data->>'pid', count(*) FROM enrichment GROUP BY 1")
        assert store.check() == []
    finally:
        store.close()

    # The same sources fetched by one process into a fresh database, now that the service is complete.
    reference_url = pg_cluster.new_database()
    config = load_config(config_path)
    with Store.open(reference_url) as single:
        pipeline = Pipeline(config, single, make_http(config, timeout=5.0))
        assert all(pipeline.run_source(s).status == "ok" for s in config.sources)
        single_rows = rows(single, "SELECT id, source, text, created_at FROM mention ORDER BY id")

    assert {r[0] for r in multi} == expected  # no gap
    assert len(multi) == len({r[0] for r in multi})  # no duplicate
    assert multi == single_rows  # same ids, same content as the single-process result
    assert states == {service.name(i): service.total for i in range(50)}  # no batch counted twice
    killed = [r for r in runs if r[3] == "failed"]
    assert source in {r[0] for r in killed}, killed  # the run the SIGKILL cut short, closed by the next one
    assert all(r[4].startswith("interrupted") for r in killed), killed
    assert all(r[3] == "ok" for r in runs if r not in killed), "only the killed runs may have failed"
    for (src_a, _, end_a, _, _), (src_b, start_b, _, _, _) in itertools.pairwise(runs):
        if src_a == src_b:
            assert end_a is not None and end_a <= start_b, f"overlapping runs of {src_a}"
    assert len(pids) >= 2, pids  # the enrichment backfill was spread over workers
    survivors = "".join(log.read_text(encoding="utf-8") for log in logs[1:])
    assert "put back in the queue" in survivors or "superseded by a queued one" in survivors
