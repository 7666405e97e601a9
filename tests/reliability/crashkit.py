"""Crash-safety kit shared by the test and `benchmarks/soak.py`: a growing, slow service and a SIGKILL loop.

The service publishes Discourse topics (one committed batch per topic) and Hacker News hits (paged,
small batches), answering each request after a short delay, so a `listener fetch` subprocess is killed
while requesting, parsing or committing. After the loop, one fetch runs to completion and every item
ever served must be stored exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from listener.types import mention_id
from tests.support.server import ReplayServer, Reply, Seen

ROOT = Path(__file__).resolve().parents[2]
HN_PAGE = 20


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class GrowingService:
    server: ReplayServer
    delay: float = 0.02
    start: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(days=3))
    topics: dict[int, list[int]] = field(default_factory=dict)
    hits: list[int] = field(default_factory=list)
    counter: int = 0

    def __post_init__(self) -> None:
        self.server.routes["/forum/latest.json"] = self._latest
        self.server.routes["/hn/search_by_date"] = self._hn

    def when(self, n: int) -> datetime:
        return self.start + timedelta(seconds=n)

    def publish(self, topics: int = 8, posts: int = 3, hits: int = 30) -> None:
        for _ in range(topics):
            topic = len(self.topics) + 1
            self.topics[topic] = []
            self.server.routes[f"/forum/t/{topic}.json"] = self._topic
            for _ in range(posts):
                self.counter += 1
                self.topics[topic].append(self.counter)
        for _ in range(hits):
            self.counter += 1
            self.hits.append(self.counter)

    def served_ids(self) -> set[str]:
        forum = {mention_id("forum", str(n)) for posts in self.topics.values() for n in posts}
        return forum | {mention_id("hn", str(n)) for n in self.hits}

    def _latest(self, seen: Seen) -> Reply:
        topics = [
            {
                "id": t,
                "title": f"Topic {t}",
                "last_posted_at": _iso(self.when(p[-1])),
                "created_at": _iso(self.when(p[0])),
            }
            for t, p in self.topics.items()
        ]
        return _json({"topic_list": {"topics": topics[::-1]}}, self.delay)

    def _topic(self, seen: Seen) -> Reply:
        topic = int(seen.path.rsplit("/", 1)[1].split(".")[0])
        posts = [
            {
                "id": n,
                "post_number": i + 1,
                "topic_id": topic,
                "created_at": _iso(self.when(n)),
                "cooked": f"<p>acme post {n}</p>",
                "username": f"u{n}",
            }
            for i, n in enumerate(self.topics[topic])
        ]
        return _json(
            {
                "id": topic,
                "title": f"Topic {topic}",
                "slug": f"t{topic}",
                "post_stream": {"posts": posts, "stream": [p["id"] for p in posts]},
            },
            self.delay,
        )

    def _hn(self, seen: Seen) -> Reply:
        since = int(seen.query.get("numericFilters", ["created_at_i>0"])[0].split(">")[1])
        page = int(seen.query.get("page", ["0"])[0])
        matching = [n for n in reversed(self.hits) if self.when(n).timestamp() > since]
        chunk = matching[page * HN_PAGE : (page + 1) * HN_PAGE]
        hits = [
            {
                "objectID": str(n),
                "created_at_i": int(self.when(n).timestamp()),
                "title": f"acme story {n}",
                "_tags": ["story"],
                "author": f"u{n}",
            }
            for n in chunk
        ]
        return _json({"hits": hits, "page": page, "nbPages": max(1, -(-len(matching) // HN_PAGE))}, self.delay)

    def config(self, database: Path, rate: float = 1000) -> str:
        url = self.server.url
        return (
            f'[storage]\ndatabase = "{database}"\n\n'
            f'[[source]]\nname = "forum"\nkind = "discourse"\nbase_url = "{url}/forum"\nmode = "latest"\n'
            f'match = "all"\nbackfill = "30d"\nrate = {rate}\n\n'
            f'[[source]]\nname = "hn"\nkind = "hackernews"\nbase_url = "{url}/hn"\nqueries = ["acme"]\n'
            f'context = false\nhits_per_page = {HN_PAGE}\nmax_pages = 1000\nbatch_size = 7\nmatch = "all"\nbackfill = "30d"\n'
            f"rate = {rate}\n"
        )


def _json(payload: object, delay: float) -> Reply:
    return Reply(body=json.dumps(payload).encode(), content_type="application/json", delay=delay)


def listener_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "listener.cli", "-c", str(config), *args]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTENER_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def kill_at_random(cmd: list[str], server: ReplayServer, rng: random.Random, window: float) -> str:
    """Start `cmd`, wait for its first request to `server`, SIGKILL it `uniform(0, window)` s later.

    Returns "killed" or "finished" (the process ended before the kill point)."""
    seen = len(server.requests)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while len(server.requests) == seen and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, window))
        if proc.poll() is not None:
            return "finished"
        proc.send_signal(signal.SIGKILL)
        return "killed"
    finally:
        proc.wait(timeout=30)


def kill_after_progress(cmd: list[str], progressed: Callable[[], bool], rng: random.Random, window: float) -> str:
    """Start `cmd`, wait until `progressed()` (e.g. a first batch committed), SIGKILL it `uniform(0, window)` later."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and not progressed() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, window))
        if proc.poll() is not None:
            return "finished"
        proc.send_signal(signal.SIGKILL)
        return "killed"
    finally:
        proc.wait(timeout=30)


