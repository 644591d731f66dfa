"""Per-client limits of the KBS: who a client is (its address) and how fast it may open sessions.

A client is its peer address; IPv6 peers are grouped by /64, since one host commonly owns a whole
/64 and could otherwise rotate addresses to get a fresh allowance each time. Behind a reverse
proxy every client is the proxy: run the limits there, or give the proxy its own broker.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from inclavare.errors import KbsError

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
    """One token bucket per client (``rate`` tokens/s, at most ``burst``), in bounded memory.

    The table keeps the ``max_clients`` most recently seen clients; a client evicted from it starts
    again with a full bucket, which is what an idle client would have anyway.
    """

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_TRACKED_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until the next token."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
