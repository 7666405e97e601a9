"""Tests for the shared HTTP client (listener/http.py).

Everything talks to a real HTTP server on 127.0.0.1 (`replay_server`, which records every request),
except the https cases, which need `httpx.MockTransport`, and the truncated-body case, which needs
a raw socket that lies about Content-Length. Waits never really happen: the client gets a fake
`sleep`/`clock` pair that advances virtual time and records each requested wait.
"""

from __future__ import annotations

import email.utils
import gzip
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from listener import __version__
from listener.errors import FetchError, RateLimited
from listener.http import MAX_REDIRECTS, HttpClient, Response, build_user_agent, parse_retry_after
from tests.support.server import ReplayServer, Reply, Seen

UA = "listener-tests/1.0 (+https://example.org/listener-tests; ops@example.org)"
MB = 1024 * 1024


# -- helpers -----------------------------------------------------------------------------------


class FakeTime:
    """Virtual monotonic clock: `sleep` records the wait and advances `now` without blocking."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    @property
    def waits(self) -> list[float]:
        """Waits that matter (the tiny spacing of the test's 1000 req/s default rate is left out)."""
        return [round(s, 6) for s in self.sleeps if s >= 0.01]


@pytest.fixture(scope="module")
def _servers() -> Iterator[tuple[ReplayServer, ReplayServer]]:
    """Two real servers (two hosts) shared by the module, reset between tests."""
    a, b = ReplayServer().start(), ReplayServer().start()
    yield a, b
    a.stop()
    b.stop()


def _reset(server: ReplayServer) -> ReplayServer:
    server.routes.clear()
    server.requests.clear()
    server.body_bytes_sent = 0
    return server


@pytest.fixture
def replay_server(_servers: tuple[ReplayServer, ReplayServer]) -> ReplayServer:
    """Same ReplayServer as tests/conftest.py's fixture, shared across this module and reset per test."""
    return _reset(_servers[0])


@pytest.fixture
def other(_servers: tuple[ReplayServer, ReplayServer]) -> ReplayServer:
    """A second host (different port, so a different netloc for rate limits and redirects)."""
    return _reset(_servers[1])


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(fake: FakeTime) -> Iterator[Callable[..., HttpClient]]:
    clients: list[HttpClient] = []

    def make(**kwargs: Any) -> HttpClient:
        options: dict[str, Any] = {
            "timeout": 2.0,
            "default_rate": 1000.0,
            "sleep": fake.sleep,
            "clock": fake.clock,
        }
        options.update(kwargs)
        user_agent = options.pop("user_agent", UA)
        client = HttpClient(user_agent, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def sequence(*replies: Reply) -> Callable[[Seen], Reply]:
    """A handler answering with each reply in turn, then repeating the last one."""
    calls = {"n": 0}

    def handler(_: Seen) -> Reply:
        reply = replies[min(calls["n"], len(replies) - 1)]
        calls["n"] += 1
        return reply

    return handler


def host_of(server: ReplayServer) -> str:
    return server.url.split("://", 1)[1]


OK = Reply(200, b'{"ok": true}', content_type="application/json")


def stamping(fake: FakeTime, stamps: list[tuple[str, float]], label: str = "") -> Callable[[Seen], Reply]:
    """A handler recording the *virtual* time at which each request reached the server."""

    def handler(_: Seen) -> Reply:
        stamps.append((label, fake.now))
        return OK

    return handler


# -- User-Agent --------------------------------------------------------------------------------


def test_build_user_agent_names_product_version_and_contact() -> None:
    ua = build_user_agent("mailto:ops@example.org")
    assert ua.startswith(f"customer-voice-listener/{__version__} (")
    assert "+https://" in ua and ua.endswith("; mailto:ops@example.org)")
    assert build_user_agent().endswith(")") and "None" not in build_user_agent()


def test_user_agent_sent_on_every_request_including_retries_redirects_and_robots(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    replay_server.routes["/old"] = Reply(301, headers={"Location": "/flaky"})
    replay_server.routes["/flaky"] = sequence(Reply(503), OK)
    replay_server.routes["/robots.txt"] = Reply(200, b"User-agent: *\nDisallow:\n", content_type="text/plain")
    client = make_client()

    assert client.get(replay_server.url + "/old").json() == {"ok": True}
    assert client.robots_allowed(replay_server.url + "/anything")

    # /old, /flaky(503) then the retry restarts at /old, /flaky(200), /robots.txt
    assert [r.path for r in replay_server.requests] == ["/old", "/flaky", "/old", "/flaky", "/robots.txt"]
    assert all(r.headers.get("user-agent") == UA for r in replay_server.requests)
    assert all("gzip" in r.headers.get("accept-encoding", "") for r in replay_server.requests)


def test_default_user_agent_is_descriptive(replay_server: ReplayServer, make_client: Callable[..., HttpClient]) -> None:
    replay_server.routes["/x"] = OK
    make_client(user_agent=None).get(replay_server.url + "/x")
    assert replay_server.requests[0].headers["user-agent"] == build_user_agent()


# -- Retry-After, backoff, retries -------------------------------------------------------------


def test_429_with_retry_after_seconds_waits_exactly_that_long(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = sequence(Reply(429, headers={"Retry-After": "3"}), OK)
    client = make_client()

    response = client.get(replay_server.url + "/feed")

    assert response.status == 200
    assert fake.waits == [3.0]
    assert len(replay_server.hits("/feed")) == 2
    stats = client.stats[host_of(replay_server)]
    assert (stats.rate_limited, stats.retries, stats.requests) == (1, 1, 2)


def test_429_with_retry_after_http_date(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    replay_server.routes["/feed"] = sequence(Reply(429, headers={"Retry-After": when}), OK)

    assert make_client().get(replay_server.url + "/feed").status == 200

    assert len(fake.waits) == 1
    assert 28.0 <= fake.waits[0] <= 30.0  # HTTP dates have 1 s resolution


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 120, usegmt=True), now=now) == pytest.approx(120, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 120, usegmt=True), now=now) == 0.0


def test_429_without_retry_after_backs_off_exponentially_with_jitter(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = sequence(Reply(429), Reply(429), Reply(429), OK)

    assert make_client(backoff_base=1.0, retries=4).get(replay_server.url + "/feed").status == 200

    w = fake.waits
    assert len(w) == 3
    # base * 2**attempt, jittered into [half, full]
    assert 0.5 <= w[0] <= 1.0 and 1.0 <= w[1] <= 2.0 and 2.0 <= w[2] <= 4.0


def test_backoff_jitter_bounds_and_cap(
    monkeypatch: pytest.MonkeyPatch, replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    monkeypatch.setattr("listener.http.random.uniform", lambda lo, hi: hi)  # always the full wait
    replay_server.routes["/feed"] = sequence(Reply(500), Reply(500), Reply(500), Reply(500), OK)

    make_client(backoff_base=2.0, backoff_max=5.0, retries=4).get(replay_server.url + "/feed")

    assert fake.waits == [2.0, 4.0, 5.0, 5.0]  # doubling, capped at backoff_max


def test_503_burst_then_success(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = sequence(Reply(503), Reply(503), Reply(503), Reply(200, b"<rss/>"))
    client = make_client(retries=4)

    response = client.get(replay_server.url + "/feed")

    assert response.content == b"<rss/>"
    assert len(replay_server.hits("/feed")) == 4
    assert len(fake.waits) == 3
    assert client.stats[host_of(replay_server)].retries == 3


def test_retry_after_is_honoured_on_503_too(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = sequence(Reply(503, headers={"Retry-After": "2"}), OK)
    client = make_client()
    assert client.get(replay_server.url + "/feed").status == 200
    assert fake.waits == [2.0]
    assert client.stats[host_of(replay_server)].rate_limited == 0  # only 429s count as rate limiting


def test_unparseable_retry_after_falls_back_to_backoff(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = sequence(Reply(429, headers={"Retry-After": "in a bit"}), OK)
    assert make_client(backoff_base=1.0).get(replay_server.url + "/feed").status == 200
    assert len(fake.waits) == 1 and 0.5 <= fake.waits[0] <= 1.0


@pytest.mark.parametrize("status", [408, 425, 500, 502, 503, 504])
def test_transient_statuses_are_retried(
    status: int, replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    replay_server.routes["/feed"] = sequence(Reply(status), OK)
    assert make_client().get(replay_server.url + "/feed").status == 200
    assert len(replay_server.hits("/feed")) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 501])
def test_permanent_errors_fail_at_once_with_the_status(
    status: int, replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = Reply(status, b"nope", content_type="text/plain")
    with pytest.raises(FetchError) as info:
        make_client().get(replay_server.url + "/feed")
    assert not isinstance(info.value, RateLimited)
    assert info.value.status == status and f"HTTP {status}" in str(info.value)
    assert len(replay_server.hits("/feed")) == 1 and fake.waits == []


def test_5xx_retries_exhausted_raise_fetch_error_with_status(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = Reply(502)
    with pytest.raises(FetchError) as info:
        make_client(retries=2).get(replay_server.url + "/feed")
    assert not isinstance(info.value, RateLimited)
    assert info.value.status == 502
    assert "HTTP 502 after 3 attempts" in str(info.value)
    assert info.value.url == replay_server.url + "/feed"
    assert len(replay_server.hits("/feed")) == 3 and len(fake.waits) == 2


def test_429_retries_exhausted_raise_rate_limited(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = Reply(429, headers={"Retry-After": "2"})
    client = make_client(retries=2)
    with pytest.raises(RateLimited) as info:
        client.get(replay_server.url + "/feed")
    assert info.value.status == 429 and info.value.retry_after == 2.0
    assert "429" in str(info.value)
    assert len(replay_server.hits("/feed")) == 3
    assert fake.waits == [2.0, 2.0]
    assert client.stats[host_of(replay_server)].rate_limited == 3


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(429, "3600"), (503, "86400"), (429, "__date__")],
)
def test_retry_after_longer_than_max_raises_rate_limited_without_waiting(
    status: int, retry_after: str, replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    if retry_after == "__date__":
        retry_after = email.utils.formatdate(time.time() + 3 * 3600, usegmt=True)
    replay_server.routes["/feed"] = Reply(status, headers={"Retry-After": retry_after})
    with pytest.raises(RateLimited) as info:
        make_client(max_retry_after=300.0).get(replay_server.url + "/feed")
    assert info.value.status == status
    assert info.value.retry_after is not None and info.value.retry_after > 300
    assert "retry after" in str(info.value)
    assert len(replay_server.hits("/feed")) == 1 and fake.waits == []


def test_retry_after_holds_the_retry_of_that_host(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    stamps: list[tuple[str, float]] = []
    replay_server.routes["/a"] = sequence(Reply(429, headers={"Retry-After": "10"}), OK)
    replay_server.routes["/b"] = stamping(fake, stamps)
    client = make_client(retries=1)
    client.get(replay_server.url + "/a")
    assert fake.waits == [10.0]
    t0 = fake.now
    client.get(replay_server.url + "/b")  # the deferral was consumed by the retry: no further wait
    assert fake.waits == [10.0] and stamps[0][1] - t0 < 0.01


def test_retry_after_given_when_giving_up_still_holds_the_host(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/a"] = Reply(429, headers={"Retry-After": "10"})
    replay_server.routes["/b"] = OK
    client = make_client(retries=0)
    with pytest.raises(RateLimited):
        client.get(replay_server.url + "/a")
    client.get(replay_server.url + "/b")  # another source, same host
    assert fake.waits == [10.0]


# -- rate limiting and defer --------------------------------------------------------------------


def test_same_host_is_spaced_by_the_rate_in_virtual_time(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    stamps: list[tuple[str, float]] = []
    replay_server.routes["/feed"] = stamping(fake, stamps)
    client = make_client(default_rate=1000.0)
    client.set_rate(host_of(replay_server), 2.0)

    for _ in range(3):
        client.get(replay_server.url + "/feed")

    assert fake.sleeps == [0.5, 0.5]
    times = [t for _, t in stamps]
    assert times[1] - times[0] >= 0.5 and times[2] - times[1] >= 0.5


def test_default_rate_applies_to_unconfigured_hosts(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = OK
    client = make_client(default_rate=4.0)
    client.get(replay_server.url + "/feed")
    client.get(replay_server.url + "/feed")
    assert fake.sleeps == [0.25]


def test_strictest_rate_wins_when_sources_share_a_host(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = OK
    client = make_client()
    host = host_of(replay_server)
    client.set_rate(host, 2.0)
    client.set_rate(host, 10.0)  # a laxer source must not loosen the limit
    client.get(replay_server.url + "/feed")
    client.get(replay_server.url + "/feed")
    assert fake.sleeps == [0.5]


def test_different_hosts_are_not_held_by_each_other(
    replay_server: ReplayServer, other: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    stamps: list[tuple[str, float]] = []
    replay_server.routes["/feed"] = stamping(fake, stamps, "a")
    other.routes["/feed"] = stamping(fake, stamps, "b")
    client = make_client()
    client.set_rate(host_of(replay_server), 2.0)
    client.set_rate(host_of(other), 2.0)

    for url in (replay_server.url, other.url, replay_server.url, other.url):
        client.get(url + "/feed")

    t0 = stamps[0][1]
    # b's first request is not delayed by a; a's second waits 0.5 s for a; b's second is then already due
    assert stamps == [("a", t0), ("b", t0), ("a", t0 + 0.5), ("b", t0 + 0.5)]
    assert fake.sleeps == [0.5]


def test_defer_holds_the_host_for_the_given_seconds(
    replay_server: ReplayServer, other: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/feed"] = OK
    other.routes["/feed"] = OK
    client = make_client()
    client.defer(host_of(replay_server), 7.0)

    client.get(other.url + "/feed")
    assert fake.waits == []  # another host is not held
    client.get(replay_server.url + "/feed")
    assert fake.waits == [7.0]
    client.defer(host_of(replay_server), 1.0)
    client.defer(host_of(replay_server), 0.2)  # a shorter defer never shortens a longer one
    client.get(replay_server.url + "/feed")
    assert fake.waits == [7.0, 1.0]


# -- timeouts and connection errors ------------------------------------------------------------


def test_timeout_is_retried_then_fetch_error(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], fake: FakeTime
) -> None:
    replay_server.routes["/slow"] = Reply(200, b"late", delay=0.5)
    client = make_client(timeout=0.1, retries=2)
    started = time.monotonic()

    with pytest.raises(FetchError) as info:
        client.get(replay_server.url + "/slow")

    assert time.monotonic() - started < 3.0
    assert "Timeout" in str(info.value) and "after 3 attempts" in str(info.value)
    assert info.value.status is None
    assert len(replay_server.hits("/slow")) == 3
    assert len(fake.waits) == 2 and 0.5 <= fake.waits[0] <= 1.0 and 1.0 <= fake.waits[1] <= 2.0
    assert client.stats[host_of(replay_server)].errors == 3


def test_timeout_then_success(replay_server: ReplayServer, make_client: Callable[..., HttpClient]) -> None:
    replay_server.routes["/slow"] = sequence(Reply(200, b"late", delay=0.5), Reply(200, b"on time"))
    response = make_client(timeout=0.1, retries=2).get(replay_server.url + "/slow")
    assert response.content == b"on time"


def test_connection_refused_is_retried_then_fetch_error(make_client: Callable[..., HttpClient], fake: FakeTime) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError) as info:
        make_client(retries=3).get(f"http://127.0.0.1:{port}/feed")
    assert "ConnectError" in str(info.value) and "after 4 attempts" in str(info.value)
    assert len(fake.waits) == 3


# -- truncated bodies (raw socket: Content-Length larger than what is sent) --------------------


class LyingServer:
    """Answers each connection with `replies[i]` raw bytes (last one repeated) and closes it."""

    def __init__(self, *replies: bytes) -> None:
        self.replies = replies
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                reply = self.replies[min(self.connections, len(self.replies) - 1)]
                self.connections += 1
                conn.sendall(reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


TRUNCATED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 5000\r\n"
    b"Connection: close\r\n\r\n<?xml version='1.0'?><rss><channel><title>cut he"
)
COMPLETE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nwhole"


def test_truncated_body_is_a_fetch_error_never_a_partial_response(make_client: Callable[..., HttpClient]) -> None:
    server = LyingServer(TRUNCATED)
    try:
        with pytest.raises(FetchError) as info:
            make_client(retries=1).get(server.url + "/feed")
        message = str(info.value)
        assert "truncated" in message or "complete message body" in message
        assert "expected 5000" in message
    finally:
        server.close()


def test_truncated_body_is_retried_like_a_connection_error(make_client: Callable[..., HttpClient]) -> None:
    server = LyingServer(TRUNCATED, COMPLETE)
    try:
        assert make_client(retries=2).get(server.url + "/feed").content == b"whole"
        assert server.connections == 2
    finally:
        server.close()


# -- size cap (incl. decompressed) --------------------------------------------------------------


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """50 MB of zeros, gzip'd (about 50 KB on the wire)."""
    return gzip.compress(bytes(50 * MB), compresslevel=6)


def test_gzip_bomb_is_refused_naming_the_cap(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], gzip_bomb: bytes
) -> None:
    assert len(gzip_bomb) < 200 * 1024
    replay_server.routes["/bomb"] = Reply(200, gzip_bomb, headers={"Content-Encoding": "gzip"}, content_type="text/xml")
    with pytest.raises(FetchError) as info:
        make_client(max_bytes=1 * MB).get(replay_server.url + "/bomb")
    assert f"{1 * MB}-byte cap" in str(info.value)
    assert len(replay_server.hits("/bomb")) == 1  # a policy refusal is not retried


def test_gzip_body_under_the_cap_is_decoded(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    body = b"<rss>" + b"x" * 100_000 + b"</rss>"
    replay_server.routes["/feed"] = Reply(200, body, gzip=True, content_type="application/rss+xml")
    response = make_client(max_bytes=1 * MB).get(replay_server.url + "/feed")
    assert response.content == body


def test_corrupt_gzip_is_a_fetch_error(replay_server: ReplayServer, make_client: Callable[..., HttpClient]) -> None:
    replay_server.routes["/feed"] = Reply(200, b"this is not gzip at all", headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match="corrupt compressed body"):
        make_client().get(replay_server.url + "/feed")


def test_body_bytes_are_counted_per_host(replay_server: ReplayServer, make_client: Callable[..., HttpClient]) -> None:
    replay_server.routes["/feed"] = Reply(200, bytes(1234))
    client = make_client()
    client.get(replay_server.url + "/feed")
    client.get(replay_server.url + "/feed")
    stats = client.stats[host_of(replay_server)]
    assert (stats.requests, stats.bytes) == (2, 2468)


def test_declared_content_length_over_the_cap_is_refused(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    replay_server.routes["/big"] = Reply(200, bytes(2 * MB))
    with pytest.raises(FetchError) as info:
        make_client(max_bytes=1 * MB).get(replay_server.url + "/big")
    assert f"{2 * MB} bytes exceeds the {1 * MB}-byte cap" in str(info.value)


def test_per_call_cap_overrides_the_client_cap(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    replay_server.routes["/feed"] = Reply(200, bytes(2048))
    client = make_client(max_bytes=1 * MB)
    with pytest.raises(FetchError, match="1024-byte cap"):
        client.get(replay_server.url + "/feed", max_bytes=1024)
    assert len(client.get(replay_server.url + "/feed").content) == 2048


def test_chunked_body_without_length_is_cut_off_while_streaming(make_client: Callable[..., HttpClient]) -> None:
    produced = {"chunks": 0}

    def endless() -> Iterator[bytes]:
        while produced["chunks"] < 10_000:  # 640 MB if nobody stops reading
            produced["chunks"] += 1
            yield bytes(64 * 1024)

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=endless()))
    with pytest.raises(FetchError, match="cap"):
        make_client(transport=transport, max_bytes=1 * MB).get("https://api.example/stream")
    assert produced["chunks"] <= 1 * MB // (64 * 1024) + 2


# -- JSON --------------------------------------------------------------------------------------


def test_json_parses_json(replay_server: ReplayServer, make_client: Callable[..., HttpClient]) -> None:
    replay_server.routes["/api"] = Reply(200, '{"items": ["café"]}'.encode(), content_type="application/json")
    assert make_client().get(replay_server.url + "/api").json() == {"items": ["café"]}


def test_json_on_html_login_page_says_html_came_instead(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    page = b"\n  <!DOCTYPE html><html><head><title>Sign in</title></head><body>Please log in</body></html>"
    replay_server.routes["/api"] = Reply(200, page, content_type="text/html; charset=utf-8")
    response = make_client().get(replay_server.url + "/api")
    with pytest.raises(FetchError) as info:
        response.json()
    message = str(info.value)
    assert "expected JSON but got HTML" in message and "<!DOCTYPE html>" in message
    assert info.value.status == 200 and info.value.url == replay_server.url + "/api"


def test_json_with_html_despite_json_content_type_still_says_html() -> None:
    response = Response("https://api.example/x", 200, {"content-type": "application/json"}, b"<html>oops</html>")
    with pytest.raises(FetchError, match="got HTML"):
        response.json()


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/plain", b"rate limit exceeded", "text/plain"),
        ("application/json", b'{"items": [1, 2', "application/json"),  # truncated JSON
        ("", b"\xff\xfe\x00garbage", "non-JSON"),
    ],
)
def test_json_failure_names_what_came(content_type: str, body: bytes, expected: str) -> None:
    headers = {"content-type": content_type} if content_type else {}
    with pytest.raises(FetchError) as info:
        Response("https://api.example/x", 200, headers, body).json()
    assert f"expected JSON but got {expected}" in str(info.value)


def test_text_honours_charset() -> None:
    response = Response("u", 200, {"content-type": "text/plain; charset=ISO-8859-1"}, "Grüße".encode("latin-1"))
    assert response.text == "Grüße"
    assert Response("u", 200, {"content-type": "text/plain; charset=bogus"}, "é".encode()).text == "é"


# -- redirects ---------------------------------------------------------------------------------


def test_redirect_to_another_host_is_followed(
    replay_server: ReplayServer, other: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    other.routes["/new/feed.xml"] = Reply(200, b"<rss/>", content_type="application/rss+xml")
    replay_server.routes["/feed"] = Reply(301, headers={"Location": other.url + "/new/feed.xml"})
    client = make_client()

    response = client.get(replay_server.url + "/feed", params={"page": "1"})

    assert response.content == b"<rss/>" and response.url == other.url + "/new/feed.xml"
    assert replay_server.hits("/feed")[0].query == {"page": ["1"]}
    assert other.hits("/new/feed.xml")[0].query == {}  # params are not re-appended to the new location
    assert other.requests[0].headers["user-agent"] == UA
    assert client.stats[host_of(replay_server)].requests == 1 and client.stats[host_of(other)].requests == 1


def test_relative_redirect_chain_of_five_is_followed(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    for i in range(MAX_REDIRECTS):
        replay_server.routes[f"/r{i}"] = Reply(302 if i % 2 else 307, headers={"Location": f"/r{i + 1}"})
    replay_server.routes[f"/r{MAX_REDIRECTS}"] = Reply(200, b"end")
    assert make_client().get(replay_server.url + "/r0").content == b"end"
    assert MAX_REDIRECTS == 5


def test_more_than_five_redirects_fail(replay_server: ReplayServer, make_client: Callable[..., HttpClient]) -> None:
    replay_server.routes["/loop"] = Reply(302, headers={"Location": "/loop"})
    with pytest.raises(FetchError, match="more than 5 redirects"):
        make_client().get(replay_server.url + "/loop")
    assert len(replay_server.hits("/loop")) == MAX_REDIRECTS + 1


def test_redirect_without_location_fails(replay_server: ReplayServer, make_client: Callable[..., HttpClient]) -> None:
    replay_server.routes["/moved"] = Reply(301)
    with pytest.raises(FetchError, match="without Location"):
        make_client().get(replay_server.url + "/moved")


def _mock(routes: dict[str, httpx.Response], seen: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return routes.get(str(request.url), httpx.Response(404))

    return httpx.MockTransport(handler)


def test_https_to_http_downgrade_is_refused(make_client: Callable[..., HttpClient]) -> None:
    seen: list[str] = []
    routes = {
        "https://feeds.example/a.xml": httpx.Response(301, headers={"Location": "http://feeds.example/a.xml"}),
        "http://feeds.example/a.xml": httpx.Response(200, content=b"<rss/>"),
    }
    with pytest.raises(FetchError) as info:
        make_client(transport=_mock(routes, seen)).get("https://feeds.example/a.xml")
    assert "refused redirect from https to http" in str(info.value)
    assert seen == ["https://feeds.example/a.xml"]  # the plain-http URL was never requested


def test_https_redirect_to_another_https_host_is_followed(make_client: Callable[..., HttpClient]) -> None:
    seen: list[str] = []
    routes = {
        "https://old.example/feed": httpx.Response(308, headers={"Location": "https://new.example/feed"}),
        "https://new.example/feed": httpx.Response(200, content=b"<feed/>"),
    }
    response = make_client(transport=_mock(routes, seen)).get("https://old.example/feed")
    assert response.content == b"<feed/>" and seen == ["https://old.example/feed", "https://new.example/feed"]


def test_http_to_https_upgrade_is_allowed(make_client: Callable[..., HttpClient]) -> None:
    seen: list[str] = []
    routes = {
        "http://feeds.example/a": httpx.Response(301, headers={"Location": "https://feeds.example/a"}),
        "https://feeds.example/a": httpx.Response(200, content=b"ok"),
    }
    assert make_client(transport=_mock(routes, seen)).get("http://feeds.example/a").content == b"ok"


def test_credentials_are_not_forwarded_to_another_host(make_client: Callable[..., HttpClient]) -> None:
    captured: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        if request.url.host == "api.example":
            return httpx.Response(302, headers={"Location": "https://elsewhere.example/x"})
        return httpx.Response(200, content=b"{}")

    client = make_client(transport=httpx.MockTransport(handler))
    client.get("https://api.example/x", headers={"Authorization": "Bearer s3cret", "Cookie": "session=1"})
    assert captured[0].headers["authorization"] == "Bearer s3cret"
    assert "authorization" not in captured[1].headers and "cookie" not in captured[1].headers


# -- conditional GET ---------------------------------------------------------------------------


def test_etag_304_is_not_modified_and_costs_no_body(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    replay_server.routes["/feed"] = Reply(200, b"<rss>" + bytes(10_000) + b"</rss>", etag='"v1"')
    client = make_client()
    first = client.get(replay_server.url + "/feed")
    assert first.status == 200 and first.etag == '"v1"' and not first.not_modified
    sent_before = replay_server.body_bytes_sent

    second = client.get(replay_server.url + "/feed", etag=first.etag)

    assert second.not_modified and second.status == 304 and second.content == b""
    assert replay_server.body_bytes_sent == sent_before  # 0 body bytes for the 304
    assert replay_server.hits("/feed")[1].headers["if-none-match"] == '"v1"'
    assert client.stats[host_of(replay_server)].not_modified == 1


def test_if_modified_since_304(replay_server: ReplayServer, make_client: Callable[..., HttpClient]) -> None:
    stamp = "Tue, 24 Nov 2026 10:00:00 GMT"

    def handler(seen: Seen) -> Reply:
        if seen.headers.get("if-modified-since") == stamp:
            return Reply(304)
        return Reply(200, b"<feed/>", headers={"Last-Modified": stamp})

    replay_server.routes["/feed"] = handler
    client = make_client()
    first = client.get(replay_server.url + "/feed")
    assert first.last_modified == stamp
    second = client.get(replay_server.url + "/feed", last_modified=first.last_modified)
    assert second.not_modified and second.content == b""


def test_conditional_headers_are_sent(replay_server: ReplayServer, make_client: Callable[..., HttpClient]) -> None:
    replay_server.routes["/feed"] = OK
    make_client().get(replay_server.url + "/feed", etag='W/"abc"', last_modified="Tue, 24 Nov 2026 10:00:00 GMT")
    headers = replay_server.requests[0].headers
    assert headers["if-none-match"] == 'W/"abc"'
    assert headers["if-modified-since"] == "Tue, 24 Nov 2026 10:00:00 GMT"


def test_unconditional_get_sends_no_validators(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    replay_server.routes["/feed"] = OK
    make_client().get(replay_server.url + "/feed")
    assert "if-none-match" not in replay_server.requests[0].headers
    assert "if-modified-since" not in replay_server.requests[0].headers


# -- robots.txt --------------------------------------------------------------------------------


def test_missing_robots_txt_allows_everything(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    client = make_client()  # no /robots.txt route: the server answers 404
    assert client.robots_allowed(replay_server.url + "/forum/t/123")
    assert client.robots_allowed(replay_server.url + "/admin")
    assert len(replay_server.hits("/robots.txt")) == 1  # fetched once per origin, then cached


ROBOTS = b"""\
User-agent: customer-voice-listener
Disallow: /private/

User-agent: listener-tests
Disallow: /search

User-agent: *
Disallow: /admin
"""


def test_robots_disallow_for_our_user_agent_is_honoured(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    replay_server.routes["/robots.txt"] = Reply(200, ROBOTS, content_type="text/plain")
    ours = make_client(user_agent=None)  # the default descriptive UA: customer-voice-listener/…
    assert not ours.robots_allowed(replay_server.url + "/private/thread/1")
    assert ours.robots_allowed(replay_server.url + "/public/thread/1")
    assert ours.robots_allowed(replay_server.url + "/admin")  # our own group replaces the * group

    tests_ua = make_client()  # "listener-tests/1.0 (…)" matches the listener-tests group
    assert not tests_ua.robots_allowed(replay_server.url + "/search?q=acme")
    assert tests_ua.robots_allowed(replay_server.url + "/private/thread/1")


def test_robots_wildcard_disallow_applies_to_us(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    replay_server.routes["/robots.txt"] = Reply(200, b"User-agent: *\nDisallow: /\n", content_type="text/plain")
    assert not make_client().robots_allowed(replay_server.url + "/feed.xml")


def test_robots_server_error_is_not_taken_as_permission(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    replay_server.routes["/robots.txt"] = Reply(500)
    with pytest.raises(FetchError) as info:
        make_client(retries=1).robots_allowed(replay_server.url + "/page")
    assert info.value.status == 500


def test_gzip_bomb_is_refused_without_inflating_far_past_the_cap(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient], gzip_bomb: bytes
) -> None:
    replay_server.routes["/bomb"] = Reply(200, gzip_bomb, headers={"Content-Encoding": "gzip"})
    client = make_client(max_bytes=1 * MB)
    tracemalloc.start()
    try:
        with pytest.raises(FetchError, match="cap"):
            client.get(replay_server.url + "/bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB, f"peak {peak / MB:.0f} MB while enforcing a 1 MB cap"


def test_robots_longest_match_wins_rfc_9309(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    robots = b"User-agent: *\nDisallow: /forum/\nAllow: /forum/t/\n"  # first-match parsers get /forum/t/ wrong
    replay_server.routes["/robots.txt"] = Reply(200, robots, content_type="text/plain")
    client = make_client()
    assert client.robots_allowed(replay_server.url + "/forum/t/sync-conflicts/1412")
    assert not client.robots_allowed(replay_server.url + "/forum/admin")


def test_robots_group_names_match_case_insensitively(
    replay_server: ReplayServer, make_client: Callable[..., HttpClient]
) -> None:
    robots = b"User-agent: Customer-Voice-Listener\nDisallow: /\n"
    replay_server.routes["/robots.txt"] = Reply(200, robots, content_type="text/plain")
    assert not make_client(user_agent=None).robots_allowed(replay_server.url + "/feed.xml")
