"""Scale-out kit shared by tests/reliability/test_multiworker.py and benchmarks/scaling.py.

`HnService` serves many Hacker-News-like sources (`/s07/search_by_date`) from one 127.0.0.1 server:
each source publishes its hits over time up to a fixed total, pages of 20, every answer after a
delay. `python -m tests.reliability.multiworker_kit CONFIG` runs one scale-out daemon (PgDaemon)
with a light deterministic enrichment stage instead of the ONNX model, so three of them fit on a
2-core machine; everything else (queue, locks, pipeline, store) is the production code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from enrich.base import Enrichment
from listener.types import Mention, mention_id
from tests.support.server import ReplayServer, Reply, Seen

ROOT = Path(__file__).resolve().parents[2]
PAGE = 20


class WordCountStage:
    """Deterministic stand-in for the model stages; records which process enriched each mention."""

    name = "wordcount"
    version = "wc-1"

    def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
        return [Enrichment(m.id, self.name, self.version, {"words": len(m.body.split()), "pid": os.getpid()})
                for m in mentions]


@dataclass
class HnService:
    """`sources` HN-like sources; each reveals `start` hits at once, then `step` more every `every` s up to `total`."""

    server: ReplayServer
    sources: int = 50
    total: int = 60
    start: int = 20
    step: int = 20
    every: float = 1.0
    delay: float = 0.02
    t0: float | None = None
    """Publishing starts with the first request (daemons take a few seconds to start)."""
    epoch: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(days=2))
    requests: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        for i in range(self.sources):
            self.server.routes[f"/{self.name(i)}/search_by_date"] = self._hits

    @staticmethod
    def name(i: int) -> str:
        return f"s{i:02d}"

    def visible(self) -> int:
        if self.t0 is None:
            self.t0 = time.monotonic()
        grown = self.start + int((time.monotonic() - self.t0) / self.every) * self.step
        return min(self.total, grown)

    def native(self, source: str, n: int) -> str:
        """HN item ids are numbers: source index × 10^6 + n."""
        return str((int(source[1:]) + 1) * 1_000_000 + n)

    def expected_ids(self) -> set[str]:
        return {mention_id(self.name(i), self.native(self.name(i), n))
                for i in range(self.sources) for n in range(1, self.total + 1)}

    def _hits(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests += 1
            visible = self.visible()
        source = seen.path.strip("/").split("/")[0]
        since = int(seen.query.get("numericFilters", ["created_at_i>0"])[0].split(">")[1])
        page = int(seen.query.get("page", ["0"])[0])
        stamp = lambda n: int((self.epoch + timedelta(seconds=n)).timestamp())  # noqa: E731
        matching = [n for n in range(visible, 0, -1) if stamp(n) > since]
        chunk = matching[page * PAGE : (page + 1) * PAGE]
        hits = [{"objectID": self.native(source, n), "created_at_i": stamp(n), "title": f"acme story {n} of {source}",
                 "_tags": ["story"], "author": f"u{n}"} for n in chunk]
        body = {"hits": hits, "page": page, "nbPages": max(1, -(-len(matching) // PAGE))}
        return Reply(body=json.dumps(body).encode(), content_type="application/json", delay=self.delay)

    def source_toml(self, every: str = "2s") -> str:
        return "".join(
            f'[[source]]\nname = "{self.name(i)}"\nkind = "hackernews"\nbase_url = "{self.server.url}/{self.name(i)}"\n'
            f'queries = ["acme"]\ncontext = false\nhits_per_page = {PAGE}\nmax_pages = 1000\nbatch_size = 7\n'
            f'match = "all"\nbackfill = "30d"\nevery = "{every}"\nrate = 1000\n\n'
            for i in range(self.sources)
        )


def write_config(path: Path, url: str, sources: str, *, workers: int = 4, stalled_after: str = "3s") -> Path:
    path.write_text(
        f'[storage]\nurl = "{url}"\n\n[daemon]\nhealth_port = false\nworkers = {workers}\nenrich_every = "1s"\n'
        f'enrich_batch = 16\nstalled_after = "{stalled_after}"\nshutdown_grace = "3s"\ndigest_at = false\n'
        f'jitter = 0\nhttp_retries = 1\nhttp_timeout = "5s"\n\n' + sources,
        encoding="utf-8",
    )
    return path


def spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTENER_")}
    env["PYTHONPATH"] = str(ROOT)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.reliability.multiworker_kit", str(config)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def main(argv: list[str]) -> int:
    from listener.config import load_config
    from listener.daemon_pg import PgDaemon
    from listener.logging_setup import configure
    from storage import Store

    configure("json")
    config = load_config(Path(argv[0]))
    assert config.storage_url is not None
    with Store.open(config.storage_url, upgrade=False) as store:
        return PgDaemon(config, store, stages_factory=lambda: [WordCountStage()]).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
