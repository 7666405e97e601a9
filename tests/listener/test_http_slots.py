"""HttpClient with shared request slots: two clients on one store behave like two processes on one database.

Each client has its own `MemorySlots` unless given `slots=`; with the store's (`Store.host_slots()`)
the rate and any Retry-After bind every client using that database. Waits are virtual: the clients
share one fake clock and record the sleeps they were asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from listener.config import Config
from listener.http import HttpClient, SlotReserver
from listener.pipeline import Pipeline, make_http
from storage import Store

HOST = "api.example.com"
URL = f"https://{HOST}/items"


class VirtualTime:
    def __init__(self) -> None:
        self.now = 5_000.0

    def clock(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "slots.db") as s:
        yield s


def client(t: VirtualTime, sleeps: list[float], slots: SlotReserver | None, replies: list[int]) -> HttpClient:
    """A client answering with `replies` in turn (then 200); 429s carry `Retry-After: 7`."""

    def handler(request: httpx.Request) -> httpx.Response:
        status = replies.pop(0) if replies else 200
        return httpx.Response(status, headers={"Retry-After": "7"} if status == 429 else {}, content=b"{}")

    def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 6))
        t.now += seconds

    http = HttpClient("slots-test/1.0", transport=httpx.MockTransport(handler), sleep=sleep, clock=t.clock, slots=slots)
    http.set_rate(HOST, 0.5)  # one request per 2 s
    return http


def test_two_clients_on_one_store_share_the_host_rate(store: Store) -> None:
    t = VirtualTime()
    waits_a: list[float] = []
    waits_b: list[float] = []
    a = client(t, waits_a, store.host_slots(), [])
    b = client(t, waits_b, store.host_slots(), [])
    a.get(URL)
    b.get(URL)  # the other "process" asks right away: it waits for a's interval
    a.get(URL)
    assert (waits_a, waits_b) == ([2.0], [2.0])


def test_clients_without_a_store_keep_their_own_rate() -> None:
    """The in-memory default: what a library user or a test on a virtual clock gets."""
    t = VirtualTime()
    waits_a: list[float] = []
    waits_b: list[float] = []
    a, b = client(t, waits_a, None, []), client(t, waits_b, None, [])
    a.get(URL)
    b.get(URL)
    a.get(URL)
    assert (waits_a, waits_b) == ([2.0], [])


def test_a_retry_after_seen_by_one_client_holds_the_other(store: Store) -> None:
    t = VirtualTime()
    waits_a: list[float] = []
    waits_b: list[float] = []
    a = client(t, waits_a, store.host_slots(), [429])
    b = client(t, waits_b, store.host_slots(), [])
    a.retries = 0  # a gives up at once, leaving the host deferred for the server's 7 s
    with pytest.raises(Exception, match="429"):
        a.get(URL)
    b.get(URL)
    assert waits_b == [7.0]


def test_make_http_and_pipeline_book_slots_in_the_store_on_the_wall_clock(store: Store) -> None:
    config = Config(path=None)
    assert make_http(config, store).shares_slots
    assert not make_http(config).shares_slots
    assert Pipeline(config, store).http.shares_slots
    http = make_http(config, store, transport=httpx.MockTransport(lambda r: httpx.Response(200)))  # as daemons build it
    assert http.shares_slots
    before = time.time()
    http.get(URL)
    booked = store.host_slots().reserve(HOST, 0.0, lambda: 0.0)  # the time the client booked, read back
    assert before <= booked <= time.time()


def test_time_spent_booking_is_not_added_to_the_wait() -> None:
    """A booking that takes a while (a busy database) shortens the sleep, so the request leaves at its slot."""
    t = VirtualTime()
    sleeps: list[float] = []

    class SlowSlots:
        def reserve(self, host: str, interval: float, clock: Callable[[], float]) -> float:
            slot = clock() + 1.0  # the booked slot: one second from the time read under the lock
            t.now += 0.25  # then the commit takes a quarter of a second
            return slot

        def defer(self, host: str, until: float) -> None:
            raise AssertionError("not deferred here")

    http = client(t, sleeps, SlowSlots(), [])
    http.get(URL)
    assert sleeps == [0.75]
