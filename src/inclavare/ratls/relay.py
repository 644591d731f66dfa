"""TLS relays that put attested TLS in front of (or behind) unmodified plain-TCP programs.

* :func:`serve` — like upstream's ``inclavared``: accept RA-TLS on ``listen``, forward the
  plaintext to ``forward`` (a local service that knows nothing about TLS). In mutual mode only
  clients whose RA-TLS certificate verifies under the policy get through.
* :func:`connect` — the other end: accept plain TCP on a local port and carry each connection
  over RA-TLS to ``remote``, after verifying the remote's evidence.

A connection is forwarded only after its handshake (and verification) completed; a refused
peer is logged with the reason and never reaches the other side. Half-closes propagate
(TLS close_notify ⇄ TCP FIN).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL

from inclavare.errors import ConfigError, InclavareError
from inclavare.ratls import aio

log = logging.getLogger("inclavare.ratls.relay")

_BUFFER = 64 * 1024


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
    return f"{verdict.evidence_type} {identity[:16]}… status {verdict.status}"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
    except (ConnectionError, OSError, InclavareError) as exc:
        log.debug("relay stream ended: %s", exc)
        writer.close()


async def _splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    try:
        await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()
        for writer in (a[1], b[1]):
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _refused(error: BaseException, peer: Any) -> None:
    log.warning("refused %s: %s", peer, error)


async def serve(listen: Endpoint, forward: Endpoint, context: SSL.Context, *,
                ready: Callable[[str], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run the RA-TLS → plain relay until ``stop`` is set."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        log.info("accepted %s: %s", peer, describe_verdict(writer.get_extra_info("ratls_verdict")))
        try:
            backend = await asyncio.open_connection(forward.host, forward.port)
        except OSError as exc:
            log.warning("cannot reach %s for %s: %s", forward, peer, exc.strerror or exc)
            writer.close()
            return
        await _splice((reader, writer), backend)

    server = await aio.start_server(handle, listen.host, listen.port, context=context,
                                    on_refused=_refused)
    await _run(server, ready, stop)


async def connect(listen: Endpoint, remote: Endpoint, context: SSL.Context, *,
                  ready: Callable[[str], None] | None = None,
                  stop: asyncio.Event | None = None) -> None:
    """Run the plain → RA-TLS relay until ``stop`` is set."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            remote_streams = await aio.open_connection(remote.host, remote.port, context=context)
        except InclavareError as exc:
            log.warning("refused %s for %s: %s", remote, peer, exc)
            writer.close()
            return
        verdict = remote_streams[1].get_extra_info("ratls_verdict")
        log.info("connected %s to %s: %s", peer, remote, describe_verdict(verdict))
        await _splice((reader, writer), remote_streams)

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
