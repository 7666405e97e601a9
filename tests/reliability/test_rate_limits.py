"""Rate limits: a local server timestamps every request; no host sees requests closer than 1/rate.

Within one `listener fetch` process the limit holds, and sources sharing a host share it (the
strictest wins). Across two consecutive processes it does NOT hold today: the limiter's state
(`HttpClient._limiters`) lives in process memory, so a second `listener fetch` started right after
the first sends its first request immediately. That test is a strict xfail; the proposed fix
(persisting each host's next allowed time) is in docs/reliability.md.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.reliability.crashkit import GrowingService, listener_cmd, run
from tests.support.server import ReplayServer, Seen

TOLERANCE = 0.9
"""Measured gaps may be a little shorter than the client's spacing (send vs receive jitter)."""


def gaps(requests: list[Seen]) -> list[float]:
    times = sorted(r.at for r in requests)
    return [b - a for a, b in itertools.pairwise(times)]


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


@pytest.mark.xfail(
    strict=True,
    reason="the rate limiter is per process: a second `listener fetch` right after the first does not know when "
    "the host was last asked (proposed fix in docs/reliability.md)",
)
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
