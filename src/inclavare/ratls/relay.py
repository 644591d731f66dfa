"""TLS relays that put attested TLS in front of (or behind) unmodified plain-TCP programs.

* :func:`serve` — like upstream's ``inclavared``: accept RA-TLS on ``listen``, forward the
  plaintext to ``forward`` (a local service that knows nothing about TLS). In mutual mode only
  clients whose RA-TLS certificate verifies under the policy get through.
* :func:`connect` — the other end: accept plain TCP on a local port and carry each connection
  over RA-TLS to ``remote``, after verifying the remote's evidence.

A connection is forwarded only after its handshake (and verification) completed; a refused
peer is logged with the reason and never reaches the other side. Half-closes propagate
(TLS close_notify ⇄ TCP FIN).

Both relays are bounded (:class:`RelayLimits`): connections in all and per client address are
capped *before* any TLS work (over the cap: closed at once), a connection that carries no byte
either way for ``idle_timeout`` is closed, and reaching the other end has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL

from inclavare.connection_caps import ConnectionCaps
from inclavare.errors import ConfigError, InclavareError
from inclavare.ratls import aio
from inclavare.ratls.tls import HandshakeFailed

log = logging.getLogger("inclavare.ratls.relay")

_BUFFER = 64 * 1024
_SPARE_FDS = 64  # descriptors kept free for the listener, logs and the event loop


@dataclass(frozen=True, slots=True)
class RelayLimits:
    max_connections: int = 1024  # relayed connections in all (each holds two descriptors)
    per_client: int = 64  # from one client address
    idle_timeout: float = 600.0  # no byte either way for this long: both sides are closed (0: never)
    connect_timeout: float = 10.0  # to reach the forward / remote end (TCP and TLS handshake)

    def effective_max(self) -> int:
        """``max_connections``, lowered so two descriptors per connection fit in RLIMIT_NOFILE:
        over the cap a client is refused; out of descriptors, accept() would fail for everyone."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, (soft - _SPARE_FDS) // 2))


def _client_of(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


class RelayGate:
    """Admission (caps before any TLS work) and the refusal log of one relay listener: a failed or
    stalled handshake is counted and summarised every 10 s, a refused certificate logged with its
    reason (each one cost its sender a full handshake)."""

    def __init__(self, limits: RelayLimits) -> None:
        self.caps = ConnectionCaps(limits.effective_max(), limits.per_client, log=log,
                                   what="relay connection limits")

    def enter(self, peer: Any) -> Callable[[], None] | None:
        """A release callback, or None when a cap is reached."""
        client = _client_of(peer)
        if not self.caps.admit(client):
            return None
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.caps.release(client)

        return release

    def refused(self, error: BaseException, peer: Any) -> None:
        if isinstance(error, HandshakeFailed):
            log.debug("refused %s: %s", peer, error)
            self.caps.note("TLS handshakes failed or timed out")
        else:
            log.warning("refused %s: %s", peer, error)


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> Endpoint:
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{what} must be HOST:PORT, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def describe_verdict(verdict: Any) -> str:
    if verdict is None:
        return "not verified (one-way RA-TLS)"
    claims = verdict.claims
    identity = claims.get("mr_enclave") or claims.get("mr_td") or claims.get("measurement") or "?"
    label = " (SIMULATED TEE)" if getattr(verdict, "simulated", False) else ""
    return f"{verdict.evidence_type}{label} {identity[:16]}… status {verdict.status}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[float]) -> int:
    """Copy one way; returns the bytes copied."""
    copied = 0
    try:
        while data := await reader.read(_BUFFER):
            seen[0] = time.monotonic()
            copied += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
    except (ConnectionError, OSError, InclavareError) as exc:
        log.debug("relay stream ended: %s", exc)
        writer.close()
    return copied


async def _splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  b: tuple[asyncio.StreamReader, asyncio.StreamWriter], idle_timeout: float = 0) -> tuple[int, int]:
    """Copy both ways until both ends closed; with ``idle_timeout``, until no byte moved either
    way for that long (a download with a silent upload is not idle). Returns the bytes a → b and
    b → a (-1, -1 when cut off as idle)."""
    seen = [time.monotonic()]
    pipes = asyncio.gather(_pipe(a[0], b[1], seen), _pipe(b[0], a[1], seen))
    try:
        while not pipes.done():
            if idle_timeout <= 0:
                await asyncio.wait({pipes})
                continue
            wait = seen[0] + idle_timeout - time.monotonic()
            if wait <= 0:
                log.info("closed an idle relayed connection (no byte either way for %g s)", idle_timeout)
                pipes.cancel()
                break
            await asyncio.wait({pipes}, timeout=wait)
    finally:
        for writer in (a[1], b[1]):
            writer.close()
        with contextlib.suppress(asyncio.CancelledError):
            await pipes
        for writer in (a[1], b[1]):
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    if pipes.cancelled():
        return -1, -1
    up, down = pipes.result()
    return up, down


