"""Per-client limits of the KBS: who a client is (its address) and how fast it may open sessions.

A client is its peer address; IPv6 peers are grouped by /64, since one host commonly owns a whole
/64 and could otherwise rotate addresses to get a fresh allowance each time. Behind a reverse
proxy every client is the proxy: run the limits there, or give the proxy its own broker.
With a store, the buckets live in it, so every worker and replica spends from the same bucket and
the limits mean the same with one process or ten.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from inclavare.errors import KbsError

if TYPE_CHECKING:
    from inclavare.services.kbs.store import KbsStore

MAX_TRACKED_CLIENTS = 65_536


class TooManyRequests(KbsError):
    """429 with ``Retry-After``: the client went over one of its own limits (others are unaffected)."""

    def __init__(self, message: str, retry_after: float, *, status: int = 429) -> None:
        super().__init__(message, kind="TooManyRequests", status=status)
        self.retry_after = max(1, math.ceil(retry_after))


def client_key(host: str | None) -> str:
    """The identity limits are counted against: the address, or its /64 for IPv6."""
    if not host:
        return ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class TokenBuckets:
    """One token bucket per client (``rate`` tokens/s, at most ``burst``).

    Without a store: in this process's memory, keeping the ``max_clients`` most recently seen
    clients; a client evicted from it starts again with a full bucket, which is what an idle client
    would have anyway. With a store: in its ``kbs_clients`` table, shared by every worker and
    replica (the wall clock then, so replicas agree); rows of clients whose bucket is full and who
    hold no session are forgotten when sessions are purged.
    """

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Callable[[], float] = time.monotonic, store: KbsStore | None = None) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._store = store
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def refill(self, tokens: float | None, last: float, now: float) -> tuple[float, float]:
        """(tokens left, seconds to wait) after spending one token from a bucket last seen at
        ``last`` (``tokens`` None: a new client, full bucket); wait 0.0 means allowed."""
        tokens = self.burst if tokens is None else min(self.burst, tokens + max(0.0, now - last) * self.rate)
        if tokens >= 1.0:
            return tokens - 1.0, 0.0
        return tokens, (1.0 - tokens) / self.rate

    def take(self, client: str) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until the next token."""
        now = self._clock()
        if self._store is not None:
            return self._take_shared(client, now)
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens, wait = self.refill(tokens, last, now)
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def _take_shared(self, client: str, now: float) -> float:
        store = self._store
        assert store is not None
        with store.ephemeral() as cur:
            cur.execute(store.sql("SELECT tokens, updated FROM kbs_clients WHERE client = ?" + store.for_update),
                        (client,))
            row = cur.fetchone()
            if row is None:
                tokens, wait = self.refill(None, now, now)
                cur.execute(store.sql(
                    "INSERT INTO kbs_clients (client, tokens, updated, sessions) VALUES (?, ?, ?, 0) "
                    "ON CONFLICT (client) DO UPDATE SET tokens = CASE WHEN kbs_clients.tokens < "
                    "excluded.tokens THEN kbs_clients.tokens ELSE excluded.tokens END"
                ), (client, tokens, now))
                return wait
            tokens, wait = self.refill(float(row[0]), float(row[1]), now)
            cur.execute(store.sql("UPDATE kbs_clients SET tokens = ?, updated = ? WHERE client = ?"),
                        (tokens, max(now, float(row[1])), client))
        return wait
