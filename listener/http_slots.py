"""Per-host request slots for `listener.http`: when the next request to a host may go out.

Part of the politeness layer (see listener/http.py): the client books each request's time here, so every
source that talks to a host shares its rate and any Retry-After. `MemorySlots` keeps the bookings in
this process; `storage.Store.host_slots()` implements the same `SlotReserver` in the database, so
processes sharing a database share each host's slots too.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class SlotReserver(Protocol):
    """Per-host request slots kept where several clients see them (`storage.Store.host_slots()` puts them
    in the database), so processes sharing a database share each host's rate and Retry-After.

    Times are seconds on the caller's clock; clients sharing state must share the clock (wall clock).
    """

    def reserve(self, host: str, interval: float, clock: Callable[[], float]) -> float:
        """Book the next request to `host` and return its time: the latest of now (`clock()`, read once the
        booking holds its lock), the previous booking + `interval` and any deferral. Atomic, so concurrent
        callers queue up instead of sharing a slot."""
        ...

    def defer(self, host: str, until: float) -> None:
        """No request to `host` before `until` (a Retry-After); never shortens a longer deferral."""
        ...


@dataclass
class HostLimiter:
    """This process's interval for a host: the strictest rate any source set for it."""

    interval: float


class MemorySlots:
    """The in-process `SlotReserver`: library use, tests on virtual clocks, and clients built without a store."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._deferred: dict[str, float] = {}
        self._lock = threading.Lock()

    def reserve(self, host: str, interval: float, clock: Callable[[], float]) -> float:
        with self._lock:
            now = clock()
            last = self._last.get(host, -math.inf)
            slot = self._last[host] = max(now, last + interval, self._deferred.get(host, -math.inf))
            return slot

    def defer(self, host: str, until: float) -> None:
        with self._lock:
            self._deferred[host] = max(self._deferred.get(host, -math.inf), until)