async def serve(listen: Endpoint, forward: Endpoint, context: SSL.Context, *,
                ready: Callable[[str], None] | None = None,
                stop: asyncio.Event | None = None, limits: RelayLimits | None = None) -> None:
    """Run the RA-TLS → plain relay until ``stop`` is set."""
    limits = limits or RelayLimits()
    gate = RelayGate(limits)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        log.info("accepted %s: %s", peer, describe_verdict(writer.get_extra_info("ratls_verdict")))
        try:
            backend = await asyncio.wait_for(asyncio.open_connection(forward.host, forward.port),
                                             limits.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else exc.strerror or exc
            log.warning("cannot reach %s for %s: %s", forward, peer, reason)
            writer.close()
            return
        await _splice((reader, writer), backend, limits.idle_timeout)

    server = await aio.start_server(handle, listen.host, listen.port, context=context,
                                    on_refused=gate.refused, admit=gate.enter)
    await _run(server, ready, stop)


async def connect(listen: Endpoint, remote: Endpoint, context: SSL.Context, *,
                  ready: Callable[[str], None] | None = None,
                  stop: asyncio.Event | None = None, limits: RelayLimits | None = None) -> None:
    """Run the plain → RA-TLS relay until ``stop`` is set."""
    limits = limits or RelayLimits()
    gate = RelayGate(limits)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        release = gate.enter(peer)
        if release is None:
            writer.close()
            return
        try:
            try:
                remote_streams = await asyncio.wait_for(
                    aio.open_connection(remote.host, remote.port, context=context,
                                        handshake_timeout=limits.connect_timeout),
                    limits.connect_timeout + 1)
            except (InclavareError, OSError, asyncio.TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else exc
                log.warning("refused %s for %s: %s", remote, peer, reason)
                writer.close()
                return
            verdict = remote_streams[1].get_extra_info("ratls_verdict")
            log.info("handshake with %s done for %s: %s", remote, peer, describe_verdict(verdict))
            _, down = await _splice((reader, writer), remote_streams, limits.idle_timeout)
            if down == 0:  # TLS 1.3: a server refuses a client certificate after our handshake ends
                log.warning("%s closed the connection from %s without sending a byte (if we presented "
                            "an RA-TLS certificate, the server may have refused it: see its log)", remote, peer)
        finally:
            release()

    server = await asyncio.start_server(handle, listen.host, listen.port)
    await _run(server, ready, stop)


async def _run(server: asyncio.Server, ready: Callable[[str], None] | None,
               stop: asyncio.Event | None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        addresses = ", ".join(str(Endpoint(*s.getsockname()[:2])) for s in server.sockets)
        if ready is not None:
            ready(addresses)
        await stop.wait()


def print_ready(what: str) -> Callable[[str], None]:
    def ready(addresses: str) -> None:
        print(f"{what} listening on {addresses}", flush=True)
        sys.stdout.flush()

    return ready