def kill_after(cmd: list[str], delay: float) -> str:
    """Start `cmd` and SIGKILL it after `delay` seconds (for work that makes no HTTP requests)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return "finished"
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        return "killed"
    finally:
        proc.wait(timeout=30)


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)


def stored_ids(database: Path) -> list[str]:
    with closing(sqlite3.connect(database, timeout=10)) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM mention")]


def run_statuses(database: Path) -> dict[str, int]:
    with closing(sqlite3.connect(database, timeout=10)) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM run GROUP BY status").fetchall())


def served_from(service: GrowingService) -> set[str]:
    return service.served_ids()


def host_of(url: str) -> str:
    return urlsplit(url).netloc


@dataclass
class CrashReport:
    outcomes: list[str]
    served: int
    stored: int
    duplicates: int
    missing: int
    unexpected: int
    final_rc: int
    check_rc: int
    runs: dict[str, int] = field(default_factory=dict)
    """Run rows by status after the loop: killed runs stay "running" (see docs/reliability.md)."""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.final_rc == 0
            and self.check_rc == 0
            and self.duplicates == 0
            and self.missing == 0
            and self.unexpected == 0
        )


def crash_loop(
    server: ReplayServer, workdir: Path, rng: random.Random, kills: int, *, window: float = 0.6, delay: float = 0.015
) -> CrashReport:
    """Publish, start `listener fetch`, SIGKILL it at a random point; `kills` times; then fetch to completion."""
    service = GrowingService(server, delay=delay)
    database = workdir / "crash.db"
    config = workdir / "listener.toml"
    config.write_text(service.config(database), encoding="utf-8")
    fetch = listener_cmd(config, "fetch")
    outcomes = []
    for _ in range(kills):
        service.publish(topics=6, posts=3, hits=25)
        outcomes.append(kill_at_random(fetch, server, rng, window=window))
    final = run(fetch)
    ids = stored_ids(database)
    served = service.served_ids()
    check = run(listener_cmd(config, "db", "check"))
    return CrashReport(
        outcomes=outcomes,
        served=len(served),
        stored=len(ids),
        duplicates=len(ids) - len(set(ids)),
        missing=len(served - set(ids)),
        unexpected=len(set(ids) - served),
        final_rc=final.returncode,
        check_rc=check.returncode,
        runs=run_statuses(database),
        detail=(final.stdout + final.stderr)[-2000:] + check.stderr[-500:],
    )
