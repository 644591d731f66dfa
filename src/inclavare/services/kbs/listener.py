"""Bounds on the KBS's listening socket, as a small subclass of uvicorn's httptools protocol.

uvicorn times out idle keep-alive connections, but not a request that arrives slowly: a client
that sends half its headers (or half its body) holds a connection and a file descriptor forever,
and a few hundred such clients exhaust the broker's descriptors (slowloris). Here:

- every request must arrive whole (headers and body) within ``request_timeout_seconds`` of its
  first byte (for a new connection: of the connection), else ``408`` and the connection closes;
- connections beyond ``max_connections``, or beyond ``max_connections_per_client`` from one client
  address, are answered ``503`` and closed at once, so they never pile up descriptors and one
  address cannot take the slots of the others.

Each request runs in one task per connection, so the connection cap also bounds concurrency.
Refusals and timeouts are summarised in at most one WARNING line every 10 s. With ``workers = N``
every worker process has its own listener, so these caps hold per worker.

What the broker writes in one event-loop step leaves in one ``send`` (``CoalescingTransport``):
uvicorn writes a response's head and body separately, and on loopback each write is a TCP segment
delivered (and its reader woken) inside the writer's system call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inclavare.connection_caps import ConnectionCaps
from inclavare.services.kbs.client_limits import client_key
from inclavare.services.kbs.config import Limits
from inclavare.services.kbs.protocol import error_body

log = logging.getLogger("inclavare.kbs")


def _canned(status: str, kind: str, detail: str, extra: str = "") -> bytes:
    body = json.dumps(error_body(kind, detail), separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n")
    return head.encode("ascii") + body


REFUSED = _canned("503 Service Unavailable", "TooManyConnections",
                  "too many connections; retry later", "retry-after: 1\r\n")
TIMED_OUT = _canned("408 Request Timeout", "RequestTimeout", "the request did not arrive in time")


def connection_guard(limits: Limits, clock: Any = time.monotonic) -> ConnectionCaps:
    """Connection counts shared by every connection of one listener."""
    return ConnectionCaps(limits.max_connections, limits.max_connections_per_client, log=log,
                          what="connection limits", clock=clock)


class CoalescingTransport:
    """A connection's transport whose writes are joined until the end of the event-loop step."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the request deadline and the connection caps."""

    guard: ClassVar[ConnectionCaps]
    limits: ClassVar[Limits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._held_as: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        key = client_key(self.client[0] if self.client else None)
        if not self.guard.admit(key):
            transport.write(REFUSED)
            transport.close()
            return
        self._held_as = key
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._held_as is not None:
            self.guard.release(self._held_as)
            self._held_as = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._held_as is None:
            return  # refused: its answer is on the way, nothing it sends is read
        if self._deadline is None:
            self._arm()  # the first byte of a request starts its clock
        super().data_received(data)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.limits.request_timeout_seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.guard.note(f"closed for not sending a whole request within "
                        f"{self.limits.request_timeout_seconds:g} s")
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(TIMED_OUT)
        self.transport.close()


def guarded_protocol(limits: Limits) -> type[GuardedHttpProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with its own connection counts."""
    return type("KbsHttpProtocol", (GuardedHttpProtocol,), {"guard": connection_guard(limits), "limits": limits})
