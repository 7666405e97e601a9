from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.http import HttpClient
from tests.support.postgres import pg_cluster, pg_shared_url, pg_url  # noqa: F401 (fixtures)
from tests.support.server import ReplayServer

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"


@pytest.fixture(scope="session")
def corpora() -> Path:
    """../shared/corpora beside the project. Missing corpora fail loudly: tests must not silently pass."""
    if not CORPORA.is_dir():
        pytest.fail(f"shared corpora not found at {CORPORA}")
    return CORPORA


@pytest.fixture
def replay_server() -> Iterator[ReplayServer]:
    server = ReplayServer().start()
    yield server
    server.stop()


@pytest.fixture
def http() -> Iterator[HttpClient]:
    """A polite client with sleeping disabled (fast tests) and a generous rate."""
    client = HttpClient("listener-tests/1.0", default_rate=1000.0, sleep=lambda s: None, timeout=5.0)
    yield client
    client.close()
