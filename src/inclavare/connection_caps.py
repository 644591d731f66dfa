"""Open connections counted in all and per client, for every TCP listener of the project.

A listener asks :meth:`ConnectionCaps.admit` before doing any work for a new connection; over a
cap the connection is refused at once. Refusals (and other events a listener notes, such as
requests that did not arrive in time) are summarised in at most one WARNING line per interval,
so a flood cannot flood the log too. One event loop or one thread per instance: no lock.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

REPORT_INTERVAL_S = 10.0


class ConnectionCaps:
    def __init__(self, max_total: int, per_client: int, *, log: logging.Logger, what: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_total = max_total
        self.max_per_client = per_client
        self.total = 0
        self.per_client: dict[str, int] = {}
        self.events: Counter[str] = Counter()
        self._log, self._what, self._clock = log, what, clock
        self._last_report = clock()

    def admit(self, client: str) -> bool:
        held = self.per_client.get(client, 0)
        if self.total >= self.max_total or held >= self.max_per_client:
            self.note(f"refused (over {self.max_total} in all or {self.max_per_client} per client)")
            return False
        self.total += 1
        self.per_client[client] = held + 1
        return True

    def release(self, client: str) -> None:
        self.total -= 1
        held = self.per_client[client] - 1
        if held:
            self.per_client[client] = held
        else:
            del self.per_client[client]

    def note(self, event: str) -> None:
        self.events[event] += 1
        self.report()

    def report(self) -> None:
        now = self._clock()
        if not self.events or now - self._last_report < REPORT_INTERVAL_S:
            return
        counts = ", ".join(f"{n} {event}" for event, n in self.events.items())
        self._log.warning("%s: %s in the last %.0f s; %d open", self._what, counts, now - self._last_report,
                          self.total)
        self.events.clear()
        self._last_report = now
