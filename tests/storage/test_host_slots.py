"""Per-host request slots in the database (`Store.host_slots()`), on SQLite and PostgreSQL.

The booking rule is max(now, previous booking + interval, deferral); concurrent bookers from
separate connections must queue up one interval apart, never share a slot.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest

from storage import Store


def at(now: float) -> Callable[[], float]:
    """A clock stopped at `now`."""
    return lambda: now


def fresh_host() -> str:
    """The PostgreSQL test database is shared between tests: every test books its own host."""
    return f"{uuid.uuid4().hex[:12]}.example.com"


def test_bookings_are_one_interval_apart(store: Store) -> None:
    slots, host = store.host_slots(), fresh_host()
    assert slots.reserve(host, 2.0, at(100.0)) == 100.0  # a host never asked: now
    assert slots.reserve(host, 2.0, at(100.0)) == 102.0
    assert slots.reserve(host, 2.0, at(100.5)) == 104.0
    assert slots.reserve(host, 2.0, at(500.0)) == 500.0  # idle long enough: now again
    assert slots.reserve(fresh_host(), 2.0, at(500.0)) == 500.0  # hosts are independent


def test_the_booking_process_interval_counts(store: Store) -> None:
    """A stricter process (longer interval) waits its own interval after a laxer one's request."""
    slots, host = store.host_slots(), fresh_host()
    assert slots.reserve(host, 0.1, at(10.0)) == 10.0
    assert slots.reserve(host, 5.0, at(10.0)) == 15.0
    assert slots.reserve(host, 0.1, at(10.0)) == pytest.approx(15.1)


def test_deferral_holds_every_booking_and_is_never_shortened(store: Store) -> None:
    slots, host = store.host_slots(), fresh_host()
    slots.defer(host, 50.0)  # before any booking (a Retry-After on the first request's host)
    assert slots.reserve(host, 1.0, at(10.0)) == 50.0
    slots.defer(host, 80.0)
    slots.defer(host, 60.0)  # a shorter Retry-After elsewhere does not cut the longer one
    assert slots.reserve(host, 1.0, at(51.0)) == 80.0
    assert slots.reserve(host, 1.0, at(51.0)) == 81.0
    assert slots.reserve(host, 1.0, at(200.0)) == 200.0  # deferral over


def test_concurrent_bookers_on_separate_connections_queue_up(store: Store) -> None:
    """Four stores (own engines, like four processes) book 10 slots each at the same instant."""
    host, interval, now = fresh_host(), 0.5, 1000.0
    stores = [Store.open(store.url) for _ in range(4)]
    booked: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(len(stores))

    def book(s: Store) -> None:
        slots = s.host_slots()
        start.wait()
        for _ in range(10):
            slot = slots.reserve(host, interval, at(now))
            with lock:
                booked.append(slot)

    threads = [threading.Thread(target=book, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in stores:
            s.close()
    assert sorted(booked) == pytest.approx([now + i * interval for i in range(40)])


def test_slots_survive_reopening(store: Store) -> None:
    """The next process (a new Store on the same database) continues the queue."""
    host = fresh_host()
    store.host_slots().reserve(host, 3.0, at(7.0))
    store.host_slots().defer(host, 9.0)
    with Store.open(store.url) as again:
        assert again.host_slots().reserve(host, 3.0, at(7.5)) == 10.0
