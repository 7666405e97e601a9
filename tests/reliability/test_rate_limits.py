"""Rate limits: a local server timestamps every request; no host sees requests closer than 1/rate.

Within one `listener fetch` process the limit holds, and sources sharing a host share it (the
strictest wins). Across processes it holds because each host's next request time and any
Retry-After deferral are booked in the database (`Store.host_slots()`): consecutive processes,
concurrent processes on one SQLite file and on one PostgreSQL database, and a Retry-After told to
one process binds the others.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability.crashkit import ROOT, GrowingService, child_env, listener_cmd, run
from tests.support.postgres import BACKENDS
from tests.support.server import ReplayServer, Reply, Seen

TOLERANCE = 0.9
"""Measured gaps may be a little shorter than the client's spacing (send vs receive jitter)."""
JITTER = 0.5
"""With two processes on a loaded 2-core machine one request can leave (or be timestamped by the server's
new connection thread) a few hundred ms after its slot, shortening that one gap; a rate overrun would
shorten every gap and the run's average spacing, which is held to TOLERANCE."""


def gaps(requests: list[Seen]) -> list[float]:
    times = sorted(r.at for r in requests)
    return [b - a for a, b in itertools.pairwise(times)]


def write_config(service: GrowingService, tmp_path: Path, db: str, rate: float, contact: str) -> Path:
    """A config whose User-Agent names `contact`, so the server can tell the processes apart."""
    path = tmp_path / f"{contact}.toml"
    text = service.config(db, rate=rate)  # type: ignore[arg-type]  # a path or a PostgreSQL URL
    if "://" in db:
        text = text.replace(f'database = "{db}"', f'url = "{db}"')  # [storage] url: a server database
    path.write_text(f'[listener]\ncontact = "{contact}@example.com"\n\n{text}', encoding="utf-8")
    return path


def start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str]) -> None:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out


def test_one_process_never_exceeds_the_configured_rate(replay_server: ReplayServer, tmp_path: Path) -> None:
    rate = 8.0
    service = GrowingService(replay_server, delay=0.0)
    service.publish(topics=6, posts=2, hits=45)  # forum: 7 requests; hn: 3 pages; one shared host
    config = tmp_path / "listener.toml"
    config.write_text(service.config(tmp_path / "rate.db", rate=rate), encoding="utf-8")
    done = run(listener_cmd(config, "fetch"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(replay_server.requests) >= 10
    assert min(gaps(replay_server.requests)) >= TOLERANCE / rate, sorted(gaps(replay_server.requests))[:3]


def test_two_consecutive_processes_never_exceed_the_configured_rate(
    replay_server: ReplayServer, tmp_path: Path
) -> None:
    rate = 0.2  # one request per 5 s: far longer than a process start, so the outcome is deterministic
    service = GrowingService(replay_server, delay=0.0)
    config = tmp_path / "listener.toml"
    config.write_text(service.config(tmp_path / "rate.db", rate=rate), encoding="utf-8")
    fetch = listener_cmd(config, "fetch", "-s", "forum")  # empty forum: exactly one request per run
    for _ in range(2):
        done = run(fetch)
        assert done.returncode == 0, done.stdout + done.stderr
    assert len(replay_server.requests) == 2
    assert min(gaps(replay_server.requests)) >= TOLERANCE / rate, gaps(replay_server.requests)


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_processes_on_one_database_never_exceed_the_configured_rate(
    replay_server: ReplayServer, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    rate = 2.0  # 8 requests per process alone take 3.5 s, so two processes started together overlap
    service = GrowingService(replay_server, delay=0.0)
    service.publish(topics=7, posts=1, hits=0)  # forum: latest + 7 topics
    db = str(request.getfixturevalue("pg_url")) if backend == "postgres" else str(tmp_path / "rate.db")
    configs = [write_config(service, tmp_path, db, rate, name) for name in ("one", "two")]
    procs = [start(listener_cmd(config, "fetch", "-s", "forum")) for config in configs]
    for proc in procs:
        finish(proc)
    by_process = {
        name: [r.at for r in replay_server.requests if f"{name}@" in r.headers.get("user-agent", "")]
        for name in ("one", "two")
    }
    assert all(by_process.values()), by_process
    first_end = min(max(times) for times in by_process.values())
    last_start = max(min(times) for times in by_process.values())
    assert last_start < first_end, "the two processes did not overlap: nothing concurrent was tested"
    times = sorted(r.at for r in replay_server.requests)
    assert (times[-1] - times[0]) / (len(times) - 1) >= TOLERANCE / rate, gaps(replay_server.requests)
    assert min(gaps(replay_server.requests)) >= JITTER / rate, sorted(gaps(replay_server.requests))[:3]


def test_a_retry_after_told_to_one_process_binds_the_next(replay_server: ReplayServer, tmp_path: Path) -> None:
    retry_after = 6.0  # longer than a process start: without sharing, the second process would ask at once
    service = GrowingService(replay_server, delay=0.0)
    healthy = replay_server.routes["/forum/latest.json"]
    told: list[float] = []

    def first_throttled(seen: Seen) -> Reply:
        if not told:
            told.append(seen.at)
            return Reply(429, headers={"Retry-After": str(int(retry_after))})
        return healthy(seen)  # type: ignore[operator]

    replay_server.routes["/forum/latest.json"] = first_throttled
    db = str(tmp_path / "rate.db")
    first = start(listener_cmd(write_config(service, tmp_path, db, 1000.0, "one"), "fetch", "-s", "forum"))
    deadline = time.monotonic() + 60
    while not told and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.01)
    assert told, "the first process never asked"
    time.sleep(0.3)  # let it book the deferral
    second = start(listener_cmd(write_config(service, tmp_path, db, 1000.0, "two"), "fetch", "-s", "forum"))
    finish(first)
    finish(second)
    later = [r for r in replay_server.requests if r.at > told[0]]
    assert {("one" if "one@" in r.headers["user-agent"] else "two") for r in later} == {"one", "two"}
    assert min(r.at for r in later) - told[0] >= TOLERANCE * retry_after, [r.at - told[0] for r in later]
